"""The census against the real testbed (playbooks/census.yml, docs/census.md).

Each value the census reports is compared with what the nodes themselves say (`sinfo --version`,
/etc/debian_version, the packages Python imports), the hub's counts with a server this test
starts, and drift with a difference this test makes on one node (undone afterwards). The census
must change nothing: every run ends with changed=0, in check mode too.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest
import requests

from .hubclient import ansible_playbook, node_exec
from .topology import ALL_NODES, COMPUTE_NODES, CONTROLLER, LOGIN, REPO

SCHEMA = json.loads((REPO / "docs" / "census.schema.json").read_text())
REQUIREMENTS = {
    "hub-env": REPO / "roles" / "jupyterhub" / "files" / "requirements.txt",
    "notebook-env": REPO / "roles" / "jupyter_env" / "files" / "requirements.txt",
}
NOTEBOOK_PYTHON = "/opt/software/hpchub/jupyter/bin/python"
HUB_PYTHON = "/opt/jupyterhub/venv/bin/python"


def pin(env: str, package: str) -> str:
    match = re.search(rf"(?m)^{package}==(\S+)", REQUIREMENTS[env].read_text())
    assert match, f"{package} is not pinned in {REQUIREMENTS[env]}"
    return match.group(1)


def run_census(out_dir: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict, float]:
    start = time.monotonic()
    result = ansible_playbook(
        "census.yml",
        "-e",
        f"census_output_dir={out_dir}",
        "-e",
        "census_anonymised_export=true",
        *args,
        timeout=600,
    )
    seconds = time.monotonic() - start
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    doc = json.loads((out_dir / "census.json").read_text())
    return result, doc, seconds


def recap(output: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP lines -> {host: {ok: n, changed: n, ...}}."""
    hosts = {}
    for line in output.split("PLAY RECAP", 1)[1].splitlines():
        match = re.match(r"^(\S+)\s+:\s+(.*)$", line.strip())
        if match:
            hosts[match.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}
    return hosts


def host(doc: dict, name: str) -> dict:
    return next(h for h in doc["hosts"] if h["name"] == name)


def version(doc: dict, name: str, component: str) -> str:
    return host(doc, name)["components"][component]["version"]


@pytest.fixture(scope="module")
def census(testbed_nodes, tmp_path_factory):
    out = tmp_path_factory.mktemp("census")
    result, doc, seconds = run_census(out)
    print(f"census of the testbed: {seconds:.1f} s")
    return {"result": result, "doc": doc, "dir": out, "seconds": seconds}


# --------------------------------------------------------------------------- read-only


def test_census_changes_nothing_and_is_valid(census):
    totals = recap(census["result"].stdout)
    assert set(ALL_NODES) <= set(totals), totals
    for name, counts in totals.items():
        assert counts["changed"] == 0, f"{name}: {counts}"
        assert counts["failed"] == 0 and counts["unreachable"] == 0, f"{name}: {counts}"
    jsonschema.validate(census["doc"], SCHEMA)
    anonymised = json.loads((census["dir"] / "census-anonymised.json").read_text())
    jsonschema.validate(anonymised, SCHEMA)
    assert (census["dir"] / "census.md").read_text().startswith("# hpchub census: testbed")
    assert census["doc"]["summary"]["hosts"] == len(ALL_NODES)
    assert census["doc"]["summary"]["unreachable"] == 0


def test_a_second_run_and_check_mode_change_nothing(census, tmp_path):
    second, doc, _ = run_census(tmp_path / "again")
    checked, in_check_mode, _ = run_census(tmp_path / "check", "--check")
    for result in (second, checked):
        for name, counts in recap(result.stdout).items():
            assert counts["changed"] == 0, f"{name}: {counts}"
    # The same versions each time, and check mode still reads them all.
    for name in ALL_NODES:
        first = host(census["doc"], name)["components"]
        assert host(doc, name)["components"] == first
        assert host(in_check_mode, name)["components"] == first


# --------------------------------------------------------------------------- the versions


def test_versions_are_what_the_nodes_run(census):
    doc = census["doc"]
    for name in ALL_NODES:
        sinfo = node_exec(name, "sinfo --version").split()[-1]
        assert version(doc, name, "slurm") == sinfo, name
        debian = node_exec(name, "cat /etc/debian_version").strip()
        assert version(doc, name, "os") == f"debian {debian}", name
        munge = re.search(r"munge-(\S+)", node_exec(name, "munged --version")).group(1)
        assert version(doc, name, "munge") == munge, name
        python = node_exec(name, "/usr/bin/python3 --version").split()[-1]
        assert version(doc, name, "python") == python, name
    lmod = node_exec(COMPUTE_NODES[0], "/usr/share/lmod/lmod/libexec/lmod --version 2>&1")
    assert version(doc, COMPUTE_NODES[0], "lmod") == re.search(r"Version (\S+)", lmod).group(1)
    chp = node_exec(LOGIN, "dpkg-query -W -f '${Version}' node-configurable-http-proxy")
    assert chp.startswith(version(doc, LOGIN, "configurable-http-proxy"))


def test_hub_and_notebook_packages_are_the_installed_pins(census):
    doc = census["doc"]
    hub = host(doc, LOGIN)["components"]
    for package in ("jupyterhub", "batchspawner", "wrapspawner", "jupyterhub-idle-culler"):
        assert hub[f"hub-env/{package}"]["version"] == pin("hub-env", package), package
    announcement = re.search(
        r"(?m)^jupyterhub-announcement==(\S+)",
        (REPO / "roles/jupyterhub_announcement/files/requirements.txt").read_text(),
    ).group(1)
    assert hub["hub-env/jupyterhub-announcement"]["version"] == announcement
    imported = node_exec(
        LOGIN, f"{HUB_PYTHON} -c 'import jupyterhub, batchspawner; print(jupyterhub.__version__)'"
    ).strip()
    assert hub["hub-env/jupyterhub"]["version"] == imported
    node = host(doc, COMPUTE_NODES[0])["components"]
    for package in ("jupyterlab", "ipykernel", "jupyterlmod", "batchspawner", "jupyterhub"):
        assert node[f"notebook-env/{package}"]["version"] == pin("notebook-env", package), package
    versions = node_exec(
        COMPUTE_NODES[0],
        f"{NOTEBOOK_PYTHON} -c 'import jupyterlab, ipykernel, jupyter_server as s;"
        " print(jupyterlab.__version__, ipykernel.__version__, s.__version__)'",
    ).split()
    assert [
        node["notebook-env/jupyterlab"]["version"],
        node["notebook-env/ipykernel"]["version"],
        node["notebook-env/jupyter-server"]["version"],
    ] == versions
    # The deployed pins are met: no drift on the testbed as deployed.
    assert [d for d in doc["drift"] if d["kind"] != "group"] == []


def test_the_deployed_hpchub_release_is_recorded(census):
    release = json.loads(
        subprocess.run(
            [sys.executable, str(REPO / "tools" / "hpchub_release.py")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    deployed = json.loads(node_exec(LOGIN, "cat /etc/hpchub/release.json"))
    entry = host(census["doc"], LOGIN)["components"]["hpchub"]
    assert entry["version"] == deployed["version"] == release["version"]
    assert entry["commit"].removesuffix("-dirty") == deployed["commit"]
    # Deployed from this checkout (make testbed / Molecule converge ran on it).
    assert deployed["commit"] == release["commit"]
    assert (
        host(census["doc"], COMPUTE_NODES[0])["components"]["notebook-env/hpchub"]["version"]
        == (release["version"])
    )
    assert "hpchub" not in host(census["doc"], CONTROLLER)["components"]


# --------------------------------------------------------------------------- the running hub


def test_running_server_is_counted_with_its_profile_and_version(
    no_server, alice_server, admin, tmp_path
):
    # no_server first: alice's server is stopped afterwards, so the tests after this file
    # (test_cluster's idle nodes) find the cluster as they expect.
    _, doc, _ = run_census(tmp_path)
    (hub,) = doc["hubs"]
    assert hub["host"] == LOGIN and hub["reachable"] is True
    assert hub["version"] == pin("hub-env", "jupyterhub")
    users = admin.api("GET", "/users", params={"limit": 1000}).json()
    users = users["items"] if isinstance(users, dict) else users
    assert hub["users"] == len(users)
    running = sum(1 for u in users for s in (u.get("servers") or {}).values() if s.get("ready"))
    assert hub["servers"]["running"] == running >= 1
    assert any(p["name"] == "small" and p["servers"] >= 1 for p in hub["profiles"]), hub
    server_version = version(doc, COMPUTE_NODES[0], "notebook-env/jupyter-server")
    assert hub["server_versions"].get(server_version, 0) >= 1, hub
    assert hub.get("server_version_errors", 0) == 0
    report = (tmp_path / "census.md").read_text()
    assert f"{running} running and" in report
    export = json.loads((tmp_path / "census-anonymised.json").read_text())
    assert export["hubs"][0]["servers"]["running"] == running
    assert "alice" not in json.dumps(export) and "alice" not in json.dumps(doc)


def test_the_census_token_can_only_read(alice, access):
    token = node_exec(LOGIN, "cat /etc/jupyterhub/secrets/census_token").strip()
    assert len(token) == 64
    headers = {"Authorization": f"token {token}"}
    base = access["hub_url"].rstrip("/") + "/hub/api"

    def call(method, path, **kwargs):
        return requests.request(
            method, base + path, headers=headers, verify=access["ca_cert"], timeout=30, **kwargs
        )

    me = call("GET", "/user").json()
    assert me["kind"] == "service" and me["name"] == "census"
    # The role's two scopes, as the hub expands them (read:servers implies read:users:name).
    assert sorted(me["scopes"]) == ["list:users", "read:servers", "read:users:name"]
    assert call("GET", "/users").status_code == 200
    assert call("POST", "/users/alice/server", json={"profile": "small"}).status_code == 403
    assert call("DELETE", "/users/alice/server").status_code in (403, 404)
    assert call("POST", "/users/alice/tokens", json={}).status_code == 403
    assert call("GET", "/users/alice/tokens").status_code in (403, 404)
    assert call("POST", "/users", json={"usernames": ["mallory"]}).status_code == 403
    # The token is 0600 and belongs to the hub's account: no cluster user can read it.
    assert node_exec(LOGIN, "stat -c '%a %U' /etc/jupyterhub/secrets/census_token").split() == [
        "600",
        "jupyterhub",
    ]


# --------------------------------------------------------------------------- drift


@pytest.fixture
def node_with_another_debian_release():
    """The last compute node claims another Debian point release (restored afterwards)."""
    node = COMPUTE_NODES[-1]
    original = node_exec(node, "cat /etc/debian_version").strip()
    fake = original.split(".")[0] + ".99"
    node_exec(node, "cp -p /etc/debian_version /etc/debian_version.census-test")
    try:
        node_exec(node, f"echo {fake} > /etc/debian_version")
        yield node, original, fake
    finally:
        node_exec(node, "mv /etc/debian_version.census-test /etc/debian_version")
    assert node_exec(node, "cat /etc/debian_version").strip() == original


def test_a_node_that_differs_from_its_group_is_drift(node_with_another_debian_release, tmp_path):
    node, original, fake = node_with_another_debian_release
    _, doc, _ = run_census(tmp_path)
    (drift,) = [d for d in doc["drift"] if d["kind"] == "group" and d["component"] == "os"]
    assert drift["scope"] == "compute"
    by_version = {v["version"]: v["hosts"] for v in drift["versions"]}
    assert by_version[f"debian {fake}"] == [node]
    assert node not in by_version[f"debian {original}"]
    report = (tmp_path / "census.md").read_text()
    assert f"debian {fake} on {node}" in report
    export = json.loads((tmp_path / "census-anonymised.json").read_text())
    (anonymous,) = [d for d in export["drift"] if d["kind"] == "group" and d["component"] == "os"]
    assert {v["version"]: v["count"] for v in anonymous["versions"]}[f"debian {fake}"] == 1
    text = json.dumps(export)
    for name in ALL_NODES:
        assert name not in text
    assert "testbed" not in text


def test_without_the_fake_no_group_drift(census):
    assert [d for d in census["doc"]["drift"] if d["kind"] == "group"] == []


def test_a_version_below_the_inventorys_pin_is_drift(tmp_path):
    pinned = pin("hub-env", "pamela")
    higher = str(int(pinned.split(".")[0]) + 1) + ".0"
    _, doc, _ = run_census(
        tmp_path,
        "-e",
        json.dumps({"jupyterhub_pip_extra_packages": [f"pamela=={higher}"]}),
        "-e",
        json.dumps({"census_minimum_versions": {"slurm": "99.1"}}),
    )
    kinds = {(d["kind"], d["component"]): d for d in doc["drift"]}
    below = kinds[("below_pin", "hub-env/pamela")]
    assert below["expected"] == f"=={higher}"
    assert below["source"] == "inventory: jupyterhub_pip_extra_packages"
    assert below["versions"] == [{"version": pinned, "count": 1, "hosts": [LOGIN]}]
    slurm = kinds[("below_minimum", "slurm")]
    assert slurm["versions"][0]["count"] == len(ALL_NODES)
