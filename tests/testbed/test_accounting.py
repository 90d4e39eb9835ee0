"""Slurm accounting on the testbed: slurmdbd, the inventory's associations, enforcement, sacct,
typed GPUs and node features, as Slurm itself sees them (the hub's use of them is in
test_cluster_options.py).
"""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from .hubclient import node_exec
from .slurm_inventory import (
    FEATURES,
    GPU,
    GPU_NODE,
    GPU_PARTITION,
    QOS,
    accounts_of,
    foreign_account,
    foreign_qos,
)
from .topology import CONTROLLER, DEMO_USERS, LOGIN, REPO

pytestmark = pytest.mark.testbed

JOB_TIMEOUT = 120


def run_as(user: str, command: str, check: bool = True) -> str:
    """A command on the login node as a user, from /tmp (the job's working directory)."""
    return node_exec(LOGIN, f"cd /tmp && {command}", user=user, check=check)


def test_slurmdbd_runs_on_the_controller_with_its_secrets_private(controller, login):
    for service in ("slurmdbd", "mariadb"):
        assert controller.service(service).is_running, service
        assert controller.service(service).is_enabled, service
    conf = controller.file("/etc/slurm/slurmdbd.conf")
    assert (conf.user, conf.group, conf.mode) == ("slurm", "slurm", 0o600)
    password = controller.file("/etc/slurm/slurmdbd.db-password")
    assert (password.user, password.mode) == ("root", 0o600)
    assert len(password.content_string.strip()) >= 32
    # Only the controller has the database's password.
    assert not login.file("/etc/slurm/slurmdbd.conf").exists
    assert (
        "AccountingStorageType=accounting_storage/slurmdbd"
        in login.file("/etc/slurm/slurm.conf").content_string
    )


def test_every_demo_user_has_the_associations_of_the_inventory():
    out = node_exec(CONTROLLER, "sacctmgr -nP show association format=User,Account")
    held: dict[str, set[str]] = {}
    for line in out.splitlines():
        user, account = line.split("|")
        if user:
            held.setdefault(user, set()).add(account)
    for user in DEMO_USERS:
        assert held.get(user) == set(accounts_of(user)), user


def test_slurm_refuses_an_account_or_qos_the_user_does_not_have():
    account = foreign_account("alice")
    refused = run_as("alice", f"sbatch --account={account} -t 1 --wrap true 2>&1", check=False)
    assert "Invalid account" in refused, refused
    qos = foreign_qos("alice")
    refused = run_as("alice", f"sbatch --qos={qos} -t 1 --wrap true 2>&1", check=False)
    assert "Invalid qos" in refused, refused


def test_sacct_records_a_finished_job_with_its_account():
    account = accounts_of("alice")[-1]
    job = run_as(
        "alice",
        f"timeout {JOB_TIMEOUT} sbatch --wait --parsable --account={account} -t 2 "
        "--mem=100M -o /dev/null --wrap 'sleep 1'",
    ).strip()
    assert job.isdigit(), job
    # slurmdbd receives the job's end asynchronously: give it a few seconds.
    record = node_exec(
        LOGIN,
        f"for i in $(seq 20); do out=$(sacct -nP -X -j {job} -o JobID,User,Account,State); "
        '[ -n "$out" ] && echo "$out" | grep -q COMPLETED && break; sleep 1; done; echo "$out"',
    )
    assert f"{job}|alice|{account}|COMPLETED" in record.splitlines(), record


def test_a_typed_gpu_job_lands_on_the_gpu_node_with_its_gres():
    out = run_as(
        "alice",
        f"timeout {JOB_TIMEOUT} srun -p {GPU_PARTITION} --gres=gpu:{GPU['type']}:1 -t 1 "
        "--mem=100M bash -c 'hostname; scontrol show job $SLURM_JOB_ID'",
    )
    assert out.splitlines()[0] == GPU_NODE
    assert f"TresPerNode=gres:gpu:{GPU['type']}:1" in out
    too_many = run_as(
        "alice",
        f"srun -p {GPU_PARTITION} --gres=gpu:{GPU['type']}:{GPU['count'] + 1} -t 1 true 2>&1",
        check=False,
    )
    assert "Requested node configuration is not available" in too_many, too_many


def test_a_feature_constraint_picks_the_node_that_has_it():
    node, features = next((n, f) for n, f in FEATURES.items() if n != GPU_NODE and f[0])
    command = f"srun --constraint={features[0]} -t 1 --mem=100M hostname"
    out = run_as("alice", f"timeout {JOB_TIMEOUT} {command}")
    assert out.strip() == node


# --- the associations module against the real slurmdbd --------------------------------------


def run_module(*, check: bool) -> dict:
    """The role's slurm_associations module on the controller, with the inventory's values."""
    args = json.dumps(
        {
            "cluster": "hpchub",
            "qos": "{{ slurm_accounting_qos }}",
            "accounts": "{{ slurm_accounting_accounts }}",
            "users": "{{ slurm_accounting_users }}",
        }
    )
    bin_dir = REPO / ".venv" / "bin"
    result = subprocess.run(
        [
            str(bin_dir / "ansible"),
            "-i",
            str(REPO / "inventories" / "testbed" / "hosts.yml"),
            CONTROLLER,
            "-m",
            "slurm_associations",
            "-a",
            args,
            "-o",
            *(["--check"] if check else []),
        ],
        cwd=REPO,
        env={
            **os.environ,
            "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
            "ANSIBLE_LIBRARY": str(REPO / "roles" / "slurm" / "library"),
            "ANSIBLE_NOCOLOR": "1",
        },
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(re.search(r"=> (\{.*\})", result.stdout).group(1))


def test_the_associations_module_changes_nothing_when_slurmdbd_matches_and_repairs_drift():
    assert run_module(check=True)["changed"] is False
    qos = next(name for name, q in QOS.items() if q.get("max_wall"))
    wall = QOS[qos]["max_wall"]
    node_exec(CONTROLLER, f"sacctmgr -i modify qos where name={qos} set MaxWall=00:01:00")
    try:
        planned = run_module(check=True)
        assert planned["changed"] is True
        assert planned["commands"] == [
            ["modify", "qos", "where", f"name={qos}", "set", f"MaxWall={wall}"]
        ]
        # Check mode changed nothing; the real run repairs it, and the next run is a no-op.
        shown = node_exec(CONTROLLER, f"sacctmgr -nP show qos where name={qos} format=MaxWall")
        assert "00:01:00" in shown
        assert run_module(check=False)["changed"] is True
        assert run_module(check=True)["changed"] is False
    finally:
        node_exec(
            CONTROLLER, f"sacctmgr -i modify qos where name={qos} set MaxWall={wall}", check=False
        )


def test_the_hub_reads_a_users_associations_through_its_helper_only():
    from .test_hub_security import SLURM_HELPER, as_hub

    own = as_hub("sudo", "-n", SLURM_HELPER, "assoc", "alice")
    assert own.returncode == 0, own.stderr
    accounts = {line.split("|")[1] for line in own.stdout.splitlines()}
    assert accounts == set(accounts_of("alice"))
    for argv in (["assoc", "root"], ["assoc", "alice,bob"], ["assoc", "alice", "bob"]):
        refused = as_hub("sudo", "-n", SLURM_HELPER, *argv)
        assert refused.returncode == 2 and refused.stdout == "", argv
