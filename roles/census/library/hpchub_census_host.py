#!/usr/bin/python
"""Ansible module: the versions of what hpchub deploys on this host, read-only.

Reads files (/etc/os-release, dist-info folders of the two venvs, hpchub's release records)
and asks the programs themselves (`sinfo --version`, `munged --version`, `lmod --version`),
with Debian's package database as the fallback. It never writes anything and always reports
changed=false; what it cannot read becomes an entry in `errors`, never a failure.
The census (tools/census.py) turns these raw facts into the report (docs/census.md).
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
---
module: hpchub_census_host
short_description: Read the versions of hpchub's components on a host (read-only)
description:
  - Reads the operating system, Python, Slurm, munge, Lmod, configurable-http-proxy, the hub's
    and the notebook environment's Python packages and hpchub's release records.
  - Changes nothing; supports check mode.
options:
  hub_venv:
    description: The hub's venv (read when it exists).
    type: path
  notebook_env:
    description: The notebook environment (read when it exists).
    type: path
  slurm_bin_dir:
    description: Where Slurm's commands are.
    type: path
    default: /usr/bin
  lmod_cmd:
    description: Lmod's lmod command.
    type: path
    default: /usr/share/lmod/lmod/libexec/lmod
  release_file:
    description: hpchub's release record of the hub (written by the jupyterhub role).
    type: path
    default: /etc/hpchub/release.json
author: hpchub
"""

RETURN = r"""
census:
  description: The raw facts (os, python, commands, packages, venvs, releases, errors).
  returned: always
  type: dict
"""

# Debian packages the census reports when they are installed.
DEB_PACKAGES = (
    "slurm-client",
    "slurmd",
    "slurmctld",
    "munge",
    "lmod",
    "node-configurable-http-proxy",
    "nodejs",
    "python3",
)
# The hub's PostgreSQL (jupyterhub_database: postgresql): the server package of its version.
POSTGRESQL_SERVER = re.compile(r"^postgresql-[0-9]+$")
COMMAND_TIMEOUT = 20


def parse_os_release(text: str) -> dict:
    """KEY=value lines of /etc/os-release (quotes removed)."""
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and not key.startswith("#"):
            values[key.strip()] = value.strip().strip("\"'")
    return values


def first_version(text: str) -> str | None:
    """The first dotted version number in a program's --version output."""
    match = re.search(r"(\d+(?:\.\d+)+(?:[-.][0-9A-Za-z]+)*)", text or "")
    return match.group(1) if match else None


def parse_lmod_version(text: str) -> str | None:
    """`lmod --version` prints e.g. 'Modules based on Lua: Version 8.6.19 2022-...'."""
    match = re.search(r"Version\s+(\d+(?:\.\d+)+)", text or "")
    return match.group(1) if match else first_version(text)


def parse_dpkg(text: str) -> dict:
    """Lines 'package<TAB>version<TAB>status' of dpkg-query; installed packages only."""
    packages = {}
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[1] and parts[2].strip().startswith("ii"):
            packages[parts[0].split(":")[0]] = parts[1]
    return packages


def upstream_version(debian_version: str) -> str:
    """'1:22.05.8-4+deb12u3' -> '22.05.8' (epoch and Debian revision removed)."""
    version = debian_version.split(":", 1)[-1]
    return version.rsplit("-", 1)[0] if "-" in version else version


def normalise(name: str) -> str:
    """PEP 503 name: jupyterhub_idle_culler -> jupyterhub-idle-culler."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_metadata(path: str) -> tuple[str, str] | None:
    """Name and Version from a dist-info METADATA file."""
    name = version = None
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if not line.strip():
                    break  # the headers end at the first empty line
                if line.startswith("Name:"):
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("Version:"):
                    version = line.split(":", 1)[1].strip()
    except OSError:
        return None
    return (normalise(name), version) if name and version else None


def read_venv(prefix: str) -> dict | None:
    """The venv's Python version and {package: version}; None when there is no venv."""
    config = os.path.join(prefix, "pyvenv.cfg")
    if not os.path.isfile(config):
        return None
    python = None
    with open(config, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            key, sep, value = line.partition("=")
            if sep and key.strip() in ("version", "version_info"):
                python = first_version(value.strip())
                if key.strip() == "version":
                    break
    packages = {}
    pattern = os.path.join(prefix, "lib", "python3*", "site-packages", "*.dist-info", "METADATA")
    for path in sorted(glob.glob(pattern)):
        entry = read_metadata(path)
        if entry:
            packages[entry[0]] = entry[1]
    return {"path": prefix, "python": python, "packages": packages}


def read_json(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def run(argv: list[str]) -> tuple[int, str]:
    """Run a read-only command; (exit code, stdout and stderr). 127 when it is missing."""
    if not (os.path.isabs(argv[0]) and os.access(argv[0], os.X_OK)) and not shutil.which(argv[0]):
        return 127, ""
    try:
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"},
        )
    except (OSError, subprocess.SubprocessError) as e:
        return 126, str(e)
    return result.returncode, (result.stdout or "") + (result.stderr or "")


def command_version(candidates: list[list[str]], parse=first_version) -> dict | None:
    """The first candidate command that answers with a version."""
    for argv in candidates:
        code, output = run(argv)
        version = parse(output) if code == 0 else None
        if version:
            return {"version": version, "source": " ".join(argv)}
    return None


def collect(params: dict) -> dict:
    errors: list[str] = []
    facts: dict = {"errors": errors}

    os_release = {}
    try:
        with open("/etc/os-release", encoding="utf-8") as handle:
            os_release = parse_os_release(handle.read())
    except OSError as e:
        errors.append(f"/etc/os-release: {e.strerror}")
    debian_version = None
    try:
        with open("/etc/debian_version", encoding="utf-8") as handle:
            debian_version = handle.read().strip()
    except OSError:
        pass
    facts["os"] = {
        "id": os_release.get("ID"),
        "version_id": os_release.get("VERSION_ID"),
        "pretty_name": os_release.get("PRETTY_NAME"),
        "debian_version": debian_version,
        "kernel": os.uname().release,
    }

    code, output = run(["dpkg-query", "-W", "-f", "${Package}\t${Version}\t${db:Status-Abbrev}\n"])
    deb = parse_dpkg(output) if code in (0, 1) else {}
    facts["deb_packages"] = {
        name: version
        for name, version in deb.items()
        if name in DEB_PACKAGES or POSTGRESQL_SERVER.match(name)
    }

    python = command_version([["/usr/bin/python3", "--version"], ["python3", "--version"]])
    facts["python"] = python

    slurm_bin = params.get("slurm_bin_dir") or "/usr/bin"
    commands = {
        "slurm": command_version(
            [
                [os.path.join(slurm_bin, "sinfo"), "--version"],
                ["sinfo", "--version"],
                ["slurmd", "-V"],
                ["slurmctld", "-V"],
            ]
        ),
        "munge": command_version([["munged", "--version"], ["/usr/sbin/munged", "--version"]]),
        "lmod": command_version(
            [[params.get("lmod_cmd") or "/usr/share/lmod/lmod/libexec/lmod", "--version"]],
            parse=parse_lmod_version,
        ),
    }
    facts["commands"] = {name: value for name, value in commands.items() if value}

    facts["venvs"] = {}
    for key in ("hub_venv", "notebook_env"):
        prefix = params.get(key)
        if not prefix:
            continue
        try:
            venv = read_venv(prefix)
        except OSError as e:
            errors.append(f"{prefix}: {e.strerror}")
            venv = None
        if venv is not None:
            facts["venvs"][key] = venv

    releases = {}
    hub_release = read_json(params.get("release_file") or "/etc/hpchub/release.json")
    if hub_release is not None:
        releases["hub"] = hub_release
    if params.get("notebook_env"):
        env_release = read_json(os.path.join(params["notebook_env"], "hpchub-release.json"))
        if env_release is not None:
            releases["notebook_env"] = env_release
    facts["releases"] = releases
    return facts


def main():  # pragma: no cover - runs on the managed host
    module = AnsibleModule(
        argument_spec={
            "hub_venv": {"type": "path"},
            "notebook_env": {"type": "path"},
            "slurm_bin_dir": {"type": "path", "default": "/usr/bin"},
            "lmod_cmd": {"type": "path", "default": "/usr/share/lmod/lmod/libexec/lmod"},
            "release_file": {"type": "path", "default": "/etc/hpchub/release.json"},
        },
        supports_check_mode=True,
    )
    module.exit_json(changed=False, census=collect(module.params))


if __name__ == "__main__":
    main()
