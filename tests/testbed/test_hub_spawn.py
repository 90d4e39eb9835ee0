"""End to end, as a researcher: log in, start JupyterLab as a Slurm job, use it, stop it.

Only the public URL (https://hub.localhost:8443) is used to talk to the hub; Slurm's view
(squeue on the login node) is read with docker exec to check what really runs.
"""

from __future__ import annotations

import json
import re
import threading

import pytest

from .hubclient import HubUser, node_exec, slurm_jobs
from .topology import COMPUTE_NODES, LOGIN

pytestmark = pytest.mark.testbed


# --- logging in ---------------------------------------------------------------------------


def test_login_form_accepts_the_cluster_password(alice):
    # The session fixture logged in through the form; the hub knows alice now.
    assert alice.api("GET", "/user").json()["name"] == "alice"


def test_login_form_refuses_a_wrong_password(access):
    intruder = HubUser(access, "alice", "not-her-password")
    response = intruder.login()
    assert "/hub/login" in response.url
    assert "Invalid username or password" in response.text
    assert intruder.session.cookies.get("jupyterhub-session-id") is None or (
        intruder.session.get(f"{intruder.base}/hub/api/user", timeout=30).status_code == 403
    )


def test_system_accounts_cannot_log_in(access):
    # root has no usable password in the testbed, and uid < min_uid is refused anyway.
    response = HubUser(access, "root", "root").login()
    assert "/hub/login" in response.url


# --- spawning through the REST API --------------------------------------------------------


def test_rest_spawn_runs_jupyterlab_as_a_slurm_job_of_the_user(alice, alice_server):
    job = alice_server["job"]
    assert job.user == "alice"
    assert job.name == "jupyter-testbed-small"  # identifies hub and profile
    assert job.node in COMPUTE_NODES
    # The hub routes to the job's node and port.
    assert alice_server["model"]["ready"] is True
    status = alice.server_api("GET", "api/status")
    assert status.status_code == 200


def test_jupyterlab_is_reachable_through_the_proxy(alice, alice_server):
    page = alice.server_api("GET", "lab")
    assert page.status_code == 200
    assert "jupyter-config-data" in page.text


def test_kernel_runs_on_the_compute_node_of_the_job(alice, alice_server):
    output = alice.run_code(
        "import socket, getpass; print(socket.gethostname(), getpass.getuser())"
    )
    assert output.split() == [alice_server["job"].node, "alice"]


def test_job_resources_match_the_profile(alice_server):
    job_id = alice_server["job"].job_id
    info = node_exec(LOGIN, f"scontrol show job {job_id}")
    assert "NumCPUs=1" in info
    assert re.search(r"mem=2G", info)
    assert "TimeLimit=01:00:00" in info
    assert "Requeue=0" in info  # never silently requeued
    assert "Partition=batch" in info


def test_job_log_goes_to_the_hpchub_folder_not_the_home_root(alice_server):
    job_id = alice_server["job"].job_id
    logs = node_exec(LOGIN, "ls -1 /home/alice/.hpchub/logs", user="alice").split()
    assert f"jupyterlab-{job_id}.log" in logs
    home = node_exec(LOGIN, "ls -1A /home/alice", user="alice").split()
    assert not [name for name in home if name.startswith("jupyterhub_slurmspawner")]


def test_jupyterlmod_lists_and_loads_site_modules(alice, alice_server):
    available = alice.server_api("GET", "module/modules")
    assert available.status_code == 200
    modules = available.json()
    assert any(m.startswith("hello/") for m in modules), modules

    loaded = alice.server_api("POST", "module", json={"modules": ["hello"]})
    assert loaded.status_code == 200
    assert any(m.startswith("hello/") for m in alice.server_api("GET", "module").json())
    # Kernels started after the load see the module's environment.
    output = alice.run_code(
        "import os, shutil\n"
        "print(os.environ.get('HELLO_GREETING'))\n"
        "print(bool(shutil.which('hello')))"
    )
    assert output.splitlines() == ["Hello from hpchub", "True"]
    alice.server_api("DELETE", "module", json={"modules": ["hello"]})


def test_the_server_runs_in_the_users_login_environment(alice, alice_server):
    # Nothing comes from the hub or sbatch (--export=NIL): the job builds the login
    # environment itself, with the account's identity and the site's Lmod setup.
    output = alice.run_code(
        "import os\n"
        "for name in ('HOME', 'USER', 'LOGNAME', 'LMOD_CMD', 'JUPYTERHUB_ACTIVITY_INTERVAL'):\n"
        "    print(name, os.environ.get(name, '-'))\n"
        "print('MODULEPATH', '/opt/software/modulefiles' in os.environ.get('MODULEPATH', ''))"
    )
    values = dict(line.split(" ", 1) for line in output.splitlines())
    assert values["HOME"] == "/home/alice"
    assert values["USER"] == values["LOGNAME"] == "alice"
    assert values["LMOD_CMD"] != "-"
    assert values["MODULEPATH"] == "True"
    assert values["JUPYTERHUB_ACTIVITY_INTERVAL"] == "300"  # the hub's setting reached the job


def test_jupyterlab_does_not_ask_about_fetching_news(alice, alice_server):
    page = alice.server_api("GET", "lab").text
    config = json.loads(
        re.search(r'id="jupyter-config-data"[^>]*>(.*?)</script>', page, re.S).group(1)
    )
    assert "@jupyterlab/apputils-extension:announcements" in config["disabledExtensions"]


# --- spawning through the form ------------------------------------------------------------


def test_spawn_form_offers_profiles_and_partition_limits_from_slurm(alice, no_server):
    page = alice.session.get(f"{alice.base}/hub/spawn", timeout=30)
    assert page.status_code == 200
    assert 'name="profile"' in page.text
    assert "1 core, 2 GB, 1 hour" in page.text and "2 cores, 4 GB, 4 hours" in page.text
    # Limits read from sinfo: 32 CPUs and 40960 MB per node, MaxTime 8 h on "batch" (the form's
    # partition table, form.py; test_form.py checks what a browser shows of it).
    row = re.search(r'<tr data-partition="batch">(.*?)</tr>', page.text, re.S)
    assert row, "the form has no row for the partition batch"
    # (", 2 GPUs" follows when the partition has the GPU node.)
    assert re.search(r"<td>32 cores, 40 GB, 8 h(, \d+ GPUs)?</td>", row.group(1)), row.group(1)


def submit_spawn_form(user: HubUser, **fields: str):
    """POST the spawn form as the browser does (fields are strings, plus the XSRF token)."""
    xsrf = user.session.cookies.get("_xsrf", path="/hub/")
    return user.session.post(f"{user.base}/hub/spawn", data={**fields, "_xsrf": xsrf}, timeout=60)


def test_spawn_form_starts_the_chosen_profile_with_custom_cores(alice, no_server):
    response = submit_spawn_form(
        alice, profile="medium", partition="batch", cores="3", memory_gb="4", walltime_hours="2"
    )
    assert response.status_code == 200
    alice.wait_ready()
    (job,) = slurm_jobs("alice")
    assert job.name == "jupyter-testbed-medium"
    info = node_exec(LOGIN, f"scontrol show job {job.job_id}")
    assert "NumCPUs=3" in info and "TimeLimit=02:00:00" in info and "mem=4G" in info


def test_spawn_form_shows_the_reason_for_an_invalid_choice(alice, no_server):
    response = submit_spawn_form(
        alice, profile="small", partition="batch", cores="64", memory_gb="2", walltime_hours="1"
    )
    assert "64 cores requested, but nodes in partition batch have at most 32" in response.text
    assert slurm_jobs("alice") == []


# --- refusing bad options -------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, message",
    [
        ({"profile": "local"}, "unknown profile 'local'"),
        ({"profile": "small", "cores": 99}, "at most 32"),
        ({"profile": "small", "walltime_hours": "1\n#SBATCH --uid=0"}, "number of hours"),
        ({"profile": "small", "partition": "batch; touch /tmp/x"}, "not a valid"),
        ({"profile": "small", "runtime": "00:01:00"}, "unknown option 'runtime'"),
        ({"profile": "small", "memory_gb": True}, "whole number"),
    ],
)
def test_rest_api_refuses_invalid_options_and_submits_nothing(alice, no_server, options, message):
    response = alice.request_server(options)
    assert response.status_code == 400
    assert message in response.json()["message"]
    assert slurm_jobs("alice") == []
    assert alice.server_model() is None


def test_rest_api_accepts_the_form_vocabulary(alice, no_server):
    alice.start_server({"profile": "small", "cores": 2, "memory_gb": 3, "walltime_hours": 0.5})
    (job,) = slurm_jobs("alice")
    info = node_exec(LOGIN, f"scontrol show job {job.job_id}")
    assert "NumCPUs=2" in info and "mem=3G" in info and "TimeLimit=00:30:00" in info


# --- several users ----------------------------------------------------------------------------


def test_two_users_at_once_get_their_own_jobs(alice, bob, no_server):
    errors: list[Exception] = []

    def start(user: HubUser) -> None:
        try:
            user.start_server({"profile": "small"})
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=start, args=(u,)) for u in (alice, bob)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    jobs = {j.user: j for j in slurm_jobs() if j.name.startswith("jupyter-testbed-")}
    assert set(jobs) == {"alice", "bob"}
    assert jobs["alice"].job_id != jobs["bob"].job_id
    assert alice.run_code("import getpass; print(getpass.getuser())").strip() == "alice"
    assert bob.run_code("import getpass; print(getpass.getuser())").strip() == "bob"


def test_stopping_the_server_cancels_the_job(alice, alice_server):
    job_id = alice_server["job"].job_id
    alice.stop_server()
    assert job_id not in {j.job_id for j in slurm_jobs("alice")}
    assert alice.server_api("GET", "api/status").status_code != 200
