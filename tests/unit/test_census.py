"""The census logic with fake inputs: components, pins, drift, the anonymised export, the schema,
the Markdown, and the two read-only modules' parsing (roles/census/library). No testbed needed."""

from __future__ import annotations

import copy
import datetime as dt
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

REPO = Path(__file__).resolve().parents[2]
NOW = dt.datetime(2026, 11, 28, 4, 5, 6, tzinfo=dt.UTC)


def load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


census = load("census_tool", REPO / "tools" / "census.py")
host_module = load("census_host_module", REPO / "roles/census/library/hpchub_census_host.py")
hub_module = load("census_hub_module", REPO / "roles/census/library/hpchub_census_hub.py")
SCHEMA = json.loads((REPO / "docs" / "census.schema.json").read_text())

HUB_PACKAGES = {
    "jupyterhub": "6.1.1",
    "batchspawner": "1.3.0",
    "wrapspawner": "1.0.1",
    "jupyterhub-idle-culler": "2.0.0",
    "jupyterhub-announcement": "0.9.3",
    "pamela": "1.2.0",
    "pyyaml": "6.0.3",
    "psycopg2-binary": "2.9.13",
    "hpchub-config": "0.1.0",
    "tornado": "6.5",
}
ENV_PACKAGES = {
    "jupyterhub": "6.1.1",
    "batchspawner": "1.3.0",
    "jupyterlab": "4.6.6",
    "jupyter-server": "2.17.0",
    "ipykernel": "7.4.0",
    "jupyterlmod": "5.3.2",
    "jsonschema": "4.24.1",
}
RELEASE = {"version": "0.1.0", "commit": "a" * 40, "dirty": False}


def facts(
    *, debian="12.8", slurm="22.05.8", hub=False, env=True, env_packages=None, hub_packages=None
):
    result = {
        "errors": [],
        "os": {
            "id": "debian",
            "version_id": "12",
            "pretty_name": "Debian GNU/Linux 12 (bookworm)",
            "debian_version": debian,
            "kernel": "6.1.0",
        },
        "python": {"version": "3.11.2", "source": "/usr/bin/python3 --version"},
        "deb_packages": {
            "slurm-client": "22.05.8-4+deb12u3",
            "munge": "0.5.15-2",
            "lmod": "8.6.19-1",
        },
        "commands": {
            "slurm": {"version": slurm, "source": "/usr/bin/sinfo --version"},
            "munge": {"version": "0.5.15", "source": "munged --version"},
        },
        "venvs": {},
        "releases": {},
    }
    if hub:
        result["deb_packages"]["node-configurable-http-proxy"] = "4.5.4+~cs8.6.22-1"
        result["venvs"]["hub_venv"] = {
            "path": "/opt/jupyterhub/venv",
            "python": "3.11.2",
            "packages": hub_packages or dict(HUB_PACKAGES),
        }
        result["releases"]["hub"] = dict(RELEASE)
    if env:
        result["venvs"]["notebook_env"] = {
            "path": "/sw/jupyter",
            "python": "3.11.2",
            "packages": env_packages or dict(ENV_PACKAGES),
        }
        result["releases"]["notebook_env"] = dict(RELEASE)
    return result


def raw(**overrides) -> dict:
    hub_raw = {
        "reachable": True,
        "version": "6.1.1",
        "users": 19,
        "servers": {"running": 2, "pending": 1, "stopping": 0},
        "profiles": {"gpu-cscs": 1, "small": 2},
        "server_versions": {"2.17.0": 2},
        "server_version_errors": 0,
    }
    data = {
        "site": "acme-hpc",
        "role_groups": {
            "slurm_controller": "slurm_controller",
            "login": "login",
            "compute": "compute",
        },
        "minimum_versions": {},
        "hosts": {
            "mgmt1.acme.org": {"groups": ["slurm_controller"], "facts": facts(env=False)},
            "login1.acme.org": {
                "groups": ["login"],
                "facts": facts(hub=True, env=False),
                "hub": hub_raw,
            },
            "node1.acme.org": {"groups": ["compute"], "facts": facts()},
            "10.1.2.3": {"groups": ["compute"], "facts": facts()},
        },
    }
    data.update(overrides)
    return data


def build(data=None) -> dict:
    return census.build(data or raw(), REPO, now=NOW)


# --------------------------------------------------------------------------- components


def test_the_hubs_postgresql_is_reported_with_its_server_version():
    login = facts(hub=True, env=False)
    login["deb_packages"]["postgresql-15"] = "15.14-0+deb12u1"
    components = census.components_of(login, set())
    assert components["postgresql"] == {"version": "15.14", "source": "dpkg postgresql-15"}
    data = raw()
    data["hosts"]["login1.acme.org"]["facts"] = login
    census.validate(build(data))  # a component id of the schema


def test_components_of_a_login_host():
    components = census.components_of(facts(hub=True, env=False), set())
    assert components["os"] == {"version": "debian 12.8", "source": "/etc/debian_version"}
    assert components["slurm"]["version"] == "22.05.8"
    assert components["munge"]["version"] == "0.5.15"
    assert components["lmod"] == {"version": "8.6.19", "source": "dpkg lmod"}  # no command: dpkg
    assert components["configurable-http-proxy"]["version"] == "4.5.4+~cs8.6.22"
    assert "postgresql" not in components  # the testbed's default: sqlite
    assert components["hub-env/jupyterhub"]["version"] == "6.1.1"
    assert components["hub-env/wrapspawner"]["version"] == "1.0.1"
    assert components["hub-env/jupyterhub-idle-culler"]["version"] == "2.0.0"
    assert components["hub-env/jupyterhub-announcement"]["version"] == "0.9.3"
    assert components["hpchub"] == {
        "version": "0.1.0",
        "source": "/etc/hpchub/release.json",
        "commit": "a" * 40,
    }
    assert "hub-env/tornado" not in components  # neither reported by default nor pinned
    assert not any(c.startswith("notebook-env/") for c in components)


def test_components_of_a_compute_host_and_pinned_extras():
    env = dict(ENV_PACKAGES, numpy="2.2.6")
    components = census.components_of(facts(env_packages=env), {"notebook-env/numpy"})
    for name in ("jupyterlab", "ipykernel", "jupyterlmod", "batchspawner", "jupyter-server"):
        assert components[f"notebook-env/{name}"]["version"] == ENV_PACKAGES[name]
    assert components["notebook-env/numpy"]["version"] == "2.2.6"
    assert components["notebook-env/python"]["version"] == "3.11.2"
    assert components["notebook-env/hpchub"]["version"] == "0.1.0"
    assert "hpchub" not in components  # no hub release record on a compute node


def test_dirty_release_is_marked():
    f = facts(hub=True)
    f["releases"]["hub"]["dirty"] = True
    assert census.components_of(f, set())["hpchub"]["commit"].endswith("-dirty")


def test_repo_pins_are_the_requirements_files():
    pins = {p["component"]: p for p in census.repo_pins(REPO)}
    assert pins["hub-env/jupyterhub"]["version"] == "6.1.1"
    assert pins["hub-env/jupyterhub-announcement"]["source"] == (
        "roles/jupyterhub_announcement/files/requirements.txt"
    )
    assert pins["notebook-env/jupyterlab"]["operator"] == "=="
    requirements = (REPO / "roles/jupyter_env/files/requirements.txt").read_text()
    assert f"ipykernel=={pins['notebook-env/ipykernel']['version']}" in requirements


def test_pin_lines_skip_comments_and_markers():
    pins = census.parse_pins(
        ["# comment", "", "Foo_Bar==1.2 ; python_version>'3'", "baz>=2", "plain"], "hub-env", "x"
    )
    assert [(p["component"], p["operator"], p["version"]) for p in pins] == [
        ("hub-env/foo-bar", "==", "1.2"),
        ("hub-env/baz", ">=", "2"),
    ]


# --------------------------------------------------------------------------- drift


def test_a_uniform_site_has_no_drift():
    doc = build()
    assert doc["drift"] == []
    assert doc["summary"] == {
        "hosts": 4,
        "unreachable": 0,
        "drift": 0,
        "roles": {"compute": 2, "login": 1, "slurm_controller": 1},
    }


def test_hosts_of_one_group_with_different_versions_are_drift():
    data = raw()
    data["hosts"]["node1.acme.org"]["facts"] = facts(debian="12.9", slurm="22.05.9")
    doc = build(data)
    group = {d["component"]: d for d in doc["drift"] if d["kind"] == "group"}
    assert set(group) == {"os", "slurm"}
    assert group["slurm"]["scope"] == "compute"
    assert group["slurm"]["versions"] == [
        {"version": "22.05.8", "count": 1, "hosts": ["10.1.2.3"]},
        {"version": "22.05.9", "count": 1, "hosts": ["node1.acme.org"]},
    ]
    # The controller runs 22.05.8 too, but it is alone in its group: no drift there.
    assert all(d["scope"] == "compute" for d in group.values())


def test_versions_below_the_pins_are_drift():
    data = raw()
    old_hub = dict(HUB_PACKAGES, jupyterhub="5.3.0")
    data["hosts"]["login1.acme.org"]["facts"] = facts(hub=True, env=False, hub_packages=old_hub)
    env = dict(ENV_PACKAGES)
    del env["jupyterlmod"]
    env["jupyterlab"] = "4.7.0"
    for name in ("node1.acme.org", "10.1.2.3"):
        data["hosts"][name]["facts"] = facts(env_packages=env)
    doc = build(data)
    by_kind = {(d["kind"], d["component"]): d for d in doc["drift"]}
    below = by_kind[("below_pin", "hub-env/jupyterhub")]
    assert below["expected"] == "==6.1.1"
    assert below["source"] == "roles/jupyterhub/files/requirements.txt"
    assert below["versions"] == [{"version": "5.3.0", "count": 1, "hosts": ["login1.acme.org"]}]
    assert by_kind[("missing", "notebook-env/jupyterlmod")]["versions"][0]["count"] == 2
    assert by_kind[("differs_from_pin", "notebook-env/jupyterlab")]["versions"][0]["version"] == (
        "4.7.0"
    )
    # A host without the environment is not missing its packages.
    assert "mgmt1.acme.org" not in json.dumps(by_kind[("missing", "notebook-env/jupyterlmod")])


def test_inventory_pins_and_site_minimums_are_checked():
    data = raw(minimum_versions={"slurm": "23.02", "os": "debian 12.5"})
    for host in data["hosts"].values():
        host["extra_packages"] = {"hub-env": ["pamela==9.0"], "notebook-env": []}
    doc = build(data)
    kinds = {(d["kind"], d["component"]): d for d in doc["drift"]}
    assert kinds[("below_pin", "hub-env/pamela")]["source"] == (
        "inventory: jupyterhub_pip_extra_packages"
    )
    slurm = kinds[("below_minimum", "slurm")]
    assert slurm["expected"] == ">=23.02" and slurm["versions"][0]["count"] == 4
    assert ("below_minimum", "os") not in kinds  # 12.8 >= 12.5
    assert any(p["source"] == "inventory: census_minimum_versions" for p in doc["pins"])


def test_version_comparison():
    assert census.older("22.05.8", "23.02")
    assert not census.older("6.1.1", "6.1.1")
    assert census.older("4.6.6rc1", "4.6.6")
    assert census.older("debian 12.4", "debian 12.10")  # numbers, not text
    assert not census.older("4.5.4+~cs8.6.22", "4.5")


def test_unreachable_hosts_are_counted_not_compared():
    data = raw()
    data["hosts"]["node1.acme.org"] = {"groups": ["compute"], "facts": None, "error": "timed out"}
    doc = build(data)
    host = next(h for h in doc["hosts"] if h["name"] == "node1.acme.org")
    assert host["reachable"] is False and host["errors"] == ["timed out"]
    assert doc["summary"]["unreachable"] == 1
    assert doc["drift"] == []


def test_hub_counts():
    (hub,) = build()["hubs"]
    assert hub["host"] == "login1.acme.org"
    assert hub["users"] == 19
    assert hub["servers"] == {"running": 2, "pending": 1, "stopping": 0}
    assert hub["profiles"] == [{"name": "small", "servers": 2}, {"name": "gpu-cscs", "servers": 1}]
    assert hub["server_versions"] == {"2.17.0": 2}


# --------------------------------------------------------------------------- schema


def test_the_document_follows_the_schema():
    doc = build()
    jsonschema.validate(doc, SCHEMA)
    assert doc["schema_version"] == 1 and doc["generated_at"] == "2026-11-28T04:05:06Z"


def test_the_schema_rejects_what_it_does_not_know():
    doc = build()
    broken = copy.deepcopy(doc)
    broken["hosts"][0]["components"]["kernelz"] = {"version": "1", "source": "x"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCHEMA)
    broken = copy.deepcopy(doc)
    broken["schema_version"] = 2
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCHEMA)
    leaking = census.anonymise(doc)
    leaking["hosts"] = doc["hosts"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(leaking, SCHEMA)


# --------------------------------------------------------------------------- anonymised export


def drifting_site() -> dict:
    data = raw(minimum_versions={"slurm": "23.02"})
    data["hosts"]["node1.acme.org"]["facts"] = facts(debian="12.9")
    data["hosts"]["login1.acme.org"]["facts"]["errors"] = ["/sw/jupyter: permission denied"]
    for host in data["hosts"].values():
        host["extra_packages"] = {"hub-env": [], "notebook-env": ["acme-secret-tool==1.0"]}
    return data


def test_the_anonymised_export_has_counts_and_versions_only():
    doc = build(drifting_site())
    export = census.anonymise(doc)
    jsonschema.validate(export, SCHEMA)
    text = json.dumps(export)
    # The site's own package is in its full report, but its name stays home.
    assert "notebook-env/acme-secret-tool" in json.dumps(doc)
    for secret in (
        "acme",
        "mgmt1",
        "login1",
        "node1",
        "10.1.2.3",
        "gpu-cscs",
        "/sw/jupyter",
        "/opt/jupyterhub",
        "permission denied",
        "bookworm",
    ):
        assert secret not in text, f"{secret!r} leaks into the anonymised export"
    assert export["anonymised"] is True and export["site"] is None
    assert export["hosts"] == [] and export["by_group"] == {}
    assert export["generated_at"] == "2026-11-28T00:00:00Z"
    # ... but what a community census needs is there.
    assert export["summary"]["roles"] == {"compute": 2, "login": 1, "slurm_controller": 1}
    assert export["by_role"]["login"]["components"]["hub-env/jupyterhub"] == {"6.1.1": 1}
    assert export["by_role"]["compute"]["components"]["os"] == {"debian 12.8": 1, "debian 12.9": 1}
    (hub,) = export["hubs"]
    assert hub["host"] == "hub-1" and hub["users"] == 19
    assert hub["servers"]["running"] == 2
    assert [p["name"] for p in hub["profiles"]] == ["profile-1", "profile-2"]
    assert [p["servers"] for p in hub["profiles"]] == [2, 1]
    group = next(d for d in export["drift"] if d["kind"] == "group")
    assert group["scope"] == "compute" and "hosts" not in group["versions"][0]
    assert {d["kind"] for d in export["drift"]} == {"group", "below_minimum"}


def test_a_custom_group_name_is_replaced_by_the_hosts_role():
    data = raw()
    data["hosts"]["node1.acme.org"]["groups"] = ["compute", "acme_gpu_nodes"]
    data["hosts"]["10.1.2.3"]["groups"] = ["compute", "acme_gpu_nodes"]
    data["hosts"]["10.1.2.3"]["facts"] = facts(slurm="22.05.9")
    export = census.anonymise(build(data))
    assert "acme" not in json.dumps(export)
    assert {d["scope"] for d in export["drift"]} == {"compute"}


# --------------------------------------------------------------------------- Markdown and CLI


def test_markdown_report_names_the_drift_and_the_hub():
    data = drifting_site()
    text = census.markdown(build(data))
    assert text.startswith("# hpchub census: acme-hpc")
    assert (
        "| group | compute | os | one version | debian 12.8 on 10.1.2.3; debian 12.9 on node1"
        in text
    )
    assert "below_minimum" in text
    assert "JupyterHub 6.1.1 (running), users: 19, servers: 2 running and 1 pending" in text
    assert "profiles in use: small (2), gpu-cscs (1)" in text
    assert "| hub-env/jupyterhub | 6.1.1 |" in text
    assert "- login1.acme.org: /sw/jupyter: permission denied" in text


def test_markdown_of_the_export_names_no_host():
    text = census.markdown(census.anonymise(build(drifting_site())))
    assert "# hpchub census: anonymised" in text
    assert "acme" not in text and "node1" not in text and "## Hosts" not in text


def test_cli_writes_valid_files(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / "census.py"), "build", "--out-dir", str(tmp_path)]
        + ["--anonymised"],
        input=json.dumps(drifting_site()),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "DRIFT group compute os" in result.stdout
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["census-anonymised.json", "census.json", "census.md"]
    for name in ("census.json", "census-anonymised.json"):
        jsonschema.validate(json.loads((tmp_path / name).read_text()), SCHEMA)
    check = subprocess.run(
        [
            sys.executable,
            str(REPO / "tools" / "census.py"),
            "validate",
            str(tmp_path / "census.json"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0 and "valid" in check.stdout


def test_without_the_flag_no_export_is_written(tmp_path):
    doc = build()
    census.write(doc, tmp_path, anonymised=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["census.json", "census.md"]


# --------------------------------------------------------------------------- the host module


def test_os_release_and_versions_are_parsed():
    values = host_module.parse_os_release(
        'ID=debian\nVERSION_ID="12"\n# x\nPRETTY_NAME="Debian 12"\n'
    )
    assert values == {"ID": "debian", "VERSION_ID": "12", "PRETTY_NAME": "Debian 12"}
    assert host_module.first_version("slurm 22.05.8\n") == "22.05.8"
    assert host_module.first_version("munge-0.5.15 (2023-01-01)") == "0.5.15"
    lmod = "\nModules based on Lua: Version 8.6.19  2022-12-12 17:25 -06:00\n    by Robert McLay"
    assert host_module.parse_lmod_version(lmod) == "8.6.19"
    dpkg = "munge\t0.5.15-2\tii \nslurmd\t22.05.8-4\trc \nlibc6:amd64\t2.36-9\tii \n"
    assert host_module.parse_dpkg(dpkg) == {"munge": "0.5.15-2", "libc6": "2.36-9"}
    assert host_module.upstream_version("1:22.05.8-4+deb12u3") == "22.05.8"


def test_a_venv_is_read_from_its_dist_info(tmp_path):
    (tmp_path / "pyvenv.cfg").write_text("home = /usr/bin\nversion = 3.11.2\n")
    site = tmp_path / "lib" / "python3.11" / "site-packages"
    for name, version in (("jupyterhub_idle_culler", "2.0.0"), ("JupyterLab", "4.6.6")):
        info = site / f"{name}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\nVersion: 9.9 (body)\n"
        )
    venv = host_module.read_venv(str(tmp_path))
    assert venv["python"] == "3.11.2"
    assert venv["packages"] == {"jupyterhub-idle-culler": "2.0.0", "jupyterlab": "4.6.6"}
    assert host_module.read_venv(str(tmp_path / "missing")) is None


def test_the_host_module_collects_without_writing(tmp_path):
    before = sorted(p.name for p in tmp_path.iterdir())
    result = host_module.collect(
        {
            "hub_venv": str(tmp_path / "no-hub"),
            "notebook_env": str(tmp_path / "no-env"),
            "release_file": str(tmp_path / "release.json"),
        }
    )
    assert result["venvs"] == {} and result["releases"] == {}
    assert result["os"]["kernel"]
    assert sorted(p.name for p in tmp_path.iterdir()) == before


# --------------------------------------------------------------------------- the hub module


class FakeHub:
    """Answers like JupyterHub 6 (paginated users) and two single-user servers."""

    def __init__(self, users, page_size=2):
        self.users = users
        self.page_size = page_size
        self.requests = []

    def __call__(self, request):
        url = request.full_url
        self.requests.append((url, request.headers.get("Authorization")))
        path, _, query = url.partition("?")
        path = path.removeprefix("https://127.0.0.1:443")
        if path == "/hub/api/":
            return {"version": "6.1.1"}
        if path == "/hub/api/users":
            params = dict(p.split("=") for p in query.split("&"))
            offset = int(params["offset"])
            users = self.users
            if params.get("state") == "active":
                users = [
                    u for u in users if any(not s.get("stopped") for s in u["servers"].values())
                ]
            items = users[offset : offset + self.page_size]
            following = offset + self.page_size
            return {
                "items": items,
                "_pagination": {
                    "offset": offset,
                    "limit": self.page_size,
                    "total": len(users),
                    "next": {"offset": following} if following < len(users) else None,
                },
            }
        if path.endswith("/api"):
            if "carol" in path:
                raise hub_module.urllib.error.URLError("connection refused")
            return {"version": "2.17.0"}
        raise AssertionError(f"unexpected request {url}")


def user(name, server=None):
    return {"name": name, "servers": {"": server} if server else {}}


def test_the_hub_module_counts_without_names():
    users = [
        user(
            "alice",
            {
                "ready": True,
                "pending": None,
                "url": "/user/alice/",
                "user_options": {"profile": "small"},
            },
        ),
        user(
            "bob",
            {
                "ready": False,
                "pending": "spawn",
                "url": "/user/bob/",
                "user_options": {"profile": "medium"},
            },
        ),
        user("carol", {"ready": True, "pending": None, "url": "/user/carol/", "user_options": {}}),
        user("dave", {"ready": False, "pending": "stop", "url": "/user/dave/"}),
        user("erin"),
    ]
    fake = FakeHub(users)
    hub = hub_module.Hub("https://127.0.0.1:443", "census-token", None, 5, opener=fake)
    result = hub_module.census(hub)
    assert result == {
        "reachable": True,
        "version": "6.1.1",
        "users": 5,
        "servers": {"running": 2, "pending": 1, "stopping": 1},
        "profiles": {"small": 1, "medium": 1, "(default)": 1},
        "server_versions": {"2.17.0": 1},
        "server_version_errors": 1,
    }
    assert "alice" not in json.dumps(result)
    # The token goes to the hub API only, never to a user's server.
    for url, authorization in fake.requests:
        if url.endswith("/api") and "/user/" in url or url.endswith("/hub/api/"):
            assert authorization is None, url
        else:
            assert authorization == "token census-token", url


def test_an_unreachable_hub_is_reported_not_fatal():
    def refuse(request):
        raise hub_module.urllib.error.URLError("Connection refused")

    hub = hub_module.Hub("https://127.0.0.1:443", "t", None, 5, opener=refuse)
    assert hub_module.census(hub) == {
        "reachable": False,
        "error": "cannot reach the hub: Connection refused",
    }


def test_the_hub_module_refuses_other_schemes():
    with pytest.raises(ValueError):
        hub_module.Hub("file:///etc/passwd", "t", None, 5)


# --------------------------------------------------------------------------- an example-style site


def test_census_of_the_example_inventory_reports_unreachable_hosts(tmp_path):
    """inventories/example with every host pointed at a closed local port: the playbook runs
    with that inventory's variables, reports both hosts unreachable and still writes a valid
    census (no host of example.org is contacted)."""
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i",
            str(REPO / "inventories" / "example" / "hosts.yml"),
            str(REPO / "playbooks" / "census.yml"),
            "-e",
            f"census_output_dir={tmp_path}",
            "-e",
            "census_anonymised_export=true",
            "-e",
            "ansible_host=127.0.0.1",
            "-e",
            "ansible_port=9",
        ],
        cwd=REPO,
        env={
            "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
            "HOME": str(tmp_path),
            "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
            "ANSIBLE_NOCOLOR": "1",
        },
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "changed=1" not in result.stdout
    doc = json.loads((tmp_path / "census.json").read_text())
    jsonschema.validate(doc, SCHEMA)
    assert doc["site"] == {"name": "example"}
    assert {h["name"]: h["roles"] for h in doc["hosts"]} == {
        "login1.example.org": ["login"],
        "sw1.example.org": ["compute"],
    }
    assert doc["summary"]["unreachable"] == 2
    assert all("Connection refused" in h["errors"][0] for h in doc["hosts"])
    export = json.loads((tmp_path / "census-anonymised.json").read_text())
    jsonschema.validate(export, SCHEMA)
    assert "example" not in json.dumps(export)
    assert "2 unreachable" in (tmp_path / "census.md").read_text()


def test_a_server_at_its_own_origin_is_asked_through_the_local_proxy_by_host_name():
    """Per-user origins: the server model's URL is absolute; the request still goes to the
    local proxy, with the user's host name (the proxy routes by host)."""
    seen = []

    def opener(request):
        seen.append((request.full_url, request.get_header("Host")))
        return {"version": "2.21.1"}

    hub = hub_module.Hub("https://127.0.0.1:443", "t", None, 5, opener=opener)
    hub.get("https://alice.hub.example.org:8443/user/alice/api", token=False)
    assert seen == [("https://127.0.0.1:443/user/alice/api", "alice.hub.example.org:8443")]
