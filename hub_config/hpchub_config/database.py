"""The hub's database: where it is, whether its schema matches the installed JupyterHub, a backup.

The jupyterhub role runs `hpchub-db status` at every converge: when the schema is older than
the installed JupyterHub's (a new hpchub release moved the pin), it stops the hub, takes a
backup with `hpchub-db backup`, runs `jupyterhub upgrade-db` and starts the hub again; when
it is current, nothing happens. playbooks/backup.yml takes the same backup while the hub runs.

    hpchub-db [--settings FILE] status        JSON: kind, revision, head, state
    hpchub-db [--settings FILE] backup DIR    a consistent copy in DIR (0600); prints its path

state is "current" (revision == head), "outdated" (an earlier revision: upgrade-db migrates it),
"new" (no database yet: the hub creates it at its first start) or "unknown" (a revision this
JupyterHub does not know, e.g. a database of a newer JupyterHub: never touched, the role stops).
Only sqlite is backed up here so far; other databases (PostgreSQL) are a setting away in
`hub.db_url` and get their own backup command (pg_dump) in the same place.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from .settings import DEFAULT_SETTINGS_PATH, HubSettings, SettingsError, load_settings

SQLITE_PREFIX = "sqlite:///"


def url(hub: HubSettings) -> str:
    """The database URL the hub uses: the setting, or sqlite in the state directory."""
    return hub.db_url or f"{SQLITE_PREFIX}{hub.state_dir}/jupyterhub.sqlite"


def kind(db_url: str) -> str:
    """ "sqlite", "postgresql", ... (the SQLAlchemy dialect, without the driver)."""
    return db_url.split(":", 1)[0].split("+", 1)[0]


def redacted(db_url: str) -> str:
    """The URL without its password (for logs and reports)."""
    parts = urlsplit(db_url)
    if not parts.password:
        return db_url
    netloc = parts.netloc.replace(f":{parts.password}@", ":[redacted]@")
    return urlunsplit(parts._replace(netloc=netloc))


def sqlite_path(db_url: str) -> Path:
    if not db_url.startswith(SQLITE_PREFIX):
        raise ValueError(f"not a sqlite file URL: {redacted(db_url)}")
    return Path(db_url[len(SQLITE_PREFIX) :])


def head_revision() -> str:
    """The schema revision the installed JupyterHub expects (its newest alembic migration)."""
    from alembic.script import ScriptDirectory
    from jupyterhub import dbutil

    return ScriptDirectory(dbutil.ALEMBIC_DIR).get_current_head()


def known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory
    from jupyterhub import dbutil

    return {script.revision for script in ScriptDirectory(dbutil.ALEMBIC_DIR).walk_revisions()}


def current_revision(db_url: str) -> str | None:
    """The database's alembic revision; None when there is no database (or no tables) yet.

    Reads only: a missing sqlite file is not created.
    """
    if kind(db_url) == "sqlite":
        path = sqlite_path(db_url)
        if not path.exists():
            return None
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            if "alembic_version" not in tables:
                return None
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
            return row[0] if row else None
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine

    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def status(db_url: str) -> dict:
    revision, head = current_revision(db_url), head_revision()
    if revision is None:
        state = "new"
    elif revision == head:
        state = "current"
    elif revision in known_revisions():
        state = "outdated"
    else:
        state = "unknown"
    return {
        "url": redacted(db_url),
        "kind": kind(db_url),
        "revision": revision,
        "head": head,
        "state": state,
    }


def backup(db_url: str, directory: str | Path, now: datetime | None = None) -> Path:
    """A consistent copy of the database in DIRECTORY, 0600; returns its path.

    sqlite: the online backup API (safe while the hub writes). Named after the schema
    revision and the UTC time, so several backups never overwrite each other.
    """
    if kind(db_url) != "sqlite":
        raise NotImplementedError(
            f"backup of a {kind(db_url)} database: not implemented yet (sqlite only); "
            "back it up with the database's own tools (e.g. pg_dump)"
        )
    source = sqlite_path(db_url)
    if not source.exists():
        raise FileNotFoundError(f"no database at {source}")
    revision = current_revision(db_url) or "none"
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    directory = Path(directory)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    target = directory / f"jupyterhub-{stamp}-{revision}.sqlite"
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    with (
        sqlite3.connect(f"file:{source}?mode=ro", uri=True) as src,
        sqlite3.connect(target) as dst,
    ):
        src.backup(dst)
    os.chmod(target, 0o600)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hpchub-db", description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", default=DEFAULT_SETTINGS_PATH, help="the settings file")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("status", help="the schema revision against the installed JupyterHub")
    backup_parser = commands.add_parser("backup", help="a consistent copy into a folder")
    backup_parser.add_argument("directory")
    args = parser.parse_args(argv)
    try:
        db_url = url(load_settings(args.settings).hub)
        if args.command == "status":
            print(json.dumps(status(db_url), sort_keys=True))
        else:
            print(backup(db_url, args.directory))
    except (SettingsError, OSError, NotImplementedError, sqlite3.Error) as e:
        print(f"hpchub-db: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
