"""Security properties of the deployed hub: each would fail if the protection broke."""

from __future__ import annotations

import json
import subprocess
import textwrap
import time

import pytest

from .hubclient import node_exec
from .topology import DEMO_GROUP, LOGIN, container

pytestmark = pytest.mark.testbed


def post_from_the_job(user, body: str, token_expr: str = "os.environ['JUPYTERHUB_API_TOKEN']"):
    """POST to the hub's port-report API from inside the user's running notebook job."""
    code = textwrap.dedent(
        f"""
        import os, ssl, urllib.request, urllib.error
        url = os.environ['JUPYTERHUB_API_URL'].rstrip('/') + '/batchspawner'
        headers = {{'Authorization': 'token ' + {token_expr},
                   'Content-Type': 'application/json'}}
        req = urllib.request.Request(url, data={body!r}.encode(), method='POST', headers=headers)
        # The hub API is mutual TLS: the job's own certificate, the hub's CA.
        tls = ssl.create_default_context(cafile=os.environ['JUPYTERHUB_SSL_CLIENT_CA'])
        tls.load_cert_chain(os.environ['JUPYTERHUB_SSL_CERTFILE'],
                            os.environ['JUPYTERHUB_SSL_KEYFILE'])
        try:
            print(urllib.request.urlopen(req, timeout=10, context=tls).status)
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
    # At alice's own origin (per-user subdomains), with bob's token.
    response = bob.session.get(
        f"{alice.server_base}/user/alice/api/status",
        headers=bob.auth,
        allow_redirects=False,
        timeout=30,
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


# --- sudo: the hub account runs two root helpers and nothing else ------------------------

SLURM_HELPER = "/usr/local/libexec/hpchub/hpchub-slurm"
AUTH_HELPER = "/usr/local/libexec/hpchub/hpchub-auth"


def as_hub(*argv: str, stdin: str | None = None, env: dict | None = None):
    """Run argv on the login node as the hub account, as a compromised hub could."""
    prefix = ["runuser", "-u", "jupyterhub", "--"]
    if env:
        prefix += ["env", *(f"{name}={value}" for name, value in env.items())]
    return subprocess.run(
        ["docker", "exec", "-i", container(LOGIN), *prefix, *argv],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def all_jobs() -> set[str]:
    """Every job Slurm knows about, including those that ended in the last minutes."""
    return set(node_exec(LOGIN, "squeue -h -t all -o %i").split())


def test_sudo_lets_the_hub_run_only_its_two_helpers_as_root():
    listing = as_hub("sudo", "-n", "-l")
    assert listing.returncode == 0, listing.stderr
    rules = " ".join(listing.stdout.split(f"may run the following commands on {LOGIN}:")[1].split())
    runas, tags = rules.split(" ", 1)[0], rules.split(") ", 1)[1]
    assert runas == "(root)"
    assert "NOPASSWD:" in tags and "NOSETENV:" in tags
    commands = tags.replace("NOPASSWD:", "").replace("NOSETENV:", "").strip()
    assert sorted(c.strip() for c in commands.split(",")) == sorted([SLURM_HELPER, AUTH_HELPER])
    assert "ALL" not in commands and " SETENV" not in rules

    for argv, error in [
        (["/usr/bin/sbatch", "--wrap=id"], "a password is required"),
        (["-u", "alice", "/usr/bin/squeue", "-h"], "a password is required"),
        (["/usr/bin/id"], "a password is required"),
        (["/bin/bash", "-c", "true"], "a password is required"),
        (["-u", "alice", SLURM_HELPER, "query", "alice", "1"], "a password is required"),
        (["-E", SLURM_HELPER, "query", "alice", "1"], "not allowed to preserve the environment"),
        (["SLURM_CONF=/tmp/x", SLURM_HELPER, "query", "alice", "1"], "not allowed to set"),
    ]:
        result = as_hub("sudo", "-n", *argv)
        assert result.returncode != 0, argv
        assert error in result.stderr, (argv, result.stderr)


@pytest.mark.parametrize(
    "argv",
    [
        ["submit", "alice", "--wrap=id"],
        ["submit", "alice", "--uid=0"],
        ["submit", "alice", "--export=ALL"],
        ["submit", "root"],
        ["submit", "daemon"],
        ["submit", "jupyterhub"],
        ["submit", "alice;id"],
        ["query", "alice", "1;id"],
        ["query", "alice", "1", "-o", "%all"],
        ["cancel", "alice", "-u alice"],
        ["cancel", "alice"],
        ["sbatch", "alice"],
        ["jobs", "alice"],
        ["jobs", "-u", "root"],
        ["jobs", "--format=%all"],
    ],
)
def test_slurm_helper_refuses_anything_but_its_four_commands(argv):
    before = all_jobs()
    result = as_hub("sudo", "-n", SLURM_HELPER, *argv, stdin="#!/bin/bash\nid\n")
    assert result.returncode == 2, result
    assert result.stderr.startswith("hpchub-slurm: refused: ")
    assert result.stderr.count("\n") == 1
    assert all_jobs() == before  # nothing was submitted


def test_the_hub_wide_job_query_shows_the_hubs_jobs_and_nothing_else(alice_server):
    """`hpchub-slurm jobs` runs squeue as root (PrivateData would hide other users' jobs):
    it must show the hub's notebook jobs only, not every job on the cluster."""
    other = node_exec(
        LOGIN, "sbatch --parsable -J not-a-notebook -o /dev/null --wrap 'sleep 120'", user="alice"
    ).strip()
    try:
        result = as_hub("sudo", "-n", SLURM_HELPER, "jobs")
        assert result.returncode == 0, result.stderr
        jobs = {line.split("|")[0]: line.split("|") for line in result.stdout.splitlines()}
        job = alice_server["job"]
        assert jobs[job.job_id][1:3] == ["alice", "RUNNING"]
        assert other.split(";")[0] not in jobs
        assert all(fields[1] != "root" for fields in jobs.values())
    finally:
        node_exec(LOGIN, f"scancel {other.split(';')[0]}", user="alice", check=False)


@pytest.fixture
def late_accounts():
    """Accounts created after deployment: a system account in the hub's allowed group (the
    old deploy-time sudoers snapshot would have let the hub act as it) and an ordinary
    account outside the group. Removed afterwards."""
    group = DEMO_GROUP[0]
    node_exec(
        LOGIN,
        f"useradd --system --no-create-home --shell /bin/bash --groups {group} hpchub-late-sys"
        " && useradd --no-create-home --shell /bin/bash hpchub-late-user"
        " && echo 'hpchub-late-sys:Late-pw-1' | chpasswd",
    )
    uids = {
        name: int(node_exec(LOGIN, f"id -u {name}"))
        for name in ("hpchub-late-sys", "hpchub-late-user")
    }
    yield uids
    node_exec(LOGIN, "userdel hpchub-late-sys; userdel hpchub-late-user", check=False)


def test_accounts_created_after_deployment_are_checked_at_call_time(late_accounts):
    assert late_accounts["hpchub-late-sys"] < 1000 <= late_accounts["hpchub-late-user"]
    before = all_jobs()
    for argv, reason in [
        (["submit", "hpchub-late-sys"], "is below min_uid 1000"),
        (["query", "hpchub-late-sys", "1"], "is below min_uid 1000"),
        (["cancel", "hpchub-late-sys", "1"], "is below min_uid 1000"),
        (["submit", "hpchub-late-user"], "is in none of the allowed groups"),
    ]:
        result = as_hub("sudo", "-n", SLURM_HELPER, *argv, stdin="#!/bin/bash\nid\n")
        assert result.returncode == 2 and reason in result.stderr, (argv, result.stderr)
    assert all_jobs() == before
    # Its password is right, but PAM is never asked for a system account.
    login = as_hub("sudo", "-n", AUTH_HELPER, stdin="hpchub-late-sys\nLate-pw-1\n")
    assert login.returncode == 1 and "is below min_uid 1000" in login.stderr


def test_the_callers_environment_reaches_neither_slurm_nor_the_job(alice_server, job_dir):
    hostile = {
        "SLURM_CONF": "/nonexistent/slurm.conf",
        "LD_PRELOAD": "/nonexistent/hpchub-evil.so",
        "BASH_ENV": "/tmp/hpchub-evil.sh",
        "SBATCH_EXPORT": "ALL",
        "HPCHUB_MARKER": "from-the-caller",
    }
    job_id = alice_server["job"].job_id
    # This SLURM_CONF breaks squeue when it is passed on ...
    direct = node_exec(
        LOGIN,
        f"runuser -u alice -- env SLURM_CONF=/nonexistent/slurm.conf squeue -h -j {job_id}",
        check=False,
    )
    assert "RUNNING" not in direct
    # ... but the helper's squeue never sees it.
    query = as_hub("sudo", "-n", SLURM_HELPER, "query", "alice", job_id, env=hostile)
    assert query.returncode == 0, query.stderr
    assert query.stdout.startswith("RUNNING|")

    # A job that prints its environment: sbatch exports its own environment by default.
    script = (
        "#!/bin/bash\n#SBATCH --job-name=hpchub-env-test\n#SBATCH --time=2\n"
        f"#SBATCH --mem=256M\n#SBATCH --output={job_dir}/env.out\nenv\n"
    )
    submitted = as_hub("sudo", "-n", SLURM_HELPER, "submit", "alice", stdin=script, env=hostile)
    assert submitted.returncode == 0, submitted.stderr
    new_job = submitted.stdout.strip().split(";")[0]
    assert new_job.isdigit()
    deadline = time.monotonic() + 90
    while new_job in set(node_exec(LOGIN, "squeue -h -o %i").split()):
        assert time.monotonic() < deadline, f"job {new_job} did not end"
        time.sleep(1)
    env = node_exec(LOGIN, f"cat {job_dir}/env.out", user="alice").splitlines()
    assert "USER=alice" in env and "HOME=/home/alice" in env
    for name, value in hostile.items():
        assert f"{name}={value}" not in env, name  # (slurmd sets its own SLURM_CONF)
    for name in ("LD_PRELOAD", "BASH_ENV", "SBATCH_EXPORT", "HPCHUB_MARKER"):
        assert not any(line.startswith(f"{name}=") for line in env), name


def test_the_hub_account_cannot_read_password_hashes():
    groups = node_exec(LOGIN, "id -Gn jupyterhub").split()
    assert "shadow" not in groups
    assert as_hub("cat", "/etc/shadow").returncode != 0
    # Nor does the running hub have the group from an older deployment.
    pid = node_exec(LOGIN, "systemctl show -p MainPID --value jupyterhub").strip()
    status = node_exec(LOGIN, f"cat /proc/{pid}/status")
    shadow_gid = node_exec(LOGIN, "getent group shadow | cut -d: -f3").strip()
    (line,) = [line for line in status.splitlines() if line.startswith("Groups:")]
    assert shadow_gid not in line.split()[1:]


def test_passwords_are_checked_by_the_auth_helper_from_stdin_only(access):
    password = next(u for u in access["users"] if u["name"] == "alice")["password"]
    assert as_hub("sudo", "-n", AUTH_HELPER, stdin=f"alice\n{password}\n").returncode == 0
    wrong = as_hub("sudo", "-n", AUTH_HELPER, stdin="alice\nnot-her-password\n")
    assert wrong.returncode == 1 and "not-her-password" not in wrong.stderr
    root = as_hub("sudo", "-n", AUTH_HELPER, stdin="root\nroot\n")
    assert root.returncode == 1 and "below min_uid" in root.stderr
    # Nothing on the command line, where every user of the login node could read it.
    argv = as_hub("sudo", "-n", AUTH_HELPER, "alice", password, stdin="")
    assert argv.returncode == 2


def test_job_logs_are_private_to_their_owner(alice_server):
    job_id = alice_server["job"].job_id
    logs = "/home/alice/.hpchub/logs"
    assert node_exec(LOGIN, f"stat -c %a {logs}").strip() == "700"
    assert node_exec(LOGIN, f"stat -c %a {logs}/jupyterlab-{job_id}.log").strip() == "600"


def test_other_users_cannot_read_a_job_script_and_its_token(alice_server):
    """The batch script carries the server's API token (there is no other way into an
    --export=NONE job): Slurm shows it to its owner only."""
    job_id = alice_server["job"].job_id
    mine = node_exec(LOGIN, f"scontrol write batch_script {job_id} -", user="alice")
    assert "export JUPYTERHUB_API_TOKEN=" in mine
    theirs = node_exec(
        LOGIN, f"scontrol write batch_script {job_id} - 2>&1", user="bob", check=False
    )
    assert "JUPYTERHUB_API_TOKEN" not in theirs


DEBUG_DROP_IN = "/etc/jupyterhub/jupyterhub_config.d/99-hpchub-test-debug.py"


@pytest.fixture
def hub_at_debug_level():
    """The hub restarted with log level DEBUG (a site drop-in), and back afterwards."""
    from .test_hub_restarts import wait_hub_api

    node_exec(LOGIN, f"echo 'c.JupyterHub.log_level = \"DEBUG\"' > {DEBUG_DROP_IN}")
    since = node_exec(LOGIN, "date +%s").strip()
    node_exec(LOGIN, "systemctl restart jupyterhub")
    wait_hub_api()
    yield since
    node_exec(LOGIN, f"rm -f {DEBUG_DROP_IN} && systemctl restart jupyterhub")
    wait_hub_api()


def test_no_server_token_in_the_hub_journal_even_at_debug_level(bob, hub_at_debug_level):
    if bob.server_model() is not None:
        bob.stop_server()
    bob.start_server({"profile": "small"})
    try:
        token = bob.run_code("import os; print(os.environ['JUPYTERHUB_API_TOKEN'])").strip()
    finally:
        bob.stop_server()
    assert len(token) >= 32
    journal = node_exec(
        LOGIN, f"journalctl -u jupyterhub --since @{hub_at_debug_level} --no-pager -o cat"
    )
    assert "[D " in journal  # the hub really logged at DEBUG
    assert "bob: submitting a notebook job: /usr/bin/sudo -n " in journal
    assert token not in journal
    assert "JUPYTERHUB_API_TOKEN" not in journal


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
    assert "127.0.0.1:801" in listeners
    assert not any(addr.endswith(":801") and not addr.startswith("127.0.0.1") for addr in listeners)


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
