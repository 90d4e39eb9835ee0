"""The hub's database: where it is, whether its schema matches the installed JupyterHub, a backup.

The jupyterhub role runs `hpchub-db status` at every converge: when the schema is older than
the installed JupyterHub's (a new hpchub release moved the pin), it stops the hub, takes a
backup with `hpchub-db backup`, runs `jupyterhub upgrade-db` and starts the hub again; when
it is current, nothing happens. playbooks/backup.yml takes the same backup while the hub runs,
playbooks/restore.yml puts it back (`hpchub-db restore` for PostgreSQL).

    hpchub-db [--settings FILE] status         JSON: kind, revision, head, state
    hpchub-db [--settings FILE] backup DIR     a consistent copy in DIR (0600); prints its path
    hpchub-db [--settings FILE] restore FILE   PostgreSQL: load a backup (the hub stopped)

state is "current" (revision == head), "outdated" (an earlier revision: upgrade-db migrates it),
"new" (no database yet: the hub creates it at its first start) or "unknown" (a revision this
JupyterHub does not know, e.g. a database of a newer JupyterHub: never touched, the role stops).
sqlite is copied with its online backup API; PostgreSQL is dumped with pg_dump (custom format,
consistent while the hub writes) and loaded with pg_restore, both run as the hub account (peer
authentication on the login node's socket; a password in the URL goes to them through the
environment, never the command line).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from .settings import DEFAULT_SETTINGS_PATH, HubSettings, SettingsError, load_settings

SQLITE_PREFIX = "sqlite:///"
# Debian's PostgreSQL listens on this socket folder (and, as hpchub sets it up, nowhere else).
POSTGRESQL_SOCKET_DIR = "/run/postgresql"
BACKUP_SUFFIX = {"sqlite": ".sqlite", "postgresql": ".pgdump"}


class DatabaseError(RuntimeError):
    """A database tool failed (its own message, never the password)."""


def url(hub: HubSettings) -> str:
    """The database URL the hub uses: `db_url`, else the one `database` chooses.

    postgresql: the login node's server over its unix socket, as the OS account the hub runs
    as (no user, no password in the URL: peer authentication).
    """
    if hub.db_url:
        return hub.db_url
    if hub.database == "postgresql":
        return f"postgresql+psycopg2:///{hub.postgresql_database}?host={POSTGRESQL_SOCKET_DIR}"
    return f"{SQLITE_PREFIX}{hub.state_dir}/jupyterhub.sqlite"


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


def libpq_target(db_url: str) -> tuple[str, dict[str, str]]:
    """A PostgreSQL URL for pg_dump/pg_restore (libpq: no "+driver") and the environment that
    carries its password (PGPASSWORD), so that no secret is on a command line."""
    parts = urlsplit(db_url)
    scheme = parts.scheme.split("+", 1)[0]
    if scheme not in ("postgresql", "postgres"):
        raise ValueError(f"not a PostgreSQL URL: {redacted(db_url)}")
    env = {}
    netloc = parts.netloc
    if parts.password is not None:
        env["PGPASSWORD"] = parts.password
        netloc = netloc.replace(f":{parts.password}@", "@", 1)
    # By hand: urlunsplit drops the empty host of a socket URL (postgresql:///db?host=/run/...).
    query = f"?{parts.query}" if parts.query else ""
    return f"postgresql://{netloc}{parts.path}{query}", env


def _pg_tool(name: str) -> str:
    tool = shutil.which(name)
    if tool is None:
        raise FileNotFoundError(
            f"{name} not found: install PostgreSQL's client (Debian: postgresql-client) "
            "of the server's major version or newer"
        )
    return tool


def _run_pg_tool(argv: list[str], db_url: str | None = None, stdin: str | None = None) -> str:
    """Run a PostgreSQL client tool (on db_url's database, if given); its standard output."""
    argv = [_pg_tool(argv[0]), *argv[1:]]
    env = dict(os.environ)
    if db_url is not None:
        target, secret = libpq_target(db_url)
        argv += ["--dbname", target]
        env.update(secret)
    result = subprocess.run(argv, input=stdin, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        name = Path(argv[0]).name
        raise DatabaseError(f"{name} failed (exit {result.returncode}): {result.stderr.strip()}")
    return result.stdout


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
    from sqlalchemy.exc import SQLAlchemyError

    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except SQLAlchemyError as e:
        # The driver's own words (e.g. "Peer authentication failed"), without the URL.
        raise DatabaseError(f"{redacted(db_url)}: {getattr(e, 'orig', None) or e}") from e
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

    sqlite: the online backup API (safe while the hub writes); postgresql: pg_dump's custom
    format (one snapshot, safe while the hub writes; `hpchub-db restore` loads it). Named after
    the schema revision and the UTC time, so several backups never overwrite each other.
    """
    db_kind = kind(db_url)
    if db_kind not in BACKUP_SUFFIX:
        raise NotImplementedError(
            f"backup of a {db_kind} database: not implemented (sqlite and postgresql only); "
            "back it up with the database's own tools"
        )
    if db_kind == "sqlite" and not sqlite_path(db_url).exists():
        raise FileNotFoundError(f"no database at {sqlite_path(db_url)}")
    revision = current_revision(db_url) or "none"
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    directory = Path(directory)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    target = directory / f"jupyterhub-{stamp}-{revision}{BACKUP_SUFFIX[db_kind]}"
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    try:
        if db_kind == "postgresql":
            _run_pg_tool(
                ["pg_dump", "--format=custom", "--no-owner", "--file", str(target)], db_url
            )
        else:
            with (
                sqlite3.connect(f"file:{sqlite_path(db_url)}?mode=ro", uri=True) as src,
                sqlite3.connect(target) as dst,
            ):
                src.backup(dst)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    os.chmod(target, 0o600)
    return target


def restore(db_url: str, dump: str | Path) -> None:
    """Load a PostgreSQL backup of `backup` into the database (the hub must be stopped).

    One transaction: everything the connecting account (the hub's) owns in the database is
    dropped, then the dump's tables are created and filled, owned by that account. Nothing
    changes when any step fails. sqlite backups are files: the restore playbook copies them.
    """
    if kind(db_url) != "postgresql":
        raise NotImplementedError(
            f"hpchub-db restore loads PostgreSQL dumps; a {kind(db_url)} database is restored "
            "by copying its backup file (playbooks/restore.yml)"
        )
    if not Path(dump).is_file():
        raise FileNotFoundError(f"no backup at {dump}")
    # pg_restore turns the dump into SQL (no connection); psql runs it with the drop first.
    script = _run_pg_tool(["pg_restore", "--no-owner", "--no-privileges", "--file", "-", str(dump)])
    _run_pg_tool(
        ["psql", "--no-psqlrc", "--quiet", "--single-transaction", "--set", "ON_ERROR_STOP=1"],
        db_url,
        stdin="DROP OWNED BY CURRENT_USER;\n" + script,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hpchub-db", description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", default=DEFAULT_SETTINGS_PATH, help="the settings file")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("status", help="the schema revision against the installed JupyterHub")
    backup_parser = commands.add_parser("backup", help="a consistent copy into a folder")
    backup_parser.add_argument("directory")
    restore_parser = commands.add_parser("restore", help="PostgreSQL: load a backup (hub stopped)")
    restore_parser.add_argument("file")
    args = parser.parse_args(argv)
    try:
        db_url = url(load_settings(args.settings).hub)
        if args.command == "status":
            print(json.dumps(status(db_url), sort_keys=True))
        elif args.command == "backup":
            print(backup(db_url, args.directory))
        else:
            restore(db_url, args.file)
            print(f"restored {args.file} into {redacted(db_url)}")
    except (
        SettingsError,
        OSError,
        NotImplementedError,
        ValueError,
        DatabaseError,
        sqlite3.Error,
    ) as e:
        print(f"hpchub-db: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
