"""What users see of their sessions (sessions.py) and how the spawner keeps it, with Slurm faked."""

import asyncio
import shlex
import time

import pytest
from conftest import fake_hub, fake_user
from hpchub_config.jobs import Job, JobWatcher, Snapshot, parse_jobs
from hpchub_config.sessions import duration_text, plain_end, plain_reason, session_info
from hpchub_config.spawner import ProfilesSlurmSpawner
from test_spawner import HELPER, JOBS, FakeSlurm, child_for, watched_by

NOW = 1_800_000_000


@pytest.fixture(autouse=True)
def alice_account(monkeypatch):
    """alice's account as the login node would have it (cancel uses her home)."""
    import pwd

    real = pwd.getpwnam
    entry = pwd.struct_passwd(("alice", "x", 2002, 2000, "", "/home/alice", "/bin/bash"))
    monkeypatch.setattr(pwd, "getpwnam", lambda name: entry if name == "alice" else real(name))


@pytest.fixture
def wrapper(spawner_config):
    return ProfilesSlurmSpawner(user=fake_user(), hub=fake_hub(), config=spawner_config)


@pytest.mark.parametrize(
    ("code", "words"),
    [
        ("Resources", "the nodes it needs are busy"),
        ("Priority", "higher priority are ahead of it"),
        ("Dependency", "a job it depends on"),
        ("PartitionTimeLimit", "longer than the partition allows"),
        ("ReqNodeNotAvail, UnavailableNodes:node1", "not available"),
        ("QOSMaxCpuPerUserLimit", "you are already using the most CPU cores"),
        ("QOSMaxJobsPerUserLimit", "the most jobs"),
        ("AssocGrpCpuLimit", "your group is already using the most CPU cores"),
        ("QOSMaxMemoryPerJob", "more memory than one job may use"),
        ("SomethingNew", "Slurm gives the reason SomethingNew"),
        ("None", ""),
    ],
)
def test_slurm_reasons_read_in_plain_words(code, words):
    text = plain_reason(code)
    assert words in text if words else text == ""


def test_final_states_read_in_plain_words():
    assert plain_end("TIMEOUT") == "reached its walltime"
    assert plain_end("NODE_FAIL") == "lost its compute node"
    assert plain_end("SPECIAL_EXIT") == "ended (SPECIAL_EXIT)"
    assert duration_text(59) == "59 s" and duration_text(3 * 3600 + 300) == "3 h 05 min"


def test_the_helper_times_are_read_as_unix_times():
    jobs = parse_jobs("7|alice|PENDING|(null)|Resources|1800000600|1800004200\n")
    assert (jobs["7"].start, jobs["7"].end) == (1800000600, 1800004200)
    jobs = parse_jobs("8|alice|PENDING|(null)|Priority|N/A|N/A\n")
    assert (jobs["8"].start, jobs["8"].end) == (None, None)


def seen(child, job: Job) -> None:
    """The hub's latest view shows `job` (taken after the submission)."""
    child.watcher = JobWatcher(JOBS, run=None)
    child.watcher.latest = Snapshot(time.monotonic(), {job.job_id: job})


def test_a_queued_server_shows_its_job_reason_and_expected_start(wrapper):
    child = child_for(wrapper)
    child.job_id = "42"
    seen(child, Job("42", "alice", "PENDING", "(null)", "Resources", NOW + 600, NOW + 15000))
    wrapper._spawn_pending = True
    info = session_info(wrapper, now=NOW)
    assert info["status"] == "queued" and info["job_id"] == "42"
    assert info["reason"] == "Resources" and "busy" in info["reason_text"]
    assert info["expected_start"] == NOW + 600 and info["node"] == ""
    assert info["partition"] == "batch" and info["resources"].startswith("2 cores, 4 GB, 4 h")
    assert info["log_path"] == "~/.hpchub/logs/jupyterlab-42.log"
    assert info["summary"] == (
        "Job 42 is waiting in the queue: waiting for free resources: the nodes it needs are "
        "busy (Slurm: Resources). Expected start: 2027-01-15 08:10 UTC (in 10 min)."
    )
    # The progress stream carries the same, as the message and as fields.
    event = child._pending_event()
    assert event["hpchub"]["job_id"] == "42" and event["hpchub"]["reason"] == "Resources"
    assert event["hpchub"]["expected_start"] == NOW + 600
    assert "Expected start" in event["message"]


def test_a_view_from_before_the_submission_is_not_this_job(wrapper):
    child = child_for(wrapper)
    child.job_id = "42"
    seen(child, Job("42", "alice", "PENDING", "(null)", "Resources", NOW + 600, None))
    child._submitted_at = time.monotonic() + 10
    assert child.latest_job() is None
    seen(child, Job("42", "bob", "RUNNING", "node1", "None", NOW, NOW + 60))
    assert child.latest_job() is None  # another user's job with that id: never shown


def test_a_running_server_shows_node_start_and_remaining_walltime(wrapper):
    child = child_for(wrapper)
    child.job_id = "42"
    seen(child, Job("42", "alice", "RUNNING", "node2", "None", NOW - 60, NOW + 1800))
    wrapper._spawn_pending = True  # running job, JupyterLab still starting
    info = session_info(wrapper, now=NOW)
    assert info["status"] == "starting" and info["node"] == "node2"
    assert info["started_at"] == NOW - 60 and info["remaining_seconds"] == 1800
    assert info["remaining_text"] == "30 min" and info["expected_start"] is None
    assert info["summary"] == "Job 42 is running on node2, 30 min of walltime left."


def test_a_job_that_reaches_its_walltime_is_remembered_as_the_reason(wrapper):
    child = child_for(wrapper)
    child.job_id = "42"
    slurm = FakeSlurm(["TIMEOUT|node1|TimeLimit"])
    watched_by(child, slurm)
    assert asyncio.run(child.poll()) == 1
    assert child.job_id == ""
    assert wrapper.last_end["job_id"] == "42" and wrapper.last_end["state"] == "TIMEOUT"
    assert wrapper.last_end["text"] == "reached its walltime (Slurm: TIMEOUT, TimeLimit)"
    # Kept through JupyterHub's clear_state/get_state and a hub restart (load_state).
    wrapper.clear_state()
    state = wrapper.get_state()
    assert state["last_end"]["state"] == "TIMEOUT"
    info = session_info(wrapper, now=NOW)
    assert info["status"] == "stopped"
    assert info["summary"] == "Job 42 reached its walltime (Slurm: TIMEOUT, TimeLimit)."
    restored = type(wrapper)(user=wrapper.user, hub=wrapper.hub, config=wrapper.config)
    restored.load_state(state)
    assert restored.last_end == wrapper.last_end


def test_a_running_job_keeps_the_server(wrapper):
    child = child_for(wrapper)
    child.job_id = "42"
    watched_by(child, FakeSlurm(["RUNNING|node1|None"]))
    assert asyncio.run(child.poll()) is None
    assert child.job_id == "42" and not wrapper.last_end


def test_cancel_while_queued_cancels_the_job_and_says_so(wrapper):
    child = child_for(wrapper)
    child.stop_confirm_timeout = 0.5
    slurm = FakeSlurm(["PENDING|(null)|Priority", ""])
    watched_by(child, slurm)
    child.job_id = "42"
    asyncio.run(child.query_job_status())
    assert child.state_ispending()
    asyncio.run(child.stop())
    assert [*HELPER, "cancel", "alice", "42"] in slurm.per_job()
    assert wrapper.last_end["text"] == "was cancelled while queued"


class SlowSubmit(FakeSlurm):
    """sbatch takes a while: a Cancel can arrive before the job id is known."""

    async def __call__(self, cmd, input=None, env=None):
        if shlex.split(cmd)[len(HELPER)] == "submit":
            await asyncio.sleep(0.3)
        return await super().__call__(cmd, input, env)


def test_a_spawn_cancelled_during_submission_still_cancels_its_job(wrapper):
    """JupyterHub cancels the spawn task, then calls stop(): no orphan job in the queue."""
    child = child_for(wrapper)
    child.stop_confirm_timeout = 0.5
    slurm = SlowSubmit(["PENDING|(null)|Priority", ""])
    watched_by(child, slurm)

    async def scenario():
        start = asyncio.ensure_future(child.start())
        await asyncio.sleep(0.05)  # sbatch is running
        start.cancel()
        with pytest.raises(asyncio.CancelledError):
            await start
        # What JupyterHub's User.stop does next: poll, and stop what still runs.
        if await child.poll() is None:
            await child.stop()

    asyncio.run(scenario())
    assert [*HELPER, "cancel", "alice", "42"] in slurm.per_job()


# --- JupyterLab's walltime clock: the job's end, from the batch script to the page ---------


def job_end_lines(wrapper, spawner_config, tmp_path, squeue_output: str | None):
    """Run the script's job-end block with a fake squeue (None: squeue fails)."""
    import subprocess

    fake = tmp_path / "squeue"
    body = f"printf '%s\\n' {shlex.quote(squeue_output)}" if squeue_output is not None else "exit 1"
    fake.write_text(f'#!/bin/sh\necho "$SLURM_TIME_FORMAT $*" > {tmp_path}/args\n{body}\n')
    fake.chmod(0o755)
    child = child_for(wrapper)
    child.api_token = "t"
    script = asyncio.run(child._get_batch_script())
    start = script.index("# The job's end (Unix time)")
    end = script.index("export HPCHUB_WALLTIME_WARNING_MINUTES")
    block = script[start : script.index("\n", end)].replace(
        shlex.quote(f"{child.settings.spawner.slurm_bin_dir}/squeue"), str(fake)
    )
    result = subprocess.run(
        [
            "/bin/bash",
            "-c",
            f"set -eu\n{block}\necho $HPCHUB_JOB_END $HPCHUB_WALLTIME_WARNING_MINUTES",
        ],
        capture_output=True,
        text=True,
        env={"SLURM_JOB_ID": "42", "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split(), (tmp_path / "args").read_text() if squeue_output else ""


def test_the_job_exports_its_end_from_slurm_for_the_clock(wrapper, spawner_config, tmp_path):
    (end, warning), args = job_end_lines(wrapper, spawner_config, tmp_path, "1800003600")
    assert end == "1800003600" and warning == "10"
    assert args.split() == ["%s", "-h", "-j", "42", "-o", "%e"]


def test_without_an_answer_from_slurm_the_end_is_start_plus_walltime(
    wrapper, spawner_config, tmp_path
):
    before = int(time.time())
    for answer in (None, "N/A"):
        (end, _), _ = job_end_lines(wrapper, spawner_config, tmp_path, answer)
        assert before + 240 * 60 <= int(end) <= int(time.time()) + 240 * 60


def test_the_notebook_server_puts_the_end_into_jupyterlabs_page(monkeypatch):
    from pathlib import Path

    from traitlets.config import Config

    source = Path(__file__).parents[2] / "roles/jupyter_env/files/jupyter_server_config.py"

    def load(env):
        for name in ("HPCHUB_JOB_END", "HPCHUB_WALLTIME_WARNING_MINUTES"):
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        c = Config()
        exec(compile(source.read_text(), str(source), "exec"), {"get_config": lambda: c})  # noqa: S102
        settings = c.ServerApp.tornado_settings if "tornado_settings" in c.ServerApp else {}
        # jupyterhub-singleuser reads it as a dict ("log_function" in ...).
        assert isinstance(settings, dict)
        return settings

    assert load({"HPCHUB_JOB_END": "1800003600", "HPCHUB_WALLTIME_WARNING_MINUTES": "5"}) == {
        "page_config_data": {"hpchubJobEnd": "1800003600", "hpchubWalltimeWarningMinutes": "5"}
    }
    assert load({}) == {}  # outside a notebook job: nothing
    assert load({"HPCHUB_JOB_END": "soon"}) == {}
