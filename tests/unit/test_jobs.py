"""The hub's one view of its jobs (jobs.JobWatcher), with squeue's answers faked."""

import asyncio
import time
import types

import pytest
from batchspawner import JobStatus
from conftest import fake_hub, fake_user
from hpchub_config.jobs import JobsQueryError, JobWatcher, Snapshot, parse_jobs
from hpchub_config.spawner import ProfilesSlurmSpawner
from test_spawner import GONE, HELPER, JOBS, REQUEST


@pytest.fixture(autouse=True)
def accounts(monkeypatch):
    """alice's account as the login node would have it (cancel uses her home)."""
    import pwd

    real = pwd.getpwnam
    entry = pwd.struct_passwd(("alice", "x", 2002, 2000, "", "/home/alice", "/bin/bash"))
    monkeypatch.setattr(pwd, "getpwnam", lambda name: entry if name == "alice" else real(name))


class Squeue:
    """`hpchub-slurm jobs` as Slurm would answer it: `jobs` maps job id -> (user, state).

    Counts the hub-wide queries and the per-job ones; `delay` makes each query slow."""

    def __init__(self, jobs=None, delay=0.0):
        self.jobs = dict(jobs or {})
        self.delay = delay
        self.queries = 0
        self.per_job = []
        self.fail = None

    async def __call__(self, cmd, input=None, env=None):
        if cmd != JOBS:
            self.per_job.append(cmd)
            raise RuntimeError(GONE)
        self.queries += 1
        await asyncio.sleep(self.delay)
        if self.fail:
            raise self.fail
        return "\n".join(f"{i}|{user}|{state}" for i, (user, state) in self.jobs.items())


def spawner_for(spawner_config, name, job_id, squeue, watcher):
    wrapper = ProfilesSlurmSpawner(user=fake_user(name), hub=fake_hub(), config=spawner_config)
    wrapper.request = REQUEST
    child = wrapper.construct_child()
    child.job_id = job_id
    child.run_command = squeue
    child.watcher = watcher
    return wrapper, child


def test_the_helper_output_is_read_by_job_id():
    jobs = parse_jobs("7|alice|RUNNING|node1|None\n8|bob|PENDING|(null)|Priority\n")
    assert jobs["7"].status == "RUNNING|node1|None" and jobs["7"].user == "alice"
    assert jobs["8"].reason == "Priority"
    with pytest.raises(JobsQueryError):
        parse_jobs("squeue: error: Unable to contact slurm controller")


def test_several_starting_servers_share_one_query_per_refresh(spawner_config):
    users = ["alice", "bob", "carol", "dave", "erin", "frank"]
    squeue = Squeue({str(40 + i): (u, "PENDING|(null)|Priority") for i, u in enumerate(users)})
    watcher = JobWatcher(JOBS, fast=0.05, slow=30, run=squeue)
    children = [
        spawner_for(spawner_config, u, str(40 + i), squeue, watcher)[1] for i, u in enumerate(users)
    ]

    async def scenario():
        waits = [asyncio.ensure_future(c.wait_for_job(time.monotonic())) for c in children]
        await asyncio.sleep(0.3)  # about six fast refreshes, everyone pending
        pending_queries = squeue.queries
        for job_id, (user, _) in list(squeue.jobs.items()):
            squeue.jobs[job_id] = (user, "RUNNING|node1|None")
        await asyncio.wait_for(asyncio.gather(*waits), 2)
        return pending_queries

    pending_queries = asyncio.run(scenario())
    assert all(c.state_gethost() == "node1" for c in children)
    # One query per fast refresh for all six, never one per server.
    assert 2 <= pending_queries <= 9, pending_queries
    assert squeue.queries <= pending_queries + 3
    assert squeue.per_job == []


def test_a_job_pending_for_long_is_checked_every_pending_poll_interval(spawner_config):
    """Fast checks while a job is young; once it has pended for pending_poll_interval, one
    check per interval (not one per fast refresh), and its start is still seen."""
    import dataclasses

    settings = spawner_config.ProfilesSlurmSpawner.settings
    settings = dataclasses.replace(
        settings, spawner=dataclasses.replace(settings.spawner, pending_poll_interval=0.25)
    )
    spawner_config.ProfilesSlurmSpawner.settings = settings
    spawner_config.SlurmNotebookSpawner.settings = settings
    squeue = Squeue({"50": ("alice", "PENDING|(null)|Resources")})
    watcher = JobWatcher(JOBS, fast=0.02, slow=30, run=squeue)
    _, child = spawner_for(spawner_config, "alice", "50", squeue, watcher)

    async def scenario():
        wait = asyncio.ensure_future(child.wait_for_job(time.monotonic()))
        await asyncio.sleep(0.25)
        young = squeue.queries
        await asyncio.sleep(1.0)  # pending for long: one check per 0.25 s
        old = squeue.queries - young
        squeue.jobs["50"] = ("alice", "RUNNING|node1|None")
        started = time.monotonic()
        await asyncio.wait_for(wait, 2)
        return young, old, time.monotonic() - started

    young, old, seen_after = asyncio.run(scenario())
    assert young >= 5, young  # fast (every 0.02 s) while young
    assert 2 <= old <= 6, old  # 1.0 s at 0.25 s, not fifty fast refreshes
    assert seen_after < 0.6, seen_after
    assert child.state_gethost() == "node1"


def test_concurrent_callers_wait_for_the_same_refresh():
    squeue = Squeue({"7": ("alice", "RUNNING|node1|None")}, delay=0.05)
    watcher = JobWatcher(JOBS, fast=0.01, slow=30, run=squeue)

    async def scenario():
        now = time.monotonic()
        return await asyncio.gather(*(watcher.snapshot(after=now) for _ in range(50)))

    snapshots = asyncio.run(scenario())
    assert squeue.queries == 1
    assert all(s is snapshots[0] for s in snapshots)


def test_refreshes_are_fast_while_someone_waits_and_slow_for_running_servers():
    squeue = Squeue({"7": ("alice", "RUNNING|node1|None")})
    watcher = JobWatcher(JOBS, fast=0.02, slow=0.25, run=squeue)

    async def scenario():
        watcher.watch("7", lambda snapshot: None)
        await asyncio.sleep(0.6)  # running servers only: slow
        slow = squeue.queries
        for _ in range(10):  # a starting server asks for news, again and again: fast
            await watcher.next_snapshot()
        return slow

    slow = asyncio.run(scenario())
    assert 2 <= slow <= 4, slow
    assert squeue.queries >= slow + 10


def test_a_failed_query_is_no_answer_and_keeps_the_server(spawner_config, caplog):
    squeue = Squeue({"7": ("alice", "RUNNING|node1|None")})
    watcher = JobWatcher(JOBS, fast=0.01, slow=30, run=squeue)
    wrapper, child = spawner_for(spawner_config, "alice", "7", squeue, watcher)
    news = []
    watcher.watch("7", news.append)
    squeue.fail = RuntimeError("squeue: error: slurm_load_jobs: Socket timed out")
    assert asyncio.run(child.query_job_status()) == JobStatus.UNKNOWN
    assert asyncio.run(wrapper.poll()) is None and child.job_id == "7"
    assert news == []  # a failed snapshot is never news of a vanished job
    assert squeue.per_job == []
    assert "no answer about job 7" in caplog.text
    squeue.fail = None
    assert asyncio.run(child.query_job_status(fresh=True)) == JobStatus.RUNNING


def test_a_snapshot_older_than_the_submission_never_says_the_job_is_gone(spawner_config):
    squeue = Squeue({"7": ("alice", "PENDING|(null)|Priority")})
    watcher = JobWatcher(JOBS, fast=0.01, slow=30, run=squeue)
    _wrapper, child = spawner_for(spawner_config, "alice", "7", squeue, watcher)
    # A query that started before sbatch returned: job 7 cannot be in it.
    watcher.latest = Snapshot(started=time.monotonic())
    child._submitted_at = time.monotonic()
    assert asyncio.run(child.query_job_status()) == JobStatus.PENDING
    assert squeue.queries == 1 and squeue.per_job == []


def test_a_job_that_vanishes_is_reported_to_jupyterhub_at_the_next_refresh(spawner_config):
    squeue = Squeue({"7": ("alice", "RUNNING|node1|None"), "8": ("bob", "RUNNING|node2|None")})
    watcher = JobWatcher(JOBS, fast=0.01, slow=0.1, run=squeue)
    alice, alice_child = spawner_for(spawner_config, "alice", "7", squeue, watcher)
    bob, _bob_child = spawner_for(spawner_config, "bob", "8", squeue, watcher)
    stopped = []
    for spawner in (alice, bob):
        # What JupyterHub does for a running server: poll it every poll_interval (30 s
        # here: far longer than this test) and call back when it stopped.
        spawner._poll_callback = types.SimpleNamespace(stop=lambda: None)
        spawner.add_poll_callback(stopped.append, spawner.user.name)

    async def scenario():
        assert await alice.poll() is None and await bob.poll() is None  # both watched
        del squeue.jobs["7"]  # scancel from outside, or its node died
        vanished = time.monotonic()
        while not stopped and time.monotonic() - vanished < 2:
            await asyncio.sleep(0.01)
        return time.monotonic() - vanished

    seconds = asyncio.run(scenario())
    assert stopped == ["alice"], "the vanished job was not reported"
    assert seconds < 1.0
    assert alice_child.job_id == "" and alice._poll_callback is None
    assert bob._poll_callback is not None
    # Slurm was asked about job 7 alone once (it said: invalid job id) before it was dropped.
    assert squeue.per_job == [" ".join([*HELPER, "query", "alice", "7"])]
    assert "7" not in watcher._watched and "8" in watcher._watched


def test_a_finished_job_in_the_view_is_reported_without_a_per_job_query(spawner_config):
    squeue = Squeue({"7": ("alice", "RUNNING|node1|None")})
    watcher = JobWatcher(JOBS, fast=0.01, slow=0.05, run=squeue)
    alice, _child = spawner_for(spawner_config, "alice", "7", squeue, watcher)
    stopped = []
    alice._poll_callback = types.SimpleNamespace(stop=lambda: None)
    alice.add_poll_callback(stopped.append, "alice")

    async def scenario():
        assert await alice.poll() is None
        squeue.jobs["7"] = ("alice", "CANCELLED|node1|None")
        for _ in range(100):
            if stopped:
                break
            await asyncio.sleep(0.01)

    asyncio.run(scenario())
    assert stopped == ["alice"] and squeue.per_job == []


def test_stop_waits_for_a_view_taken_after_the_cancel(spawner_config, caplog):
    squeue = Squeue({"7": ("alice", "RUNNING|node1|None")})
    watcher = JobWatcher(JOBS, fast=0.01, slow=30, run=squeue)
    _wrapper, child = spawner_for(spawner_config, "alice", "7", squeue, watcher)
    child.stop_confirm_timeout = 3

    async def scancel(cmd, input=None, env=None):
        assert cmd.endswith(" cancel alice 7"), cmd
        squeue.jobs["7"] = ("alice", "CANCELLED|node1|None")
        return ""

    async def scenario():
        assert await child.query_job_status() == JobStatus.RUNNING  # the view before
        child.run_command = scancel
        started = time.monotonic()
        await child.stop()
        return time.monotonic() - started

    seconds = asyncio.run(scenario())
    assert seconds < 1, "stop() kept reading the view from before the cancel"
    assert squeue.queries == 2 and "possibly failed to terminate" not in caplog.text


def test_queries_and_the_hubs_jobs_by_state_are_metrics():
    from prometheus_client import REGISTRY

    def value(name, **labels):
        return REGISTRY.get_sample_value(name, labels) or 0

    squeue = Squeue({"7": ("alice", "RUNNING|node1|None"), "8": ("bob", "PENDING||Resources")})
    watcher = JobWatcher(JOBS, fast=0.01, slow=30, run=squeue)
    ok, errors = (
        value("hpchub_slurm_queries_total", outcome="ok"),
        value("hpchub_slurm_queries_total", outcome="error"),
    )
    asyncio.run(watcher.refresh())
    assert value("hpchub_slurm_queries_total", outcome="ok") == ok + 1
    assert value("hpchub_slurm_jobs", state="RUNNING") == 1
    assert value("hpchub_slurm_jobs", state="PENDING") == 1
    assert value("hpchub_slurm_jobs", state="COMPLETING") == 0  # known states are always there
    # A failed query is counted and leaves the last good counts alone.
    squeue.fail = RuntimeError("squeue: error: Unable to contact slurm controller")
    asyncio.run(watcher.refresh())
    assert value("hpchub_slurm_queries_total", outcome="error") == errors + 1
    assert value("hpchub_slurm_jobs", state="PENDING") == 1
    # The next good one: bob's job started.
    squeue.fail = None
    squeue.jobs["8"] = ("bob", "RUNNING|node2|None")
    asyncio.run(watcher.refresh())
    assert value("hpchub_slurm_jobs", state="RUNNING") == 2
    assert value("hpchub_slurm_jobs", state="PENDING") == 0
    assert value("hpchub_slurm_query_duration_seconds_count") >= 3


def test_running_servers_are_watched_every_job_watch_interval_not_jupyterhubs_poll(spawner_config):
    """One query for all servers every job_watch_interval (5 s by default): an ended job shows
    within seconds with the role's defaults, while JupyterHub's own per-server poll stays 30 s."""
    settings = spawner_config.ProfilesSlurmSpawner.settings
    assert settings.spawner.job_watch_interval == 5 and settings.spawner.poll_interval == 30
    wrapper = ProfilesSlurmSpawner(user=fake_user("alice"), hub=fake_hub(), config=spawner_config)
    wrapper.request = REQUEST
    child = wrapper.construct_child()
    assert child.watcher.slow == 5
    assert child.watcher.fast == settings.spawner.startup_poll_interval
