"""The bootstrapped cluster (playbooks/cluster.yml) works the way the hub will use it.

The hub runs sinfo/scontrol on the login node and submits with sbatch from there as the logged-in
user; notebooks then run on the compute nodes with the user's Lmod modules and the shared /home.
Node names, users and uids come from the inventory (topology.py).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from .conftest import CREDENTIALS_DIR
from .topology import COMPUTE_NODES, CONTROLLER, DEMO_GROUP, DEMO_USERS, LOGIN

pytestmark = pytest.mark.testbed

JOB_TIMEOUT = 120  # seconds for one sbatch --wait / srun
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def read_as_alice(as_user, path: str) -> str:
    result = as_user("alice", f"cat {path}")
    assert result.rc == 0, f"cannot read {path} on {LOGIN}: {result.stderr}"
    return result.stdout


# --- munge ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "target"), [(LOGIN, COMPUTE_NODES[-1]), (COMPUTE_NODES[-1], LOGIN)]
)
def test_munge_credential_made_on_one_node_decodes_on_another(testbed_nodes, source, target):
    credential = testbed_nodes[source].check_output("munge -n")
    decoded = testbed_nodes[target].run("printf '%%s' %s | unmunge", credential)
    assert decoded.rc == 0, f"{target} cannot decode a credential from {source}: {decoded.stderr}"
    assert "STATUS:          Success" in decoded.stdout


def test_munge_key_is_private_and_the_same_everywhere(testbed_nodes):
    checksums = set()
    for name, host in testbed_nodes.items():
        key = host.file("/etc/munge/munge.key")
        assert (key.user, key.group, key.mode) == ("munge", "munge", 0o400), name
        checksums.add(host.check_output("sha256sum /etc/munge/munge.key").split()[0])
    assert len(checksums) == 1, "the nodes have different munge keys"


# --- Slurm daemons and configuration ------------------------------------------------------------


def test_slurmctld_runs_on_the_controller(controller):
    slurmctld = controller.service("slurmctld")
    assert slurmctld.is_running
    assert slurmctld.is_enabled


@pytest.mark.parametrize("node", COMPUTE_NODES)
def test_slurmd_runs_on_each_compute_node(testbed_nodes, node):
    slurmd = testbed_nodes[node].service("slurmd")
    assert slurmd.is_running
    assert slurmd.is_enabled


def test_no_slurm_daemon_runs_on_the_login_node(login):
    assert not login.package("slurmctld").is_installed
    assert not login.package("slurmd").is_installed
    assert login.package("slurm-client").is_installed


def test_slurm_conf_is_identical_on_all_nodes(testbed_nodes):
    checksums = {
        name: host.check_output("sha256sum /etc/slurm/slurm.conf").split()[0]
        for name, host in testbed_nodes.items()
    }
    assert len(set(checksums.values())) == 1, checksums


def test_slurm_conf_has_the_testbed_settings(login):
    conf = login.file("/etc/slurm/slurm.conf").content_string
    assert re.search(rf"^SlurmctldHost={CONTROLLER}$", conf, re.M)
    assert re.search(r"^SlurmdTimeout=10$", conf, re.M)
    assert re.search(r"^ReturnToService=2$", conf, re.M)
    assert re.search(r"^ProctrackType=proctrack/linuxproc$", conf, re.M)
    assert re.search(r"^SelectTypeParameters=CR_Core_Memory$", conf, re.M)
    for node in COMPUTE_NODES:
        assert re.search(
            rf"^NodeName={node} NodeAddr={node} CPUs=32 RealMemory=40960\b", conf, re.M
        )
    nodes = ",".join(COMPUTE_NODES)
    assert re.search(
        rf"^PartitionName=batch Nodes={nodes} Default=YES MaxTime=08:00:00 ", conf, re.M
    )


def test_sinfo_on_login_shows_both_compute_nodes_idle(wait_for_idle_nodes):
    states = wait_for_idle_nodes(30)
    assert states == {node: "idle" for node in COMPUTE_NODES}


def test_controller_answers_scontrol_ping_from_login(login):
    assert "is UP" in login.check_output("scontrol ping")


# --- jobs as a regular user -------------------------------------------------------------------


def test_batch_job_of_a_demo_user_runs_on_a_compute_node_and_writes_to_her_home(as_user, job_dir):
    output = f"{job_dir}/whoami.out"
    submitted = as_user(
        "alice",
        f"timeout {JOB_TIMEOUT} sbatch --wait --parsable --output={output} "
        "--wrap='echo host=$(hostname) user=$(id -un) pwd=$PWD'",
    )
    assert submitted.rc == 0, f"sbatch as alice failed: {submitted.stdout} {submitted.stderr}"
    text = read_as_alice(as_user, output)
    host = re.search(r"host=(\S+)", text)
    assert host and host.group(1) in COMPUTE_NODES, text
    assert "user=alice" in text


def test_srun_across_two_nodes_answers_from_both(as_user):
    result = as_user("alice", f"timeout {JOB_TIMEOUT} srun --nodes=2 hostname")
    assert result.rc == 0, result.stderr
    assert sorted(result.stdout.split()) == sorted(COMPUTE_NODES)


# --- Lmod -----------------------------------------------------------------------------------------


def test_module_avail_offers_two_hello_versions(as_user):
    result = as_user("alice", "module --terse avail hello 2>&1")
    assert result.rc == 0, result.stderr
    assert {"hello/1.0", "hello/2.0"} <= set(result.stdout.split()), result.stdout


def test_login_shell_exports_lmod_cmd_and_the_site_modulepath(as_user):
    # `env` shows exported variables only.
    result = as_user("alice", "env")
    exported = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    assert exported.get("LMOD_CMD") == "/usr/share/lmod/lmod/libexec/lmod"
    assert exported.get("MODULEPATH", "").split(":")[0] == "/opt/software/modulefiles"


@pytest.mark.parametrize("export", ["ALL", "NONE"])
def test_module_load_hello_works_in_a_batch_job(as_user, job_dir, export):
    script = f"{job_dir}/hello.sh"
    output = f"{job_dir}/hello.out"
    written = as_user(
        "alice",
        f"printf '%s\\n' '#!/bin/bash -l' 'module load hello' 'hello' > {script}",
    )
    assert written.rc == 0, written.stderr
    submitted = as_user(
        "alice",
        f"timeout {JOB_TIMEOUT} sbatch --wait --export={export} --output={output} {script}",
    )
    assert submitted.rc == 0, f"{submitted.stdout} {submitted.stderr}"
    text = read_as_alice(as_user, output)
    assert "Hello from hpchub" in text, text
    compute_node = "|".join(map(re.escape, COMPUTE_NODES))
    assert re.search(rf"on ({compute_node})\)", text), text


# --- accounts -------------------------------------------------------------------------------------


@pytest.mark.parametrize("user", sorted(DEMO_USERS))
def test_home_is_private_to_its_owner(login, user):
    home = login.file(f"/home/{user}")
    assert home.is_directory
    assert (home.user, home.group, home.mode) == (user, DEMO_GROUP[0], 0o700)


def test_one_user_cannot_read_another_users_home(as_user):
    assert as_user("bob", "ls /home/alice").rc != 0


@pytest.mark.parametrize("user", sorted(DEMO_USERS))
def test_user_and_group_ids_are_identical_on_all_nodes(testbed_nodes, user):
    entries = {
        name: host.check_output("getent passwd %s", user) for name, host in testbed_nodes.items()
    }
    assert len(set(entries.values())) == 1, entries
    fields = next(iter(entries.values())).split(":")
    assert (int(fields[2]), int(fields[3]), fields[5]) == (
        DEMO_USERS[user],
        DEMO_GROUP[1],
        f"/home/{user}",
    )
    groups = {
        name: host.check_output("getent group %s", DEMO_GROUP[0])
        for name, host in testbed_nodes.items()
    }
    assert len(set(groups.values())) == 1, groups


def test_demo_password_from_the_credentials_file_is_the_one_set(login):
    from passlib import hash as passlib_hash

    password_file = CREDENTIALS_DIR / "alice.password"
    assert password_file.exists(), f"{password_file} not found: was the testbed deployed from here?"
    password = password_file.read_text().strip()
    shadow_hash = login.check_output("getent shadow alice").split(":")[1]
    assert passlib_hash.sha512_crypt.verify(password, shadow_hash)


# --- package_sources ------------------------------------------------------------------------------


def test_nodes_trust_the_host_ca_bundle_and_pip_uses_it(testbed_nodes):
    host_bundle = Path(
        os.environ.get("HPCHUB_HOST_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    )
    assert host_bundle.exists(), f"no host CA bundle at {host_bundle} (set HPCHUB_HOST_CA_BUNDLE)"
    certificates = re.findall(
        r"-----BEGIN CERTIFICATE-----\n(.*?)-----END CERTIFICATE-----",
        host_bundle.read_text(),
        re.S,
    )
    assert certificates
    for name, host in testbed_nodes.items():
        trusted = host.file(SYSTEM_CA_BUNDLE).content_string
        missing = [c for c in certificates if c not in trusted]
        assert not missing, f"{name} does not trust {len(missing)} of the host's CA certificates"
        pip_conf = host.file("/etc/pip.conf").content_string
        assert re.search(rf"^cert = {SYSTEM_CA_BUNDLE}$", pip_conf, re.M), name
