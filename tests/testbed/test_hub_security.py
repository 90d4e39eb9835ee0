"""Security properties of the deployed hub: each would fail if the protection broke."""

from __future__ import annotations

import json
import textwrap

import pytest

from .hubclient import node_exec
from .topology import LOGIN

pytestmark = pytest.mark.testbed


def post_from_the_job(user, body: str, token_expr: str = "os.environ['JUPYTERHUB_API_TOKEN']"):
    """POST to the hub's port-report API from inside the user's running notebook job."""
    code = textwrap.dedent(
        f"""
        import os, urllib.request, urllib.error
        url = os.environ['JUPYTERHUB_API_URL'].rstrip('/') + '/batchspawner'
        headers = {{'Authorization': 'token ' + {token_expr},
                   'Content-Type': 'application/json'}}
        req = urllib.request.Request(url, data={body!r}.encode(), method='POST', headers=headers)
        try:
            print(urllib.request.urlopen(req, timeout=10).status)
        except urllib.error.HTTPError as e:
            print(e.code)
        """
    )
    return int(user.run_code(code).strip())


@pytest.mark.parametrize(
    "body",
    [
        json.dumps({"exec_prefix": "touch /tmp/hpchub-pwned; sudo -E -u {username}"}),
        json.dumps({"port": 8888, "exec_prefix": "touch /tmp/hpchub-pwned"}),
        json.dumps({"port": "8888"}),
        json.dumps({"port": 0}),
        json.dumps({"port": 70000}),
        json.dumps({"port": True}),
        "not json",
    ],
)
def test_port_api_refuses_anything_but_a_port(alice, alice_server, body):
    """With the job's own token (stock batchspawner would set exec_prefix and run it)."""
    status = post_from_the_job(alice, body)
    assert status == 400
    assert node_exec(LOGIN, "test ! -e /tmp/hpchub-pwned && echo clean").strip() == "clean"
    # The server is unharmed and still routed where it was.
    assert alice.server_api("GET", "api/status").status_code == 200


def test_port_api_refuses_to_move_a_running_server(alice, alice_server):
    status = post_from_the_job(alice, json.dumps({"port": 1234}))
    assert status in (400, 403)  # 403 when the hub restarted since the spawn
    assert alice.server_api("GET", "api/status").status_code == 200


def test_port_api_refuses_tokens_that_are_not_a_servers_token(alice, alice_server):
    # alice's own API token (not her server's) cannot report ports.
    status = post_from_the_job(alice, json.dumps({"port": 8888}), token_expr=repr(alice.token))
    assert status == 403


def test_user_cannot_reach_another_users_server(alice, bob, alice_server):
    response = bob.session.get(
        f"{bob.base}/user/alice/api/status", headers=bob.auth, allow_redirects=False, timeout=30
    )
    assert response.status_code in (302, 403)
    if response.status_code == 302:
        assert "/user/alice/api/status" not in response.headers.get("Location", "")
    assert bob.api("GET", "/users/alice").status_code == 404
    stolen = bob.api("POST", "/users/alice/server", json={"profile": "small"})
    assert stolen.status_code in (403, 404)


def test_users_cannot_read_each_others_homes():
    out = node_exec(LOGIN, "cat /home/alice/.hpchub/logs/* 2>&1 || true", user="bob")
    assert "Permission denied" in out
    assert node_exec(LOGIN, "stat -c %a /home/alice").strip() == "700"


def test_hub_and_proxy_run_unprivileged():
    for unit in ("jupyterhub", "jupyterhub-proxy"):
        pid = node_exec(LOGIN, f"systemctl show -p MainPID --value {unit}").strip()
        user = node_exec(LOGIN, f"ps -o user= -p {pid}").strip()
        assert user == "jupyterhub", f"{unit} runs as {user}"


def test_sudo_allows_only_slurm_commands_as_cluster_users():
    rules = node_exec(LOGIN, "sudo -l -U jupyterhub")
    commands = rules.split(f"may run the following commands on {LOGIN}:")[1]
    assert "/usr/bin/sbatch, /usr/bin/squeue, /usr/bin/scancel" in commands
    assert "ALL : ALL" not in commands
    check = "sudo -n -u {target} {cmd} >/dev/null 2>&1 && echo allowed || echo refused"

    def as_hub(target: str, cmd: str) -> str:
        return node_exec(
            LOGIN, f"runuser -u jupyterhub -- bash -c '{check.format(target=target, cmd=cmd)}'"
        ).strip()

    assert as_hub("alice", "/usr/bin/squeue -h") == "allowed"
    assert as_hub("root", "/usr/bin/squeue -h") == "refused"
    assert as_hub("daemon", "/usr/bin/squeue -h") == "refused"
    assert as_hub("alice", "/usr/bin/id") == "refused"
    assert as_hub("alice", "/bin/bash -c true") == "refused"


def test_secrets_are_0600_and_owned_by_the_hub():
    for path in (
        "/etc/jupyterhub/secrets/proxy_auth_token",
        "/etc/jupyterhub/secrets/hub.key",
        "/var/lib/jupyterhub/jupyterhub_cookie_secret",
        "/var/lib/jupyterhub/announcement_cookie_secret",
    ):
        assert node_exec(LOGIN, f"stat -c '%a %U' {path}").strip() == "600 jupyterhub", path
    assert node_exec(LOGIN, "stat -c '%a' /var/lib/jupyterhub").strip() == "700"


def test_proxy_api_listens_on_localhost_only():
    sockets = node_exec(LOGIN, "ss -ltnH")
    listeners = {line.split()[3] for line in sockets.splitlines()}
    assert "127.0.0.1:8001" in listeners
    assert not any(
        addr.endswith(":8001") and not addr.startswith("127.0.0.1") for addr in listeners
    )


def test_hub_serves_https_only_with_its_certificate(access):
    import requests

    with pytest.raises(requests.exceptions.SSLError):
        requests.get(access["hub_url"] + "/hub/login", verify=True, timeout=10)
    plain = access["hub_url"].replace("https://", "http://") + "/hub/login"
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(plain, timeout=10)


def test_idle_culler_has_only_the_scopes_it_needs(admin):
    services = admin.api("GET", "/services").json()
    assert set(services) >= {"announcement", "idle-culler"}
    # The role's scopes are checked in tests/unit/test_configure.py; here: it is the only
    # role the culler has, and the announcement service has none at all.
    assert services["idle-culler"]["roles"] == ["idle-culler"]
    assert services["announcement"]["roles"] == []
