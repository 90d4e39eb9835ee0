"""hpchub-db: the database's schema against the installed JupyterHub, and consistent backups.

Real sqlite databases made by JupyterHub's own ORM (as the hub makes them), no fakes.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime

import pytest
from hpchub_config import database
from hpchub_config.settings import settings_from_dict
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


def test_other_databases_are_not_backed_up_yet_and_passwords_stay_out_of_messages():
    url = "postgresql://hub:s3cret@db.example.org:5432/jupyterhub"
    with pytest.raises(NotImplementedError, match="postgresql") as error:
        database.backup(url, "/nonexistent")
    assert "s3cret" not in str(error.value)
    assert database.redacted(url) == "postgresql://hub:[redacted]@db.example.org:5432/jupyterhub"
    assert database.kind("postgresql+psycopg2://x/y") == "postgresql"


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
