"""roles/jupyterhub/files/hpchub-existing-hub.py: finding and adopting a hand-rolled hub."""

from __future__ import annotations

import importlib.util
import json
import os
import sqlite3
import stat
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "roles/jupyterhub/files/hpchub-existing-hub.py"
spec = importlib.util.spec_from_file_location("existing_hub", SCRIPT)
existing_hub = importlib.util.module_from_spec(spec)
spec.loader.exec_module(existing_hub)

HAND_ROLLED = """\
[Unit]
Description=JupyterHub
After=network.target

[Service]
ExecStart=/opt/jupyterhub/bin/jupyterhub -f /etc/jupyterhub/jupyterhub_config.py
WorkingDirectory=/var/lib/jupyterhub
"""
OURS = """\
# Ansible managed
[Unit]
Description=JupyterHub (hpchub)

[Service]
User=jupyterhub
ExecStart=/opt/jupyterhub/venv/bin/jupyterhub --config=/etc/jupyterhub/jupyterhub_config.py
"""


@pytest.fixture
def site(tmp_path):
    units = tmp_path / "systemd"
    config = tmp_path / "etc" / "jupyterhub"
    state = tmp_path / "var" / "lib" / "jupyterhub"
    for d in (units, config, state):
        d.mkdir(parents=True)
    return {"units": units, "config": config, "state": state, "tmp": tmp_path}


def run(site, *extra, hub_user="jupyterhub", capsys=None) -> dict:
    argv = [
        "--config-dir",
        str(site["config"]),
        "--state-dir",
        str(site["state"]),
        "--hub-user",
        hub_user,
        "--unit-dir",
        str(site["units"]),
        *extra,
    ]
    assert existing_hub.main(argv) == 0
    return json.loads(capsys.readouterr().out)


def hand_rolled(site) -> None:
    (site["units"] / "jupyterhub.service").write_text(HAND_ROLLED)
    (site["config"] / "jupyterhub_config.py").write_text("c.JupyterHub.port = 8000\n")
    secret = site["config"] / "announcement_cookie_secret"
    secret.write_text("0" * 64)
    secret.chmod(0o644)
    db = sqlite3.connect(site["state"] / "jupyterhub.sqlite")
    db.execute("CREATE TABLE alembic_version (version_num VARCHAR(32))")
    db.execute("INSERT INTO alembic_version VALUES ('4621fec11365')")
    db.commit()
    db.close()
    (site["state"] / "jupyterhub.sqlite").chmod(0o644)
    (site["state"] / "jupyterhub_cookie_secret").write_text("1" * 64)
    (site["state"] / "jupyterhub-proxy.pid").write_text("1234\n")


def test_a_node_without_a_hub_has_nothing_to_adopt(site, capsys):
    report = run(site, capsys=capsys)
    assert report["found"] is False
    assert report["units"] == [] and report["database"] is None and report["findings"] == []


def test_hpchubs_own_hub_is_not_a_foreign_one(site, capsys):
    # The role's own unit templates, as it installs them.
    for name in ("jupyterhub.service", "jupyterhub-proxy.service"):
        template = SCRIPT.parents[1] / "templates" / f"{name}.j2"
        (site["units"] / name).write_text(template.read_text())
    me = existing_hub.owner(os.stat(site["state"]))
    sqlite3.connect(site["state"] / "jupyterhub.sqlite").close()
    report = run(site, hub_user=me, capsys=capsys)
    assert report["found"] is False
    assert [u["ours"] for u in report["units"]] == [True, True]
    assert report["findings"] == []


def test_a_hand_rolled_hub_is_described_in_sentences(site, capsys):
    hand_rolled(site)
    report = run(site, capsys=capsys)
    assert report["found"] is True
    (unit,) = report["units"]
    assert unit["ours"] is False and unit["user"] == "root"
    assert report["database"]["revision"] == "4621fec11365"
    text = "\n".join(report["findings"])
    assert "jupyterhub.service" in text and "was not installed by hpchub" in text
    assert "as root" in text
    assert f"the hub database {site['state'] / 'jupyterhub.sqlite'} belongs to" in text
    assert "not to the hub account jupyterhub" in text and "4621fec11365" in text
    assert f"{site['config'] / 'announcement_cookie_secret'} is readable by every user" in text
    # Reading changes nothing.
    assert (site["config"] / "announcement_cookie_secret").exists()


def test_adopting_keeps_the_database_and_cookie_secret_and_archives_the_rest(site, capsys):
    hand_rolled(site)
    archive = site["tmp"] / "adopted" / "20261128"
    report = run(site, "--adopt", str(archive), capsys=capsys)
    # What carries the users over stays where the hub reads it.
    assert (site["state"] / "jupyterhub.sqlite").is_file()
    assert (site["state"] / "jupyterhub_cookie_secret").read_text() == "1" * 64
    # Everything else the old hub left is out of the hub's folders, in a 0700 archive.
    assert sorted(p.name for p in site["config"].iterdir()) == []
    assert sorted(p.name for p in site["state"].iterdir()) == [
        "jupyterhub.sqlite",
        "jupyterhub_cookie_secret",
    ]
    assert stat.S_IMODE(archive.stat().st_mode) == 0o700
    moved = archive / (site["config"] / "announcement_cookie_secret").relative_to("/")
    assert moved.read_text() == "0" * 64
    assert (archive / (site["state"] / "jupyterhub-proxy.pid").relative_to("/")).exists()
    assert sorted(report["moved"]) == sorted(
        str(p)
        for p in (
            site["config"] / "announcement_cookie_secret",
            site["config"] / "jupyterhub_config.py",
            site["state"] / "jupyterhub-proxy.pid",
        )
    )


def test_adopt_does_nothing_when_the_hub_is_hpchubs(site, capsys):
    (site["units"] / "jupyterhub.service").write_text(OURS)
    (site["config"] / "hpchub.yaml").write_text("hub: {}\n")
    report = run(site, "--adopt", str(site["tmp"] / "adopted"), capsys=capsys)
    assert "moved" not in report
    assert (site["config"] / "hpchub.yaml").exists()
    assert not (site["tmp"] / "adopted").exists()
