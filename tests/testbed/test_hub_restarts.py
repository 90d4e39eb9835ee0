"""Running notebooks survive what admins do to the hub: restarts of the hub and the proxy."""

from __future__ import annotations

import shlex
import time

import pytest

from .hubclient import node_exec, slurm_jobs
from .topology import LOGIN

pytestmark = pytest.mark.testbed


# The hub API speaks mutual TLS only: probe it as the proxy would (its client certificate,
# the hub's CA), as root on the login node.
TLS_DIR = "/var/lib/jupyterhub/internal-tls"
HUB_API_PROBE = (
    'python3 -c "import ssl, urllib.request as u; '
    f"c = ssl.create_default_context(cafile='{TLS_DIR}/hub-ca/hub-ca.crt'); "
    f"c.load_cert_chain('{TLS_DIR}/proxy-client/proxy-client.crt', "
    f"'{TLS_DIR}/proxy-client/proxy-client.key'); "
    "print(u.urlopen('https://127.0.0.1:881/hub/api/', timeout=3, context=c).status)\" "
    "2>/dev/null || true"
)


def hub_api_answers() -> bool:
    return node_exec(LOGIN, HUB_API_PROBE).strip() == "200"


def wait_hub_api(timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if hub_api_answers():
            return
        time.sleep(0.5)
    raise AssertionError("the hub API did not come back")


def test_running_session_survives_a_hub_restart(alice, alice_server):
    job = alice_server["job"]
    before = alice.run_code("import os; print(os.getpid())").strip()
    node_exec(LOGIN, "systemctl restart jupyterhub")
    wait_hub_api()
    # Same job, same server: the kernel's server process is the one from before the restart.
    assert [j.job_id for j in slurm_jobs("alice")] == [job.job_id]
    model = alice.server_model()
    assert model is not None and model["ready"]
    alice.wait_reachable(timeout=30)
    assert alice.run_code("print('still here')").strip() == "still here"
    assert before  # a kernel ran before the restart too


def wait_hub_settled(seconds: int = 3) -> None:
    """Wait until the hub has finished starting, its own start-up route check included (it logs
    "JupyterHub is now running" after it), plus a few seconds. Its process age is not enough: on
    a busy machine the start takes longer than any fixed age."""
    wait_hub_api()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        pid = node_exec(LOGIN, "systemctl show -p MainPID --value jupyterhub").strip()
        started = node_exec(
            LOGIN,
            f"journalctl -u jupyterhub _PID={pid} --no-pager -o cat | "
            "grep -c 'JupyterHub is now running' || true",
        ).strip()
        if pid != "0" and started not in ("", "0"):
            time.sleep(seconds)
            return
        time.sleep(1)
    raise AssertionError("the hub did not finish starting within 120 s")


def test_routes_come_back_within_seconds_after_a_proxy_restart(alice, alice_server):
    """Stock JupyterHub re-adds an external proxy's routes only every 5 minutes."""
    # A hub that just started re-checks all routes once by itself: that must not be what
    # restores them here.
    wait_hub_settled()
    since = node_exec(LOGIN, "date +%s").strip()
    node_exec(LOGIN, "systemctl restart jupyterhub-proxy")
    restarted = time.monotonic()
    deadline = restarted + 60
    status = None
    while time.monotonic() < deadline:
        try:
            status = alice.server_api("GET", "api/status", timeout=5).status_code
        except Exception:  # noqa: BLE001 - the proxy is still starting
            status = None
        if status == 200:
            break
        time.sleep(0.25)
    seconds = time.monotonic() - restarted
    assert status == 200, f"alice's route did not come back within 60 s (last status {status})"
    print(f"\nroute restored {seconds:.1f} s after the proxy restart")
    log = node_exec(LOGIN, f"journalctl -u jupyterhub --since @{since} --no-pager")
    assert "The proxy lost its routes" in log


def test_hub_restarts_itself_after_a_crash(alice_server):
    pid = node_exec(LOGIN, "systemctl show -p MainPID --value jupyterhub").strip()
    node_exec(LOGIN, f"kill -9 {pid}")
    time.sleep(4)  # RestartSec=3
    wait_hub_api()
    new_pid = node_exec(LOGIN, "systemctl show -p MainPID --value jupyterhub").strip()
    assert new_pid not in ("0", pid)
    assert alice_server["job"].job_id in {j.job_id for j in slurm_jobs("alice")}


def test_a_mistyped_settings_key_stops_the_hub_with_an_error_naming_it(alice_server):
    settings = "/etc/jupyterhub/hpchub.yaml"
    venv_python = "/opt/jupyterhub/venv/bin/python"
    node_exec(LOGIN, f"cp -p {settings} {settings}.test-backup")
    try:
        node_exec(
            LOGIN,
            f"{venv_python} -c \"import yaml; p='{settings}'; d=yaml.safe_load(open(p)); "
            f"d['spawner']['poll_intervall'] = 5; yaml.safe_dump(d, open(p, 'w'))\"",
        )
        since = int(node_exec(LOGIN, "date +%s").strip())
        node_exec(LOGIN, "systemctl restart jupyterhub")
        expected = "spawner.poll_intervall: unknown key (did you mean spawner.poll_interval?)"
        # The hub needs a few seconds to import JupyterHub before it reads its settings (more
        # on a busy 2-core machine): wait for its error, then check it never answered.
        deadline = time.monotonic() + 60
        log = ""
        while expected not in log and time.monotonic() < deadline:
            time.sleep(1)
            log = node_exec(LOGIN, f"journalctl -u jupyterhub --since @{since} --no-pager")
        assert expected in log
        assert not hub_api_answers()
    finally:
        node_exec(LOGIN, f"mv {settings}.test-backup {settings}")
        node_exec(LOGIN, "systemctl reset-failed jupyterhub; systemctl restart jupyterhub")
        wait_hub_api()
    # The notebook job was never touched.
    assert alice_server["job"].job_id in {j.job_id for j in slurm_jobs("alice")}


def test_the_idle_culler_reaches_the_hub_and_stops_an_idle_server(alice, alice_server):
    """The hub's own culler service, run as configured (its command line and environment, as
    the hub started it) with a timeout of seconds instead of an hour: it talks to the hub over
    internal TLS and stops alice's idle server, whose job leaves the queue."""
    job = alice_server["job"]
    # The hub starts its services last: after a restart by an earlier test, give it time.
    deadline, pid = time.monotonic() + 60, ""
    while not pid and time.monotonic() < deadline:
        pid = node_exec(
            LOGIN, "pgrep -u jupyterhub -f 'jupyterhub_idle_culler' | head -1", check=False
        ).strip()
        time.sleep(0 if pid else 1)
    assert pid, "the idle-culler service does not run"
    argv = node_exec(LOGIN, f"tr '\\0' '\\n' < /proc/{pid}/cmdline").splitlines()
    assert "--ssl-enabled=True" in argv
    argv = [a if not a.startswith("--timeout=") else "--timeout=5" for a in argv]
    time.sleep(6)  # idle for longer than the timeout
    # The service's token goes from its environment to this one through a root-only file, never
    # through a command line (every user of the login node can read those in /proc).
    env_file = "/run/hpchub-culler-test.env"
    wanted = "^JUPYTERHUB_(API_TOKEN|API_URL|SERVICE_NAME)="
    # Its first round runs at once; 20 s leave time for the stop (the culler waits for it).
    log = node_exec(
        LOGIN,
        f"umask 077; tr '\\0' '\\n' < /proc/{pid}/environ | grep -E '{wanted}' > {env_file}; "
        f'while IFS= read -r line; do export "$line"; done < {env_file}; rm -f {env_file}; '
        f"cd /var/lib/jupyterhub && timeout 20 runuser -u jupyterhub -- "
        f"{' '.join(shlex.quote(a) for a in argv)} 2>&1; true",
    )
    assert "CERTIFICATE_VERIFY_FAILED" not in log, log[-2000:]
    assert "Culling server alice" in log or "Culling server for alice" in log, log[-2000:]
    deadline = time.monotonic() + 60
    while alice.server_model() is not None or job.job_id in {j.job_id for j in slurm_jobs("alice")}:
        assert time.monotonic() < deadline, "the culled server or its job is still there"
        time.sleep(1)
