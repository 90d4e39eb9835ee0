#!/usr/bin/python3
"""Find a JupyterHub that hpchub did not install on this login node, and take it over.

Sites move to hpchub from a hand-rolled hub: units `jupyterhub.service` (and often
`jupyterhub-proxy.service`) running as root, state in /etc/jupyterhub and /var/lib/jupyterhub.
The jupyterhub role runs this with the system python3 before it changes anything:

    hpchub-existing-hub.py --config-dir D --state-dir D --hub-user U            (read only)
    hpchub-existing-hub.py ... --adopt ARCHIVE_DIR                               (takes over)

It prints JSON: `found` (a hub that is not hpchub's), `units`, `database`, `files` (what the
old hub left in the two folders) and `findings` (sentences for the admin). With `--adopt` it
moves everything the old hub left in those folders into ARCHIVE_DIR (created 0700), except
what carries the users over: the database (users, groups, API tokens) and the cookie secret
(logged-in users stay logged in). So an old world-readable secret or an old config cannot
linger next to hpchub's. The role then gives the database to the hub account and migrates it
(a backup first). Standard library only: it runs before the hub's venv exists.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import sqlite3
import stat
import sys
from pathlib import Path

MARKER = "hpchub"  # in the Description= of the role's units (templates/*.service.j2)
UNITS = ("jupyterhub.service", "jupyterhub-proxy.service")
UNIT_DIRS = ("/etc/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system")
DATABASE = "jupyterhub.sqlite"
KEPT = (DATABASE, "jupyterhub_cookie_secret")


def owner(st: os.stat_result) -> str:
    try:
        return pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        return str(st.st_uid)


def unit_fields(text: str) -> dict[str, str]:
    """Description=, User= and the first line of ExecStart= of a systemd unit file (systemd's
    syntax: continuation lines, comments; not an INI file configparser can always read)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if line[:1] in (" ", "\t", "#", ";"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if sep and key in ("Description", "User", "ExecStart") and key not in fields:
            fields[key] = value.strip().rstrip("\\").strip()
    return fields


def unit_info(name: str, unit_dirs: tuple[str, ...]) -> dict | None:
    for directory in unit_dirs:
        path = Path(directory) / name
        if path.is_file():
            fields = unit_fields(path.read_text(errors="replace"))
            return {
                "name": name,
                "path": str(path),
                "ours": MARKER in fields.get("Description", "").lower(),
                "user": fields.get("User") or "root",
                "exec": fields.get("ExecStart", ""),
            }
    return None


def schema_revision(path: Path) -> str | None:
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            row = db.execute("SELECT version_num FROM alembic_version").fetchone()
        finally:
            db.close()
    except sqlite3.Error:
        return None
    return row[0] if row else None


def file_info(path: Path) -> dict:
    st = path.lstat()
    return {
        "path": str(path),
        "owner": owner(st),
        "mode": f"{stat.S_IMODE(st.st_mode):04o}",
        "directory": stat.S_ISDIR(st.st_mode),
        "world_readable": bool(st.st_mode & stat.S_IROTH) and not stat.S_ISDIR(st.st_mode),
    }


def survey(config_dir: Path, state_dir: Path, hub_user: str, unit_dirs: tuple[str, ...]) -> dict:
    units = [u for u in (unit_info(n, unit_dirs) for n in UNITS) if u]
    foreign_units = [u for u in units if not u["ours"]]
    found = bool(foreign_units)
    findings = [
        f"{u['name']} ({u['path']}) was not installed by hpchub; it runs "
        f"{u['exec'] or 'a program'} as {u['user']}"
        for u in foreign_units
    ]
    database = None
    db_path = state_dir / DATABASE
    if db_path.is_file():
        database = file_info(db_path) | {"revision": schema_revision(db_path)}
        if database["owner"] != hub_user:
            findings.append(
                f"the hub database {db_path} belongs to {database['owner']} (mode "
                f"{database['mode']}), not to the hub account {hub_user}: the hub cannot write "
                f"it (schema revision {database['revision'] or 'unknown'})"
            )
    files = []
    if found:
        for folder in (config_dir, state_dir):
            if folder.is_dir():
                files += [file_info(p) for p in sorted(folder.iterdir())]
        for f in files:
            if f["world_readable"] and Path(f["path"]).name not in KEPT:
                findings.append(f"{f['path']} is readable by every user (mode {f['mode']})")
    return {
        "found": found,
        "units": units,
        "database": database,
        "files": files,
        "findings": findings,
    }


def adopt(report: dict, state_dir: Path, archive: Path) -> list[str]:
    """Move the old hub's files (not the database and the cookie secret) into `archive`."""
    moved = []
    kept = {state_dir / name for name in KEPT}
    for f in report["files"]:
        path = Path(f["path"])
        if path in kept or not (path.exists() or path.is_symlink()):
            continue
        if not moved:
            archive.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(archive, 0o700)
        # archive/etc/jupyterhub/..., archive/var/lib/jupyterhub/...
        target = archive / path.relative_to(path.anchor)
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        shutil.move(str(path), str(target))
        moved.append(str(path))
    return moved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-dir", type=Path, required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--hub-user", required=True)
    parser.add_argument("--unit-dir", action="append", help="(tests) where units are looked up")
    parser.add_argument("--adopt", type=Path, metavar="ARCHIVE_DIR")
    args = parser.parse_args(argv)
    unit_dirs = tuple(args.unit_dir or UNIT_DIRS)
    report = survey(args.config_dir, args.state_dir, args.hub_user, unit_dirs)
    if args.adopt and report["found"]:
        report["moved"] = adopt(report, args.state_dir, args.adopt)
        report["archive"] = str(args.adopt)
    json.dump(report, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
