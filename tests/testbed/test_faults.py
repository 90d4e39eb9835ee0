"""Faults injected into the running testbed: the hub tells users what happened, fast.

These tests break things on purpose (a notebook server that crashes on start-up, a compute
node that dies under a running notebook) and restore them afterwards.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from .hubclient import HubError, node_exec, slurm_jobs
from .topology import COMPUTE_NODES, LOGIN, container

pytestmark = pytest.mark.testbed

CRASHING_CONFIG = "/home/alice/.jupyter/jupyter_server_config.py"


@pytest.fixture
def crashing_server_config(no_server):
    """alice's own Jupyter config makes her server crash on start-up (as a typo would)."""
    node_exec(
        LOGIN,
        "mkdir -p /home/alice/.jupyter && printf '%s\\n' 'import sys'"
        " 'print(\"injected fault\", file=sys.stderr)' 'sys.exit(3)' > " + CRASHING_CONFIG,
        user="alice",
    )
    yield
    node_exec(LOGIN, f"rm -f {CRASHING_CONFIG}", user="alice")


def test_job_that_dies_before_its_server_starts_fails_fast_with_the_log_path(
    alice, crashing_server_config
):
    started = time.monotonic()
    response = alice.request_server({"profile": "small"})
    if response.status_code == 500:  # failed within the REST call's 10 s
        message = response.json()["message"]
    else:
        assert response.status_code == 202, response.text
        with pytest.raises(HubError) as failure:
            alice.wait_ready(timeout=120)
        message = str(failure.value)
    seconds = time.monotonic() - started
    assert "ended" in message and "before JupyterLab started" in message, message
    log_path = message.split("Its log is ")[1].split(" on the cluster")[0]
    assert log_path.startswith("~/.hpchub/logs/jupyterlab-")
    log = node_exec(LOGIN, f"cat {log_path.replace('~', '/home/alice')}", user="alice")
    assert "injected fault" in log
    # Far below the 300 s start timeout that stock batchspawner would wait.
    assert seconds < 60, f"the failure took {seconds:.0f} s to reach the user"
    print(f"\nspawn failure reported {seconds:.1f} s after the request")
    assert slurm_jobs("alice") == []


def docker(*args: str) -> None:
    subprocess.run(["docker", *args], check=True, capture_output=True, timeout=120)


def node_state(node: str) -> str:
    # One line per partition the node is in (the GPU node is in two): the same state on each.
    return " ".join(sorted(set(node_exec(LOGIN, f"sinfo -h -n {node} -o %t").split())))


def wait_for(condition, timeout: float, what: str, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_dead_compute_node_stops_the_server_and_a_new_spawn_goes_elsewhere(alice, no_server):
    alice.start_server({"profile": "small"})
    (job,) = slurm_jobs("alice")
    dead = job.node
    (survivor,) = set(COMPUTE_NODES) - {dead}
    killed = time.monotonic()
    docker("kill", container(dead))
    try:
        # Slurm declares the node down after SlurmdTimeout (10 s on the testbed) and ends the
        # job (--no-requeue); the hub's next poll sees it gone and marks the server stopped.
        wait_for(lambda: alice.server_model() is None, 120, "the hub to notice the dead node")
        print(f"\nserver marked stopped {time.monotonic() - killed:.1f} s after node death")
        assert job.job_id not in {j.job_id for j in slurm_jobs("alice")}

        alice.start_server({"profile": "small"})
        (again,) = slurm_jobs("alice")
        assert again.node == survivor
        assert alice.run_code("import socket; print(socket.gethostname())").strip() == survivor
        alice.stop_server()
    finally:
        docker("start", container(dead))
        # systemd brings munge and slurmd back; ReturnToService=2 makes the node idle again.
        wait_for(lambda: node_state(dead) == "idle", 180, f"{dead} to return to idle")
