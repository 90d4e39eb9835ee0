"""One view of the cluster for the whole hub: a single Slurm query for all of its jobs.

Stock batchspawner runs `squeue` for each server: every 0.5 s per starting server, then
every poll_interval per running server, each call through sudo and a root helper (an
interpreter start and an RPC to slurmctld). A `JobWatcher` runs ONE query for every job of
the hub (`sudo -n hpchub-slurm jobs`: squeue as root, the hub's jobs only) and every
spawner reads the shared answer:

- while any spawner waits for news (a server starting), it refreshes every `fast` seconds
  (the spawners' startup_poll_interval), except for spawners that asked for news no sooner
  than later (a job pending for long: every pending_poll_interval); when all servers run,
  every `slow` seconds (job_watch_interval); with no job to watch, never;
- callers that need a newer answer than the last one wait for the same refresh: N starting
  servers cost one query per `fast` interval, not N (no thundering herd);
- a failed or killed query is a snapshot with an error: readers treat it as no answer
  (state UNKNOWN keeps the server), never as "every job is gone";
- after each good refresh it calls the watchers of running jobs, so a job that left the
  queue (scancel, node loss, walltime) is reported to JupyterHub at once instead of at the
  server's next poll (see SlurmNotebookSpawner._job_news).

One watcher per hub process and helper command (`job_watcher`); it lives in the hub's
event loop and starts its refresh task on first use.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from prometheus_client import Counter as MetricCounter
from prometheus_client import Gauge, Histogram

log = logging.getLogger("hpchub.jobs")

# Served at /hub/metrics with JupyterHub's own (the default registry); alerts in
# roles/prometheus/files/hpchub-alerts.yml. A query runs only while the hub has jobs to watch.
SLURM_QUERIES = MetricCounter(
    "hpchub_slurm_queries",
    "The hub's job queries to Slurm (hpchub-slurm jobs), by outcome (ok, error)",
    ["outcome"],
)
SLURM_QUERY_SECONDS = Histogram(
    "hpchub_slurm_query_duration_seconds",
    "Duration of the hub's job queries to Slurm",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
HUB_JOBS = Gauge(
    "hpchub_slurm_jobs",
    "The hub's notebook jobs by Slurm state, as the last good query saw them",
    ["state"],
)
JOB_STATES = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED")

# The hub's own commands (sudo and the helper) get no environment from the hub.
COMMAND_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}


class CommandInterrupted(RuntimeError):
    """A helper command killed by a signal (e.g. while the hub stops): no answer from Slurm."""


class JobsQueryError(RuntimeError):
    """The hub-wide job query gave no usable answer (failed, killed, unreadable)."""

    def __init__(self, message: str, started: float = float("-inf")):
        super().__init__(message)
        self.started = started  # when the failed query began (time.monotonic())


async def run_argv(argv: list[str], input: str | None = None) -> str:
    """Run a command without a shell and without the hub's environment.

    Raises CommandInterrupted when a signal killed it, RuntimeError with its stderr when it
    failed; returns its stdout, stripped.
    """
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if input else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=COMMAND_ENV,
    )
    try:
        out, err = await proc.communicate(input.encode() if input else None)
    except BaseException:
        # Cancelled (e.g. a spawn timeout): sudo forwards the signal to the helper.
        try:
            proc.terminate()
        except (ProcessLookupError, PermissionError):
            pass
        raise
    if proc.returncode < 0:
        raise CommandInterrupted(f"{argv[0]} was killed by signal {-proc.returncode}")
    if proc.returncode != 0:
        message = err.decode(errors="replace").strip()
        raise RuntimeError(message or f"{argv[0]} exited with status {proc.returncode}")
    return out.decode(errors="replace").strip()


@dataclass(frozen=True)
class Job:
    """One line of `hpchub-slurm jobs`.

    `start`/`end`: Unix times Slurm gives (None = none): the actual start of a running job,
    the expected start of a pending one (what `squeue --start` shows), and start + limit.
    """

    job_id: str
    user: str
    state: str
    host: str
    reason: str
    start: int | None = None
    end: int | None = None

    @property
    def status(self) -> str:
        """In the shape of the per-job query (`STATE|BATCHHOST|REASON`) the spawner parses."""
        return f"{self.state}|{self.host}|{self.reason}"


def _unix_time(value: str) -> int | None:
    """A Unix time from squeue (SLURM_TIME_FORMAT=%s); N/A, Unknown, 0 -> None."""
    value = value.strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def parse_jobs(output: str) -> dict[str, Job]:
    """`JOBID|USER|STATE|BATCHHOST|REASON|START|END` lines -> jobs by id.

    Lines without the two times (a helper from before they were added) are read too;
    anything else is an error.
    """
    jobs = {}
    for line in output.splitlines():
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split("|")]
        if len(fields) not in (5, 7) or not fields[0].isdigit():
            raise JobsQueryError(f"unexpected line from the job query: {line[:100]!r}")
        times = [_unix_time(f) for f in fields[5:]]
        job = Job(*fields[:5], *times)
        jobs[job.job_id] = job
    return jobs


@dataclass(frozen=True)
class Snapshot:
    """The hub's jobs as one query saw them. `started`: time.monotonic() when it began."""

    started: float
    jobs: dict[str, Job] = field(default_factory=dict)
    error: str = ""


Runner = Callable[..., Awaitable[str]]
JobCallback = Callable[[Snapshot], None]


class JobWatcher:
    """One Slurm query per interval for every job of the hub, shared by every spawner."""

    def __init__(
        self,
        command: str,
        fast: float = 0.5,
        slow: float = 30.0,
        run: Runner | None = None,
    ):
        self.command = command
        self.fast = fast
        self.slow = slow
        # run(command) -> stdout; the spawners pass their own run_command in tests.
        self._run = run or (lambda cmd: run_argv(shlex.split(cmd)))
        self.latest: Snapshot | None = None
        self.queries = 0  # refreshes run so far (for tests and the debug log)
        self._watched: dict[str, JobCallback] = {}
        self._waiters: list[tuple[float, asyncio.Future]] = []
        self._last_start = float("-inf")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._wake: asyncio.Event | None = None

    # --- what spawners call ------------------------------------------------------------

    async def snapshot(self, after: float = float("-inf")) -> Snapshot:
        """A snapshot whose query started at or after `after` (time.monotonic()).

        The cached one when it is recent enough; otherwise wait for the next refresh, which
        every waiting caller shares. Raises JobsQueryError when that query failed.
        """
        latest = self.latest
        if latest is None or latest.started < after:
            self._ensure_running()
            future = self._loop.create_future()
            self._waiters.append((after, future))
            self._wake.set()
            latest = await future
        if latest.error:
            raise JobsQueryError(latest.error, latest.started)
        return latest

    async def next_snapshot(self) -> Snapshot:
        """The answer of a query that starts from now on (for callers that poll)."""
        return await self.snapshot(after=time.monotonic())

    def watch(self, job_id: str, callback: JobCallback) -> None:
        """Call `callback(snapshot)` after every good refresh while `job_id` is watched.

        Watched jobs keep the slow refresh going; spawners watch their running job.
        """
        if not job_id:
            return
        self._watched[job_id] = callback
        try:
            self._ensure_running()
        except RuntimeError:
            return  # no event loop yet: the refresh task starts with the first caller
        self._wake.set()

    def unwatch(self, job_id: str) -> None:
        self._watched.pop(job_id, None)

    # --- the refresh task ----------------------------------------------------------------

    def _ensure_running(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # A new event loop (the hub starts once; tests run one loop each): nothing
            # bound to the old one can be used.
            self._loop = loop
            self._wake = asyncio.Event()
            self._waiters = []
            self._task = None
            self._last_start = float("-inf")
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._refresh_loop())

    def _next_query_at(self) -> float | None:
        """When the next query is due (time.monotonic()), None when nobody needs one.

        Fast while anyone waits for news, but not before the earliest moment a waiter asked
        for (a server whose job pends for long asks for news every pending_poll_interval);
        slow for running jobs only.
        """
        due = []
        wanted = [after for after, future in self._waiters if not future.done()]
        if wanted:
            due.append(max(self._last_start + self.fast, min(wanted)))
        if self._watched:
            due.append(self._last_start + self.slow)
        return min(due) if due else None

    async def _refresh_loop(self) -> None:
        wake = self._wake
        while True:
            wake.clear()
            due = self._next_query_at()
            if due is None:
                await wake.wait()
                continue
            delay = due - time.monotonic()
            if delay > 0:
                try:
                    await asyncio.wait_for(wake.wait(), delay)
                    continue  # a new waiter or job: the gap may have changed
                except TimeoutError:
                    pass
            await self.refresh()

    async def refresh(self) -> Snapshot:
        """Run the query now and hand its answer to waiters and watchers."""
        started = time.monotonic()
        self._last_start = started
        self.queries += 1
        try:
            snapshot = Snapshot(started, parse_jobs(await self._run(self.command)))
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - every failure is "no answer"
            snapshot = Snapshot(started, error=f"{type(e).__name__}: {e}")
            log.warning("The hub's job query gave no answer (%s)", snapshot.error)
        record_metrics(snapshot, time.monotonic() - started)
        self.latest = snapshot
        waiting, self._waiters = self._waiters, []
        for after, future in waiting:
            if future.done():
                continue
            if after <= started:
                future.set_result(snapshot)
            else:
                self._waiters.append((after, future))
        if not snapshot.error:
            for job_id, callback in list(self._watched.items()):
                try:
                    callback(snapshot)
                except Exception:
                    log.exception("Watcher of job %s failed", job_id)
        return snapshot


def record_metrics(snapshot: Snapshot, seconds: float) -> None:
    """Count the query; after a good one, the hub's jobs by state (absent states are 0)."""
    SLURM_QUERIES.labels("error" if snapshot.error else "ok").inc()
    SLURM_QUERY_SECONDS.observe(seconds)
    if snapshot.error:
        return  # the last good answer stands
    counts = Counter(job.state for job in snapshot.jobs.values())
    for state in {*JOB_STATES, *counts}:
        HUB_JOBS.labels(state).set(counts.get(state, 0))


_watchers: dict[tuple[str, float, float], JobWatcher] = {}


def job_watcher(command: str, fast: float, slow: float) -> JobWatcher:
    """The hub's one watcher for a helper command and intervals (one per hub process)."""
    key = (command, fast, slow)
    if key not in _watchers:
        _watchers[key] = JobWatcher(command, fast, slow)
    return _watchers[key]
