"""The spawner's decisions, with Slurm commands faked (the testbed runs the real ones)."""

import asyncio

import pytest
from conftest import fake_hub, fake_user
from hpchub_config.options import OptionsError, ResourceRequest
from hpchub_config.spawner import ProfilesSlurmSpawner, SlurmNotebookSpawner, SpawnFailed
from tornado import web

REQUEST = ResourceRequest(
    profile="medium",
    partition="batch",
    cores=2,
    memory_gb=4,
    walltime_minutes=240,
    gpus=0,
    account="",
    sbatch_options=("--qos=interactive",),
)


@pytest.fixture(autouse=True)
def alice_account(monkeypatch):
    """A local account for 'alice' as the login node would have it."""
    import pwd

    real = pwd.getpwnam
    entry = pwd.struct_passwd(("alice", "x", 2002, 2000, "", "/home/alice", "/bin/bash"))
    monkeypatch.setattr(pwd, "getpwnam", lambda name: entry if name == "alice" else real(name))


@pytest.fixture
def wrapper(spawner_config):
    return ProfilesSlurmSpawner(user=fake_user(), hub=fake_hub(), config=spawner_config)


def child_for(wrapper, request=REQUEST):
    wrapper.request = request
    child = wrapper.construct_child()
    child.api_token = "secret-token"
    return child


def script_of(child, **injected):
    return asyncio.run(child._get_batch_script(**injected))


def test_profiles_come_from_settings_and_are_all_slurm_jobs(wrapper):
    assert [p[1] for p in wrapper.profiles] == ["small", "medium"]
    assert all(p[2] is SlurmNotebookSpawner for p in wrapper.profiles)


def test_batch_script_has_the_validated_resources(wrapper):
    script = script_of(child_for(wrapper))
    for line in [
        "#SBATCH --job-name=jupyter-testhub-medium",
        "#SBATCH --no-requeue",
        "#SBATCH --cpus-per-task=2",
        "#SBATCH --mem=4G",
        "#SBATCH --time=240",
        "#SBATCH --partition=batch",
        "#SBATCH --qos=interactive",
        'log_dir="/home/alice/.hpchub/logs"',
        "#SBATCH --chdir=/home/alice",
        "exec /opt/env/bin/batchspawner-singleuser /opt/env/bin/jupyterhub-singleuser",
    ]:
        assert line in script
    assert "#SBATCH --output=/dev/null" in script
    assert "--gres" not in script and "--account" not in script


def test_user_options_never_reach_the_batch_script(wrapper):
    wrapper.user_options = {"profile": "medium", "runtime": "1:00\n#SBATCH --uid=0"}
    child = child_for(wrapper)
    assert child.user_options == {}
    # batchspawner's submit merges user_options into the template variables: ignored.
    script = script_of(child, runtime="1:00\n#SBATCH --uid=0", cmd="touch /tmp/pwned")
    assert "--uid=0" not in script and "pwned" not in script


def test_restored_server_keeps_its_slurm_child_even_for_an_unknown_profile(wrapper, spawner_config):
    child = child_for(wrapper)
    child.job_id = "42"
    state = wrapper.get_state()
    state["profile"] = "removed-profile"

    restored = ProfilesSlurmSpawner(user=fake_user(), hub=fake_hub(), config=spawner_config)
    restored.load_state(state)
    assert isinstance(restored.child_spawner, SlurmNotebookSpawner)
    assert restored.child_spawner.job_id == "42"
    assert restored.child_spawner.request == REQUEST
    assert "#SBATCH --cpus-per-task=2" in script_of(restored.child_spawner)


def test_start_without_a_validated_request_is_refused(wrapper):
    with pytest.raises(SpawnFailed):
        wrapper.start()


def test_apply_user_options_refuses_with_http_400(wrapper, partitions, monkeypatch):
    async def fake_partitions():
        return partitions

    monkeypatch.setattr(wrapper.cluster, "partitions", fake_partitions)
    hook = wrapper.apply_user_options
    with pytest.raises(web.HTTPError) as info:
        asyncio.run(hook(wrapper, {"profile": "nope"}))
    assert info.value.status_code == 400
    assert "unknown profile" in info.value.log_message
    assert wrapper.request is None

    asyncio.run(hook(wrapper, {"profile": "small", "cores": "3"}))
    assert wrapper.request.cores == 3 and wrapper.request.profile == "small"


def test_form_errors_come_back_as_value_errors(wrapper, partitions, monkeypatch):
    async def fake_partitions():
        return partitions

    monkeypatch.setattr(wrapper.cluster, "partitions", fake_partitions)
    options = asyncio.run(
        wrapper.options_from_form({"profile": ["medium"], "cores": ["3"], "_xsrf": ["x"]})
    )
    assert options == {"profile": "medium", "cores": "3"}
    with pytest.raises(ValueError) as info:
        asyncio.run(wrapper.options_from_form({"profile": ["medium"], "cores": ["64"]}))
    assert "at most 4" in str(info.value)
    assert isinstance(info.value.__cause__, OptionsError)


class FakeSlurm:
    """Answers batchspawner's shell commands like sbatch/squeue would."""

    def __init__(self, queue_states, final_state="FAILED|NonZeroExitCode"):
        self.queue_states = list(queue_states)
        self.final_state = final_state
        self.commands = []

    async def __call__(self, cmd, input=None, env=None):
        self.commands.append(cmd)
        if "sbatch" in cmd:
            return "42"
        if "scancel" in cmd:
            return ""
        if "-t all" in cmd:
            return self.final_state
        return self.queue_states.pop(0) if len(self.queue_states) > 1 else self.queue_states[0]


def run_start(child, slurm):
    child.run_command = slurm
    child.startup_poll_interval = 0.01
    child.job_check_interval = 0.01
    return asyncio.run(asyncio.wait_for(child.start(), 5))


def test_job_that_dies_before_its_server_fails_fast_with_reason_and_log(wrapper):
    child = child_for(wrapper)
    slurm = FakeSlurm(["PENDING|(null)|Priority", "RUNNING|node1|None", ""])
    with pytest.raises(SpawnFailed) as info:
        run_start(child, slurm)
    message = info.value.jupyterhub_message
    assert "job 42 ended (FAILED: NonZeroExitCode)" in message
    assert "~/.hpchub/logs/jupyterlab-42.log" in message
    assert child.job_id == ""
    assert slurm.commands[0].startswith("/usr/bin/sudo -E -u alice /usr/bin/sbatch --parsable")


def test_hopeless_pending_job_is_cancelled_at_once(wrapper):
    child = child_for(wrapper)
    slurm = FakeSlurm(["PENDING|(null)|PartitionTimeLimit"])
    with pytest.raises(SpawnFailed) as info:
        run_start(child, slurm)
    assert "PartitionTimeLimit" in str(info.value)
    assert any("scancel 42" in c for c in slurm.commands)


def test_start_returns_once_the_reported_port_accepts_connections(wrapper):
    child = child_for(wrapper)
    slurm = FakeSlurm(["RUNNING|127.0.0.1|None"])

    async def scenario():
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        task = asyncio.ensure_future(child.start())
        await asyncio.sleep(0.05)
        child.port = port  # what the port-report API does
        try:
            return await asyncio.wait_for(task, 5), port
        finally:
            server.close()

    child.run_command = slurm
    child.startup_poll_interval = 0.01
    (host, port), listening = asyncio.run(scenario())
    assert (host, port) == ("127.0.0.1", listening)
    assert all(c.startswith("/usr/bin/sudo -E -u alice /usr/bin/") for c in slurm.commands)


def test_server_that_crashes_after_reporting_its_port_fails_fast(wrapper):
    """batchspawner-singleuser reports the port before the server listens."""
    child = child_for(wrapper)
    slurm = FakeSlurm(
        ["RUNNING|127.0.0.1|None", "RUNNING|127.0.0.1|None", ""],
        final_state="FAILED|NonZeroExitCode",
    )
    child.port = 9  # reported, but nothing will ever listen there
    child.run_command = slurm
    child.startup_poll_interval = 0.01
    child.job_check_interval = 0.01

    async def scenario():
        task = asyncio.ensure_future(child.start())
        await asyncio.sleep(0.02)
        child.port = 9
        return await asyncio.wait_for(task, 5)

    with pytest.raises(SpawnFailed) as info:
        asyncio.run(scenario())
    assert "job 42 ended (FAILED: NonZeroExitCode)" in str(info.value)


def test_sbatch_refusal_is_shown_to_the_user(wrapper):
    child = child_for(wrapper)

    async def refuse(cmd, input=None, env=None):
        raise RuntimeError("sbatch: error: Invalid account or account/partition combination")

    child.run_command = refuse
    with pytest.raises(SpawnFailed) as info:
        asyncio.run(child.start())
    assert "Slurm refused the notebook job: sbatch: error: Invalid account" in str(info.value)
