"""The hub's database on the testbed, of the kind the inventory sets (jupyterhub_database).

postgresql: Debian's PostgreSQL on the login node holds the hub's tables, listens on no TCP port,
and lets only the hub account in (peer authentication on its unix socket): every other account
of the login node — all cluster users have a shell there — is refused.
sqlite: the file is the hub account's alone (0600), no other account reads it.
Both: playbooks/backup.yml and restore.yml bring the database back as it was (users, tokens).
`make test` runs this on sqlite; the whole suite was run on postgresql on a side testbed
(docs/operations.md).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from .hubclient import HubUser, ansible_playbook, node_exec
from .topology import LOGIN, REPO, container

pytestmark = pytest.mark.testbed

HUB_ACCOUNT = "jupyterhub"
STATE = "/var/lib/jupyterhub"
VENV = "/opt/jupyterhub/venv"
PSQL = "psql --no-psqlrc --tuples-only --no-align"
USER_NAMES = "SELECT name FROM users"


@pytest.fixture(scope="module")
def kind() -> str:
    """The database kind the testbed inventory sets for the login node (default sqlite)."""
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-inventory"),
            "-i",
            str(REPO / "inventories" / "testbed" / "hosts.yml"),
            "--host",
            LOGIN,
        ],
        cwd=REPO,
        env={**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout).get("jupyterhub_database", "sqlite")


def as_account(account: str, command: str) -> subprocess.CompletedProcess:
    """A command as an account of the login node (exit status and both outputs)."""
    return subprocess.run(
        ["docker", "exec", f"--user={account}", container(LOGIN), "bash", "-c", command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_hub_runs_on_the_database_the_inventory_chooses(kind):
    settings = yaml.safe_load(node_exec(LOGIN, "cat /etc/jupyterhub/hpchub.yaml"))
    assert settings["hub"]["database"] == kind
    status = json.loads(
        node_exec(
            LOGIN,
            f"cd {STATE} && runuser -u {HUB_ACCOUNT} -- {VENV}/bin/hpchub-db "
            "--settings /etc/jupyterhub/hpchub.yaml status",
        )
    )
    assert status["kind"] == kind
    assert status["state"] == "current", status


def test_the_database_holds_the_hubs_users_and_is_the_hub_accounts_alone(kind, alice):
    assert alice.api("GET", "/user").json()["name"] == "alice"
    if kind == "postgresql":
        tables = as_account(HUB_ACCOUNT, f"{PSQL} -d jupyterhub -c '\\dt'")
        assert tables.returncode == 0, tables.stderr
        assert {"users", "api_tokens", "alembic_version"} <= {
            row.split("|")[1] for row in tables.stdout.split()
        }
        users = as_account(HUB_ACCOUNT, f"{PSQL} -d jupyterhub -c {shlex.quote(USER_NAMES)}")
        assert "alice" in users.stdout.split()
        # bob has a shell on the login node and reaches the socket: no rule lets him in, not
        # as himself, not as the hub's role, not as postgres, into no database.
        for attempt, refusal in [
            ("-d jupyterhub", 'pg_hba.conf rejects connection for host "[local]", user "bob"'),
            ("-U jupyterhub -d jupyterhub", 'Peer authentication failed for user "jupyterhub"'),
            ("-U postgres -d postgres", 'Peer authentication failed for user "postgres"'),
        ]:
            denied = as_account("bob", f"{PSQL} {attempt} -c 'SELECT 1'")
            assert denied.returncode != 0 and refusal in denied.stderr, (attempt, denied)
    else:
        owner_mode = node_exec(LOGIN, f"stat -c '%U %a' {STATE}/jupyterhub.sqlite").split()
        assert owner_mode == [HUB_ACCOUNT, "600"]
        denied = as_account("bob", f"head -c 16 {STATE}/jupyterhub.sqlite")
        assert denied.returncode != 0 and "Permission denied" in denied.stderr


def test_the_database_listens_on_no_network_port(kind):
    listening = node_exec(LOGIN, "ss -H -ltn")
    assert ":5432 " not in listening, listening
    sockets = node_exec(LOGIN, "ss -H -lx")
    if kind == "postgresql":
        # Its unix socket is where the hub reaches it.
        assert "/run/postgresql/.s.PGSQL.5432" in sockets, sockets
    else:
        assert "/run/postgresql/" not in sockets, "PostgreSQL runs although the hub uses sqlite"


def test_backup_and_restore_bring_back_the_database_as_it_was(kind, access):
    entry = next(u for u in access["users"] if u["name"] == "bob")
    bob = HubUser(access, "bob", entry["password"])
    assert bob.login().status_code == 200
    kept = bob.create_token("kept by the restore")

    backup = ansible_playbook("backup.yml")
    assert backup.returncode == 0, backup.stdout[-3000:]
    folder = sorted((REPO / ".backups" / LOGIN).iterdir())[-1]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["database"]["kind"] == kind
    dump = folder / manifest["database"]["file"]
    assert dump.name == {"sqlite": "jupyterhub.sqlite", "postgresql": "jupyterhub.pgdump"}[kind]
    assert dump.stat().st_mode & 0o777 == 0o600
    if kind == "postgresql":
        assert dump.read_bytes()[:5] == b"PGDMP"  # pg_dump's custom format

    lost = bob.create_token("made after the backup")
    restore = ansible_playbook("restore.yml", "-e", f"hub_backup_restore_from={folder}")
    assert restore.returncode == 0, restore.stdout[-3000:]

    def user_of(token: str) -> requests.Response:
        # The token alone (no login cookie of the session).
        return requests.get(
            f"{bob.base}/hub/api/user",
            headers={"Authorization": f"token {token}"},
            verify=bob.ca,
            timeout=30,
        )

    # The play waited for the hub's own port; users go through the proxy, whose route to the
    # hub comes back once the hub runs (404 until then).
    deadline = time.monotonic() + 120
    while (answer := user_of(kept)).status_code == 404 and time.monotonic() < deadline:
        time.sleep(1)
    assert answer.status_code == 200 and answer.json()["name"] == "bob", answer.text[:300]
    assert user_of(lost).status_code == 403  # the database is the one of the backup time
