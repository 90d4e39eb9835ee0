"""The hub's cluster-aware options against the testbed's real Slurm: GPU type, account, QOS,
reservation and node features, through the public REST API (the form uses the same path).

A refused option must leave Slurm untouched: squeue and sacct show nothing new for the user.
"""

from __future__ import annotations

import time
import uuid

import pytest

from .hubclient import node_exec, slurm_jobs
from .slurm_inventory import (
    ACCOUNT_QOS,
    FEATURES,
    GPU,
    GPU_NODE,
    GPU_PARTITION,
    accounts_of,
    foreign_account,
    foreign_qos,
)
from .topology import CONTROLLER, LOGIN

pytestmark = pytest.mark.testbed

CACHE_WAIT = 30  # seconds: the hub's cluster data is at most jupyterhub_cluster_info_ttl old


def sacct_jobs(user: str, since: str) -> list[str]:
    out = node_exec(LOGIN, f"sacct -nP -X -u {user} -S {since} -o JobID,JobName,Account,State")
    return [line for line in out.splitlines() if line.strip()]


def sacct_job_ids(user: str, since: str) -> set[str]:
    """Jobs sacct knows since a time (the ids only: a job that ends meanwhile stays one)."""
    return {line.split("|")[0] for line in sacct_jobs(user, since)}


def now() -> str:
    return node_exec(LOGIN, "date +%Y-%m-%dT%H:%M:%S").strip()


def job_info(job_id: str) -> str:
    return node_exec(LOGIN, f"scontrol show job {job_id}")


@pytest.fixture
def reservation(alice, no_server):
    """A reservation for alice alone on a compute node that is not the GPU node."""
    name = f"hpchub-test-{uuid.uuid4().hex[:6]}"
    node = next(n for n in FEATURES if n != GPU_NODE)
    node_exec(
        CONTROLLER,
        f"scontrol create reservation ReservationName={name} Users=alice Nodes={node} "
        "StartTime=now Duration=5 Flags=IGNORE_JOBS",
    )
    try:
        yield {"name": name, "node": node}
    finally:
        # Slurm refuses to delete a reservation with a job in it: stop the server first. A
        # leftover reservation would keep the node from every other test's jobs.
        # The hub shows a server stopped once its job is cancelled; Slurm may still hold the job
        # (COMPLETING) for a moment, and refuses the delete until then: retry for 60 s.
        if alice.server_model() is not None:
            alice.stop_server()
        deadline = time.monotonic() + 60
        while True:
            out = node_exec(CONTROLLER, f"scontrol delete Reservation={name} 2>&1", check=False)
            listed = node_exec(CONTROLLER, "scontrol show reservation -o")
            if name not in listed or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert name not in listed, f"reservation {name} left behind: {out}"


def test_a_gpu_notebook_lands_on_the_gpu_node_with_its_gres_account_and_qos(alice, no_server):
    account = accounts_of("alice")[-1]
    qos = next(q for q in ACCOUNT_QOS[account] if q != "normal")
    since = now()
    alice.start_server(
        {
            "profile": "small",
            "partition": GPU_PARTITION,
            "gpus": 1,
            "gpu_type": GPU["type"],
            "account": account,
            "qos": qos,
        }
    )
    (job,) = slurm_jobs("alice")
    assert job.node == GPU_NODE
    info = job_info(job.job_id)
    assert f"TresPerNode=gres:gpu:{GPU['type']}:1" in info
    assert f"Account={account}" in info and f"QOS={qos}" in info
    assert f"Partition={GPU_PARTITION}" in info
    alice.stop_server()
    # sacct shows the hub's job, under the account the user chose.
    deadline = time.monotonic() + 30
    while not any(line.startswith(f"{job.job_id}|") for line in sacct_jobs("alice", since)):
        assert time.monotonic() < deadline, sacct_jobs("alice", since)
        time.sleep(1)
    (line,) = [line for line in sacct_jobs("alice", since) if line.startswith(f"{job.job_id}|")]
    assert line.split("|")[1:3] == ["jupyter-testbed-small", account]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"account": foreign_account("alice")}, "account: you cannot use Slurm account"),
        ({"qos": foreign_qos("alice")}, "qos: you cannot use QOS"),
        ({"reservation": "no-such-reservation"}, "reservation: 'no-such-reservation' is not"),
        ({"partition": GPU_PARTITION, "gpus": 1, "gpu_type": "v100"}, "gpu_type 'v100' is not"),
        ({"constraint": "sse9"}, "constraint: feature 'sse9' is not offered"),
    ],
)
def test_options_the_user_may_not_use_are_refused_and_nothing_is_submitted(
    alice, no_server, options, message
):
    since = now()
    known = sacct_job_ids("alice", since)
    response = alice.request_server({"profile": "small", **options})
    assert response.status_code == 400, response.text
    text = response.json()["message"]
    assert message in text
    # The message lists what the user may choose instead.
    if "account" in options:
        assert ", ".join(accounts_of("alice")) in text
    assert slurm_jobs("alice") == []
    assert sacct_job_ids("alice", since) == known
    assert alice.server_model() is None


def test_a_reservation_is_offered_to_its_user_only(alice, bob, reservation):
    name = reservation["name"]
    # The hub sees the new reservation within its cache's lifetime.
    deadline = time.monotonic() + CACHE_WAIT
    while True:
        response = alice.request_server({"profile": "small", "reservation": name})
        if response.status_code != 400:
            break
        assert "is not an active reservation" in response.json()["message"]
        assert time.monotonic() < deadline, response.text
        time.sleep(1)
    assert response.status_code in (201, 202), response.text
    alice.wait_ready()
    (job,) = slurm_jobs("alice")
    assert job.node == reservation["node"]
    assert f"Reservation={name}" in job_info(job.job_id)

    since = now()
    known = sacct_job_ids("bob", since)
    refused = bob.request_server({"profile": "small", "reservation": name})
    assert refused.status_code == 400
    assert f"reservation: '{name}' is not an active reservation you may use" in refused.text
    assert slurm_jobs("bob") == [] and sacct_job_ids("bob", since) == known
