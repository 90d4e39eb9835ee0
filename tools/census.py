#!/usr/bin/env python3
"""The census: what runs where, as one JSON document and one Markdown report (docs/census.md).

playbooks/census.yml collects raw facts on every host (roles/census: modules
hpchub_census_host and hpchub_census_hub, read-only) and pipes them to

    tools/census.py build --out-dir DIR [--anonymised]   raw JSON on stdin -> DIR/census.json,
                                                          DIR/census.md (+ census-anonymised.json)
    tools/census.py validate FILE...                      check documents against the schema

This file holds the logic: components from raw facts, pins from the roles' requirements files
and the inventory, drift, the anonymised export, the Markdown. The schema is
docs/census.schema.json (schema_version 1).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCHEMA_FILE = REPO / "docs" / "census.schema.json"
SCHEMA_VERSION = 1
sys.path.insert(0, str(Path(__file__).resolve().parent))
import hpchub_release  # noqa: E402

# The pins, as the roles install them: requirements file -> the environment they apply to.
PIN_FILES = {
    "roles/jupyterhub/files/requirements.txt": "hub-env",
    "roles/jupyterhub_announcement/files/requirements.txt": "hub-env",
    "roles/jupyter_env/files/requirements.txt": "notebook-env",
}
# Inventory variables with the site's extra (pinned) packages of each environment.
EXTRA_PIN_VARS = {
    "hub-env": "jupyterhub_pip_extra_packages",
    "notebook-env": "jupyter_env_pip_extra_packages",
}
# Packages always reported from each environment (pinned ones are added).
ENV_PACKAGES = {
    "hub-env": (
        "jupyterhub",
        "batchspawner",
        "wrapspawner",
        "jupyterhub-idle-culler",
        "jupyterhub-announcement",
        "hpchub-config",
    ),
    "notebook-env": (
        "jupyterhub",
        "batchspawner",
        "jupyterlab",
        "jupyter-server",
        "ipykernel",
        "jupyterlmod",
    ),
}
VENV_KEYS = {"hub-env": "hub_venv", "notebook-env": "notebook_env"}
# Host-level components (the others are <env>/<package>).
HOST_COMPONENTS = (
    "os",
    "python",
    "slurm",
    "munge",
    "lmod",
    "configurable-http-proxy",
    "postgresql",
    "hpchub",
)
# hpchub's host roles; inventory groups that are none of them count as "other".
HOST_ROLES = ("slurm_controller", "login", "compute")
PIN_LINE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(==|>=|~=)\s*([^\s;#,]+)")


# --------------------------------------------------------------------------- versions


def version_key(version: str):
    """A sort key for package and program versions ('22.05.8', '6.1.1', '4.6.6rc1')."""
    try:
        from packaging.version import Version

        return (0, Version(version))
    except Exception:  # noqa: BLE001 - not PEP 440: compare the numbers in it
        return (1, tuple(int(n) for n in re.findall(r"\d+", version)))


def older(installed: str, wanted: str) -> bool:
    a, b = version_key(installed), version_key(wanted)
    if a[0] != b[0]:
        a = (1, tuple(int(n) for n in re.findall(r"\d+", installed)))
        b = (1, tuple(int(n) for n in re.findall(r"\d+", wanted)))
    return a < b


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# --------------------------------------------------------------------------- pins


def parse_pins(lines, env: str, source: str) -> list[dict]:
    """'name==1.2' lines -> [{component, operator, version, source}]; comments skipped."""
    pins = []
    for line in lines:
        match = PIN_LINE.match(line)
        if match:
            name, operator, version = match.groups()
            pins.append(
                {
                    "component": f"{env}/{normalise(name)}",
                    "operator": operator,
                    "version": version,
                    "source": source,
                }
            )
    return pins


def repo_pins(repo: Path = REPO) -> list[dict]:
    pins = []
    for relative, env in PIN_FILES.items():
        path = repo / relative
        if path.is_file():
            pins += parse_pins(path.read_text().splitlines(), env, relative)
    return pins


def inventory_pins(raw_hosts: dict) -> list[dict]:
    """Extra packages the inventory pins, per environment (the same for all hosts in practice)."""
    pins, seen = [], set()
    for host in raw_hosts.values():
        for env, var in EXTRA_PIN_VARS.items():
            for line in (host.get("extra_packages") or {}).get(env, []):
                for pin in parse_pins([line], env, f"inventory: {var}"):
                    key = (pin["component"], pin["operator"], pin["version"])
                    if key not in seen:
                        seen.add(key)
                        pins.append(pin)
    return pins


def minimum_pins(minimums: dict) -> list[dict]:
    return [
        {
            "component": c,
            "operator": ">=",
            "version": str(v),
            "source": "inventory: census_minimum_versions",
        }
        for c, v in sorted((minimums or {}).items())
    ]


# --------------------------------------------------------------------------- components


def _entry(version, source: str) -> dict | None:
    return {"version": str(version), "source": source} if version else None


def components_of(facts: dict, pinned: set[str]) -> dict:
    """Raw facts of one host (hpchub_census_host) -> {component id: {version, source}}."""
    found: dict[str, dict | None] = {}
    os_facts = facts.get("os") or {}
    os_id = os_facts.get("id") or "unknown"
    os_version = (os_facts.get("debian_version") if os_id == "debian" else None) or os_facts.get(
        "version_id"
    )
    if os_version:
        source = (
            "/etc/debian_version"
            if os_id == "debian" and os_facts.get("debian_version")
            else "/etc/os-release"
        )
        found["os"] = _entry(f"{os_id} {os_version}", source)
    python = facts.get("python") or {}
    found["python"] = _entry(python.get("version"), python.get("source", ""))
    commands = facts.get("commands") or {}
    deb = facts.get("deb_packages") or {}
    for component, package in (("slurm", "slurm-client"), ("munge", "munge"), ("lmod", "lmod")):
        if component in commands:
            found[component] = _entry(commands[component]["version"], commands[component]["source"])
        elif package in deb:
            found[component] = _entry(upstream(deb[package]), f"dpkg {package}")
    if "node-configurable-http-proxy" in deb:
        found["configurable-http-proxy"] = _entry(
            upstream(deb["node-configurable-http-proxy"]), "dpkg node-configurable-http-proxy"
        )
    # The hub's database server, when it runs on this host (jupyterhub_database: postgresql).
    for package in sorted(p for p in deb if re.fullmatch(r"postgresql-[0-9]+", p)):
        found["postgresql"] = _entry(upstream(deb[package]), f"dpkg {package}")
    releases = facts.get("releases") or {}
    if "hub" in releases:
        found["hpchub"] = _release_entry(releases["hub"], "/etc/hpchub/release.json")
    venvs = facts.get("venvs") or {}
    for env, key in VENV_KEYS.items():
        venv = venvs.get(key)
        if not venv:
            continue
        found[f"{env}/python"] = _entry(venv.get("python"), f"{venv['path']}/pyvenv.cfg")
        packages = venv.get("packages") or {}
        wanted = set(ENV_PACKAGES[env]) | {
            c.split("/", 1)[1] for c in pinned if c.startswith(f"{env}/")
        }
        for name in sorted(wanted):
            if name in packages:
                found[f"{env}/{name}"] = _entry(packages[name], f"{venv['path']} (dist-info)")
        if env == "notebook-env" and "notebook_env" in releases:
            found["notebook-env/hpchub"] = _release_entry(
                releases["notebook_env"], f"{venv['path']}/hpchub-release.json"
            )
    return {k: v for k, v in sorted(found.items()) if v}


def upstream(debian_version: str) -> str:
    version = debian_version.split(":", 1)[-1]
    return version.rsplit("-", 1)[0] if "-" in version else version


def _release_entry(release: dict, source: str) -> dict | None:
    version = release.get("version")
    if not version:
        return None
    entry = {"version": str(version), "source": source}
    if release.get("commit"):
        entry["commit"] = str(release["commit"]) + ("-dirty" if release.get("dirty") else "")
    return entry


def host_roles(groups: list[str], role_groups: dict) -> list[str]:
    roles = [role for role in HOST_ROLES if role_groups.get(role, role) in groups]
    return roles or ["other"]


# --------------------------------------------------------------------------- drift


def _versions(by_version: dict[str, list[str]]) -> list[dict]:
    return [
        {"version": v, "count": len(hosts), "hosts": sorted(hosts)}
        for v, hosts in sorted(by_version.items(), key=lambda item: version_key(item[0]))
    ]


def group_drift(hosts: list[dict]) -> list[dict]:
    """Components whose version differs between hosts of one inventory group."""
    groups: dict[str, list[dict]] = {}
    for host in hosts:
        if host["reachable"]:
            for group in host["groups"]:
                groups.setdefault(group, []).append(host)
    drift = []
    for group, members in sorted(groups.items()):
        components = sorted({c for h in members for c in h["components"]})
        for component in components:
            by_version: dict[str, list[str]] = {}
            for host in members:
                entry = host["components"].get(component)
                if entry:
                    version = entry["version"] + (
                        f" ({entry['commit']})" if entry.get("commit") else ""
                    )
                    by_version.setdefault(version, []).append(host["name"])
            if len(by_version) > 1:
                drift.append(
                    {
                        "kind": "group",
                        "scope": group,
                        "component": component,
                        "versions": _versions(by_version),
                    }
                )
    return drift


def pin_drift(hosts: list[dict], pins: list[dict]) -> list[dict]:
    """Installed versions below a pin or minimum (or other than an exact pin, or missing)."""
    drift = []
    for pin in pins:
        env = pin["component"].split("/", 1)[0] if "/" in pin["component"] else None
        found: dict[tuple[str, str], list[str]] = {}
        for host in hosts:
            if not host["reachable"]:
                continue
            entry = host["components"].get(pin["component"])
            if entry is None:
                # A pinned package is missing only where its environment exists.
                if env in VENV_KEYS and f"{env}/python" in host["components"]:
                    found.setdefault(("missing", "(not installed)"), []).append(host["name"])
                continue
            version = entry["version"]
            if older(version, pin["version"]):
                kind = (
                    "below_pin"
                    if pin["source"] != "inventory: census_minimum_versions"
                    else "below_minimum"
                )
            elif pin["operator"] == "==" and version_key(version) != version_key(pin["version"]):
                kind = "differs_from_pin"
            else:
                continue
            found.setdefault((kind, version), []).append(host["name"])
        kinds = sorted({kind for kind, _ in found})
        for kind in kinds:
            drift.append(
                {
                    "kind": kind,
                    "scope": "all",
                    "component": pin["component"],
                    "expected": f"{pin['operator']}{pin['version']}",
                    "source": pin["source"],
                    "versions": _versions({v: h for (k, v), h in found.items() if k == kind}),
                }
            )
    return drift


# --------------------------------------------------------------------------- the document


def summarise_components(hosts: list[dict], key) -> dict:
    """{scope: {hosts: n, components: {component: {version: count}}}} for scopes key(host)."""
    scopes: dict[str, dict] = {}
    for host in hosts:
        for scope in key(host):
            entry = scopes.setdefault(scope, {"hosts": 0, "components": {}})
            entry["hosts"] += 1
            for component, value in host["components"].items():
                counts = entry["components"].setdefault(component, {})
                counts[value["version"]] = counts.get(value["version"], 0) + 1
    return {scope: scopes[scope] for scope in sorted(scopes)}


def hub_entry(host: str, raw: dict) -> dict:
    hub = {"host": host, "reachable": bool(raw.get("reachable"))}
    for key in ("version", "users", "server_version_errors", "error"):
        if raw.get(key) is not None:
            hub[key] = raw[key]
    if raw.get("servers") is not None:
        hub["servers"] = {
            k: int(raw["servers"].get(k, 0)) for k in ("running", "pending", "stopping")
        }
    if raw.get("profiles") is not None:
        hub["profiles"] = [
            {"name": name, "servers": count}
            for name, count in sorted(raw["profiles"].items(), key=lambda i: (-i[1], i[0]))
        ]
    if raw.get("server_versions") is not None:
        hub["server_versions"] = dict(sorted(raw["server_versions"].items()))
    return hub


def build(raw: dict, repo: Path = REPO, now: dt.datetime | None = None) -> dict:
    """Raw facts (what playbooks/census.yml pipes in) -> the census document."""
    raw_hosts = raw.get("hosts") or {}
    role_groups = raw.get("role_groups") or {}
    pins = repo_pins(repo) + inventory_pins(raw_hosts) + minimum_pins(raw.get("minimum_versions"))
    pinned = {p["component"] for p in pins}
    hosts, hubs = [], []
    for name in sorted(raw_hosts):
        entry = raw_hosts[name]
        groups = sorted(g for g in entry.get("groups") or [] if g not in ("all", "ungrouped"))
        facts = entry.get("facts")
        host = {
            "name": name,
            "groups": groups,
            "roles": host_roles(groups, role_groups),
            "reachable": facts is not None,
            "components": components_of(facts, pinned) if facts else {},
            "errors": list((facts or {}).get("errors") or []),
        }
        if facts is None:
            host["errors"].append(entry.get("error") or "no facts collected (host unreachable?)")
        hosts.append(host)
        if entry.get("hub") is not None:
            hubs.append(hub_entry(name, entry["hub"]))
    drift = group_drift(hosts) + pin_drift(hosts, pins)
    release = raw.get("generator") or hpchub_release.release(repo)
    now = now or dt.datetime.now(dt.UTC)
    return {
        "schema_version": SCHEMA_VERSION,
        "anonymised": False,
        "generated_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "generator": {
            "hpchub_version": release.get("version", "unknown"),
            "commit": release.get("commit", "unknown"),
        },
        "site": {"name": raw.get("site") or "unnamed"},
        "summary": {
            "hosts": len(hosts),
            "unreachable": sum(1 for h in hosts if not h["reachable"]),
            "drift": len(drift),
            "roles": {
                role: n["hosts"]
                for role, n in summarise_components(hosts, lambda h: h["roles"]).items()
            },
        },
        "by_role": summarise_components([h for h in hosts if h["reachable"]], lambda h: h["roles"]),
        "by_group": summarise_components(
            [h for h in hosts if h["reachable"]], lambda h: h["groups"]
        ),
        "hosts": hosts,
        "hubs": hubs,
        "pins": pins,
        "drift": drift,
    }


def anonymise(doc: dict) -> dict:
    """The shareable export, in the same schema: counts and versions only.

    Built from a whitelist (nothing is copied that is not named here): no host, user, group,
    profile or site names, no IPs, paths or error messages.
    """
    hosts = doc["hosts"]
    groups_to_roles = {}
    for host in hosts:
        for group in host["groups"]:
            groups_to_roles.setdefault(group, set()).update(host["roles"])

    # Components hpchub knows; a site's own packages (pinned in its inventory) could name it.
    known = set(HOST_COMPONENTS) | {
        p["component"] for p in doc["pins"] if not p["source"].startswith("inventory")
    }
    known |= {f"{env}/{name}" for env, names in ENV_PACKAGES.items() for name in names}
    known |= {f"{env}/python" for env in ENV_PACKAGES} | {"notebook-env/hpchub"}

    def scope_of(scope: str) -> str:
        if scope == "all":
            return "all"
        roles = groups_to_roles.get(scope, {"other"})
        return "+".join(sorted(roles))

    drift = []
    for item in doc["drift"]:
        if item["component"] not in known:
            continue
        entry = {
            "kind": item["kind"],
            "scope": scope_of(item["scope"]),
            "component": item["component"],
            "versions": [
                {"version": _strip_commit(v["version"]), "count": v["count"]}
                for v in item["versions"]
            ],
        }
        if "expected" in item:
            entry["expected"] = item["expected"]
            entry["source"] = (
                item["source"] if not item["source"].startswith("inventory") else "inventory"
            )
        drift.append(entry)
    hubs = []
    for index, hub in enumerate(doc["hubs"], 1):
        entry = {"host": f"hub-{index}", "reachable": hub["reachable"]}
        for key in ("version", "users", "servers", "server_versions", "server_version_errors"):
            if key in hub:
                entry[key] = hub[key]
        if "profiles" in hub:
            entry["profiles"] = [
                {"name": f"profile-{i}", "servers": p["servers"]}
                for i, p in enumerate(hub["profiles"], 1)
            ]
        hubs.append(entry)
    by_role = {
        role: {
            "hosts": data["hosts"],
            "components": {
                component: {_strip_commit(v): n for v, n in versions.items()}
                for component, versions in data["components"].items()
                if component in known
            },
        }
        for role, data in doc["by_role"].items()
    }
    return {
        "schema_version": doc["schema_version"],
        "anonymised": True,
        "generated_at": doc["generated_at"][:10] + "T00:00:00Z",
        "generator": dict(doc["generator"]),
        "site": None,
        "summary": {
            "hosts": doc["summary"]["hosts"],
            "unreachable": doc["summary"]["unreachable"],
            "drift": len(drift),
            "roles": dict(doc["summary"]["roles"]),
        },
        "by_role": by_role,
        "by_group": {},
        "hosts": [],
        "hubs": hubs,
        "pins": [
            {
                **{k: p[k] for k in ("component", "operator", "version")},
                "source": _pin_source(p["source"]),
            }
            for p in doc["pins"]
            if p["component"] in known
        ],
        "drift": drift,
    }


def _strip_commit(version: str) -> str:
    return version.split(" (", 1)[0]


def _pin_source(source: str) -> str:
    return "inventory" if source.startswith("inventory") else source


# --------------------------------------------------------------------------- Markdown


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _version_list(versions: dict) -> str:
    items = sorted(versions.items(), key=lambda i: version_key(i[0]))
    return ", ".join(f"{v} ({n})" if len(versions) > 1 or n > 1 else v for v, n in items)


def markdown(doc: dict) -> str:
    site = (doc.get("site") or {}).get("name") or "anonymised"
    s = doc["summary"]
    lines = [
        f"# hpchub census: {site}",
        "",
        f"Generated {doc['generated_at']} by hpchub {doc['generator']['hpchub_version']}"
        f" ({doc['generator']['commit'][:12]}), schema version {doc['schema_version']}"
        + (", anonymised export" if doc["anonymised"] else "")
        + ".",
        "",
        f"{s['hosts']} hosts ("
        + ", ".join(f"{role}: {n}" for role, n in s["roles"].items())
        + f"), {s['unreachable']} unreachable, **{s['drift']} drift finding(s)**.",
        "",
        "## Drift",
        "",
    ]
    if doc["drift"]:
        lines += ["| Kind | Scope | Component | Expected | Found |", "|---|---|---|---|---|"]
        for item in doc["drift"]:
            found = "; ".join(
                f"{v['version']} on "
                + (", ".join(v["hosts"]) if v.get("hosts") else f"{v['count']} host(s)")
                for v in item["versions"]
            )
            expected = item.get("expected", "one version")
            cells = [item["kind"], item["scope"], item["component"], expected, found]
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    else:
        lines.append(
            "None: every group runs one version of each component, none below its pin"
            + (
                f" (among the reachable hosts; {s['unreachable']} unreachable)."
                if s["unreachable"]
                else "."
            )
        )
    lines += ["", "## Hub", ""]
    if not doc["hubs"]:
        lines.append("No login host answered for a hub.")
    for hub in doc["hubs"]:
        if not hub["reachable"]:
            lines.append(
                f"- {hub['host']}: not reachable ({_cell(hub.get('error', 'unknown error'))})"
            )
            continue
        servers = hub.get("servers") or {}
        profiles = (
            ", ".join(f"{p['name']} ({p['servers']})" for p in hub.get("profiles") or []) or "none"
        )
        versions = _version_list(hub.get("server_versions") or {}) or "none"
        lines += [
            f"- {hub['host']}: JupyterHub {hub.get('version', '?')} (running),"
            f" users: {hub.get('users', '?')}, servers: {servers.get('running', 0)} running and"
            f" {servers.get('pending', 0)} pending",
            f"  - profiles in use: {profiles}",
            f"  - running servers report jupyter_server {versions}"
            + (
                f" ({hub['server_version_errors']} did not answer)"
                if hub.get("server_version_errors")
                else ""
            ),
        ]
    lines += ["", "## Components by role", ""]
    for role, data in doc["by_role"].items():
        lines += [
            f"### {role} ({data['hosts']} hosts)",
            "",
            "| Component | Version (hosts) |",
            "|---|---|",
        ]
        for component, versions in data["components"].items():
            lines.append(f"| {component} | {_cell(_version_list(versions))} |")
        lines.append("")
    if doc["hosts"]:
        lines += ["## Hosts", ""]
        names = [h["name"] for h in doc["hosts"]]
        components = sorted({c for h in doc["hosts"] for c in h["components"]})
        if components:
            lines += ["| Component | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for component in components:
            cells = [
                _cell(h["components"][component]["version"])
                if component in h["components"]
                else "-"
                for h in doc["hosts"]
            ]
            lines.append(f"| {component} | " + " | ".join(cells) + " |")
        errors = [(h["name"], e) for h in doc["hosts"] for e in h["errors"]]
        if errors:
            lines += ["", "Errors:", ""] + [f"- {name}: {_cell(e)}" for name, e in errors]
        lines.append("")
    lines += ["## Pins", "", "| Component | Pin | Source |", "|---|---|---|"]
    lines += [
        f"| {p['component']} | {p['operator']}{p['version']} | {p['source']} |" for p in doc["pins"]
    ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- schema


def validate(doc: dict) -> None:
    """Raise jsonschema.ValidationError when doc does not follow docs/census.schema.json."""
    import jsonschema

    jsonschema.validate(doc, json.loads(SCHEMA_FILE.read_text()))


def write(doc: dict, out_dir: Path, anonymised: bool) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    documents = [("census.json", doc)]
    if anonymised:
        documents.append(("census-anonymised.json", anonymise(doc)))
    written = []
    for name, document in documents:
        validate(document)
        path = out_dir / name
        path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")
        written.append(path)
    report = out_dir / "census.md"
    report.write_text(markdown(doc))
    written.insert(1, report)
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="raw facts on stdin -> census.json, census.md")
    b.add_argument("--out-dir", type=Path, required=True)
    b.add_argument("--anonymised", action="store_true", help="also write census-anonymised.json")
    v = sub.add_parser("validate", help="check census documents against the schema")
    v.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args(argv)
    if args.command == "validate":
        for path in args.files:
            validate(json.loads(path.read_text()))
            print(f"{path}: valid (schema version {SCHEMA_VERSION})")
        return 0
    doc = build(json.load(sys.stdin))
    for path in write(doc, args.out_dir, args.anonymised):
        print(f"wrote {path}")
    s = doc["summary"]
    print(f"{s['hosts']} hosts, {s['unreachable']} unreachable, {s['drift']} drift finding(s)")
    for item in doc["drift"]:
        found = "; ".join(f"{v['version']} on {', '.join(v['hosts'])}" for v in item["versions"])
        print(f"DRIFT {item['kind']} {item['scope']} {item['component']}: {found}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
