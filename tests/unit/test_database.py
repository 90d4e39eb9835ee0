"""hpchub-db: the database's schema against the installed JupyterHub, and consistent backups.

Real sqlite databases made by JupyterHub's own ORM (as the hub makes them), no fakes.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime

import pytest
from hpchub_config import database
from hpchub_config.settings import SettingsError, settings_from_dict
from jupyterhub import orm


def make_hub_db(path) -> str:
    url = f"sqlite:///{path}"
    session = orm.new_session_factory(url)()  # creates the tables, stamps the head revision
    session.add(orm.User(name="alice"))
    session.commit()
    session.close()
    return url


def set_revision(path, revision: str) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = ?", (revision,))


def test_a_missing_database_is_new_and_not_created(tmp_path):
    url = f"sqlite:///{tmp_path}/jupyterhub.sqlite"
    assert database.status(url)["state"] == "new"
    assert not (tmp_path / "jupyterhub.sqlite").exists()


def test_a_database_of_the_installed_jupyterhub_is_current(tmp_path):
    url = make_hub_db(tmp_path / "jupyterhub.sqlite")
    status = database.status(url)
    assert status["state"] == "current"
    assert status["revision"] == status["head"] == database.head_revision()
    assert status["kind"] == "sqlite"


def test_an_earlier_revision_is_outdated(tmp_path):
    path = tmp_path / "jupyterhub.sqlite"
    url = make_hub_db(path)
    set_revision(path, "ff1860e38070")  # the revision before JupyterHub 6's display_name
    assert database.status(url)["state"] == "outdated"


def test_a_revision_this_jupyterhub_does_not_know_is_unknown(tmp_path):
    path = tmp_path / "jupyterhub.sqlite"
    url = make_hub_db(path)
    set_revision(path, "0123456789ab")
    assert database.status(url)["state"] == "unknown"


def test_backup_is_a_private_consistent_copy_named_after_time_and_revision(tmp_path):
    url = make_hub_db(tmp_path / "jupyterhub.sqlite")
    now = datetime(2026, 11, 28, 7, 0, 0, tzinfo=UTC)
    copy = database.backup(url, tmp_path / "backups", now=now)
    assert copy.name == f"jupyterhub-20261128T070000Z-{database.head_revision()}.sqlite"
    assert copy.stat().st_mode & 0o777 == 0o600
    with sqlite3.connect(copy) as conn:
        assert conn.execute("SELECT name FROM users").fetchall() == [("alice",)]
    # A second backup in the same second does not overwrite the first.
    with pytest.raises(FileExistsError):
        database.backup(url, tmp_path / "backups", now=now)


def test_backup_of_a_missing_database_fails_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="no database at"):
        database.backup(f"sqlite:///{tmp_path}/none.sqlite", tmp_path)


def test_other_databases_are_not_backed_up_and_passwords_stay_out_of_messages():
    url = "mysql://hub:s3cret@db.example.org:3306/jupyterhub"
    with pytest.raises(NotImplementedError, match="mysql") as error:
        database.backup(url, "/nonexistent")
    assert "s3cret" not in str(error.value)
    url = "postgresql://hub:s3cret@db.example.org:5432/jupyterhub"
    assert database.redacted(url) == "postgresql://hub:[redacted]@db.example.org:5432/jupyterhub"
    assert database.kind("postgresql+psycopg2://x/y") == "postgresql"


# PostgreSQL: the client tools are faked by scripts on PATH that record their arguments, their
# environment's PGPASSWORD and their standard input (the real ones run on the testbed:
# tests/testbed/test_database.py).
FAKE_PG_TOOL = """#!/bin/sh
log={log}
echo "$(basename "$0") $*" >> "$log"
echo "PGPASSWORD=${{PGPASSWORD:-}}" >> "$log"
case "$(basename "$0")" in
  pg_dump) while [ $# -gt 0 ]; do [ "$1" = --file ] && echo dump > "$2"; shift; done ;;
  pg_restore) echo "CREATE TABLE users (id int);" ;;
  psql) cat >> "$log" ;;
esac
exit {rc}
"""


@pytest.fixture
def fake_pg_tools(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "pg.log"

    def install(rc: int = 0):
        for tool in ("pg_dump", "pg_restore", "psql"):
            path = bin_dir / tool
            path.write_text(FAKE_PG_TOOL.format(log=log, rc=rc))
            path.chmod(0o755)
        return log

    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setattr(database, "current_revision", lambda url: database.head_revision())
    return install


def test_the_login_nodes_postgresql_is_reached_over_its_socket_without_a_password(settings_data):
    settings_data["hub"]["database"] = "postgresql"
    hub = settings_from_dict(settings_data).hub
    assert database.url(hub) == "postgresql+psycopg2:///jupyterhub?host=/run/postgresql"
    # db_url (an external server) wins over the kind.
    settings_data["hub"]["db_url"] = "postgresql://hub@db.example.org/hub"
    assert (
        database.url(settings_from_dict(settings_data).hub) == "postgresql://hub@db.example.org/hub"
    )


def test_a_wrong_database_kind_or_name_is_refused_naming_the_setting(settings_data):
    settings_data["hub"]["database"] = "mysql"
    settings_data["hub"]["postgresql_database"] = "hub; DROP"
    with pytest.raises(SettingsError) as error:
        settings_from_dict(settings_data)
    assert "hub.database: must be one of sqlite, postgresql, got 'mysql'" in str(error.value)
    assert "hub.postgresql_database: must be lower-case letters" in str(error.value)


def test_postgresql_backup_is_a_private_pg_dump_named_like_the_sqlite_ones(tmp_path, fake_pg_tools):
    log = fake_pg_tools()
    now = datetime(2026, 11, 28, 7, 0, 0, tzinfo=UTC)
    url = "postgresql+psycopg2://hub:s3cret@db.example.org/jupyterhub"
    copy = database.backup(url, tmp_path / "backups", now=now)
    assert copy.name == f"jupyterhub-20261128T070000Z-{database.head_revision()}.pgdump"
    assert copy.stat().st_mode & 0o777 == 0o600
    assert copy.read_text() == "dump\n"
    calls = log.read_text()
    # Custom format, the libpq URL without the driver and without the password (it is in the
    # environment only: a command line is visible to every user of the node).
    assert f"pg_dump --format=custom --no-owner --file {copy} " in calls
    assert "--dbname postgresql://hub@db.example.org/jupyterhub" in calls
    assert "s3cret" not in calls.replace("PGPASSWORD=s3cret", "")
    assert "PGPASSWORD=s3cret" in calls


def test_a_failed_pg_dump_leaves_no_backup_and_says_why(tmp_path, fake_pg_tools):
    fake_pg_tools(rc=2)
    url = "postgresql:///jupyterhub?host=/run/postgresql"
    with pytest.raises(database.DatabaseError, match=r"pg_dump failed \(exit 2\)"):
        database.backup(url, tmp_path / "backups")
    assert list((tmp_path / "backups").iterdir()) == []


def test_postgresql_restore_replaces_the_hubs_tables_in_one_transaction(tmp_path, fake_pg_tools):
    log = fake_pg_tools()
    dump = tmp_path / "jupyterhub.pgdump"
    dump.write_text("dump")
    database.restore("postgresql+psycopg2:///jupyterhub?host=/run/postgresql", dump)
    calls = log.read_text().splitlines()
    assert calls[0] == f"pg_restore --no-owner --no-privileges --file - {dump}"
    assert calls[2] == (
        "psql --no-psqlrc --quiet --single-transaction --set ON_ERROR_STOP=1 "
        "--dbname postgresql:///jupyterhub?host=/run/postgresql"
    )
    # What psql ran: the drop first, then the dump's SQL.
    assert calls[4:] == ["DROP OWNED BY CURRENT_USER;", "CREATE TABLE users (id int);"]


def test_restore_refuses_sqlite_and_a_missing_dump(tmp_path):
    with pytest.raises(NotImplementedError, match="copying its backup file"):
        database.restore(f"sqlite:///{tmp_path}/jupyterhub.sqlite", tmp_path / "x")
    with pytest.raises(FileNotFoundError, match="no backup at"):
        database.restore("postgresql:///jupyterhub", tmp_path / "missing.pgdump")


def test_an_unreachable_postgresql_fails_with_the_drivers_words_and_no_password():
    url = "postgresql+psycopg2://hub:s3cret@/jupyterhub?host=/nonexistent-socket-dir"
    with pytest.raises(database.DatabaseError) as error:
        database.current_revision(url)
    assert "/nonexistent-socket-dir" in str(error.value)
    assert "s3cret" not in str(error.value)


def test_the_hub_uses_the_setting_or_sqlite_in_its_state_directory(settings_data):
    hub = settings_from_dict(settings_data).hub
    assert database.url(hub) == f"sqlite:///{hub.state_dir}/jupyterhub.sqlite"
    settings_data["hub"]["db_url"] = "postgresql://hub@db/jupyterhub"
    assert database.url(settings_from_dict(settings_data).hub) == "postgresql://hub@db/jupyterhub"


def test_command_line_status_and_backup_read_the_settings_file(tmp_path, capsys, settings_data):
    settings_data["hub"]["state_dir"] = str(tmp_path)
    settings = tmp_path / "hpchub.yaml"
    settings.write_text(json.dumps(settings_data))  # YAML is a superset of JSON
    make_hub_db(tmp_path / "jupyterhub.sqlite")
    assert database.main(["--settings", str(settings), "status"]) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "current"
    assert database.main(["--settings", str(settings), "backup", str(tmp_path / "b")]) == 0
    assert capsys.readouterr().out.strip().startswith(str(tmp_path / "b"))
    assert database.main(["--settings", str(tmp_path / "missing.yaml"), "status"]) == 1
