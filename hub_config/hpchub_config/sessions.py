"""Sessions users can see and control: what each server's Slurm job is doing, in words.

Everything here reads what the hub already knows (the spawners' validated requests and
the hub's one view of its jobs, jobs.JobWatcher): showing a page never queries Slurm.

- `plain_reason` / `plain_end`: Slurm's pending reasons and final states in plain words
  (the code stays visible next to them);
- `session_info`: one server as a dict (job id, state, node, partition and resources,
  start, expected start, end, log path, why the last job ended), for the home page's cards
  (templates/home.html), the spawn-pending page and the API below;
- `SessionsAPIHandler`: GET /hub/api/hpchub/sessions/<user> (scope read:servers), the
  same dicts as JSON for the pages' live updates (static/sessions.js);
- `StopServerHandler`: POST /hub/hpchub/stop (form field `server`, the page's xsrf token):
  stop or cancel a server from a page without JavaScript; the job is scancel'ed by the
  spawner's stop();
- `NewServerHandler`: GET /hub/hpchub/new-server?name=NAME: the spawn form of a new named
  server, from a plain HTML form.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from datetime import UTC, datetime

from jupyterhub import apihandlers, handlers
from jupyterhub.apihandlers import APIHandler
from jupyterhub.handlers import BaseHandler
from jupyterhub.scopes import needs_scope
from jupyterhub.utils import url_path_join
from tornado import web

SESSIONS_API_PATH = r"/api/hpchub/sessions/([^/]+)"
STOP_PATH = r"/hpchub/stop"
NEW_SERVER_PATH = r"/hpchub/new-server"
# JupyterHub's rule for server names (6.x): what the spawn URL accepts.
SERVER_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}", re.IGNORECASE)

# Slurm's pending reasons (squeue %r) in plain words. The common ones by code; the QOS and
# association limits by pattern; anything else falls back to the code itself.
REASONS = {
    "None": "",
    "Resources": "waiting for free resources: the nodes it needs are busy",
    "Priority": "other jobs with a higher priority are ahead of it in the queue",
    "Dependency": "waiting for a job it depends on to finish",
    "DependencyNeverSatisfied": "a job it depends on failed: it can never start",
    "BeginTime": "it was asked to start later",
    "JobHeldUser": "you put it on hold",
    "JobHeldAdmin": "an administrator put it on hold",
    "Reservation": "waiting for its reservation to start",
    "ReqNodeNotAvail": "a node it needs is not available (down, drained or reserved)",
    "NodeDown": "a node it needs is down",
    "PartitionTimeLimit": "its walltime is longer than the partition allows",
    "PartitionNodeLimit": "it asks for more nodes than the partition allows",
    "PartitionDown": "the partition is down",
    "PartitionInactive": "the partition is inactive",
    "BadConstraints": "no node has the features or resources it asks for",
    "InvalidAccount": "its Slurm account is not valid",
    "InvalidQOS": "its quality of service (QOS) is not valid",
    "AccountNotAllowed": "its Slurm account may not use this partition",
    "Licenses": "waiting for licenses",
    "Cleaning": "Slurm is still cleaning up after an earlier job",
    "Prolog": "the node is running its start-up script",
    "launch failed requeued held": "its launch failed; it is held",
}
_LIMIT = re.compile(r"^(QOS|Assoc)(Grp|Max)(\w+?)(Per(User|Account|Job|Node))?(Limit)?$")
_LIMIT_SCOPE = {
    "User": "you are already using the most {what} you may use at once",
    "Account": "your account is already using the most {what} it may use at once",
    "Job": "it asks for more {what} than one job may use",
    "Node": "it asks for more {what} per node than allowed",
    "": "your group is already using the most {what} it may use at once",
}
_LIMIT_WHAT = (
    ("Cpu", "CPU cores"),
    ("Mem", "memory"),
    ("Node", "nodes"),
    ("Gres", "GPUs or other generic resources"),
    ("Jobs", "jobs"),
    ("SubmitJob", "submitted jobs"),
    ("Wall", "walltime"),
    ("Billing", "billing units"),
)

# Final job states (squeue -t all %T) in words: why a server ended.
END_STATES = {
    "TIMEOUT": "reached its walltime",
    "CANCELLED": "was cancelled",
    "COMPLETED": "ended",
    "FAILED": "failed (see its log)",
    "NODE_FAIL": "lost its compute node",
    "OUT_OF_MEMORY": "ran out of memory",
    "PREEMPTED": "was preempted by another job",
    "BOOT_FAIL": "could not boot its node",
    "DEADLINE": "reached its deadline",
}


def plain_reason(code: str) -> str:
    """Slurm's pending reason in words ("" for none); the code itself when unknown."""
    code = (code or "").strip()
    if code in REASONS:
        return REASONS[code]
    head = code.split(",", 1)[0].strip()
    if head in REASONS:
        return REASONS[head]
    match = _LIMIT.match(head)
    if match:
        kind, group, what, _per, scope, _ = match.groups()
        words = next((w for key, w in _LIMIT_WHAT if what.startswith(key)), what)
        limit = "QOS" if kind == "QOS" else "account"
        text = _LIMIT_SCOPE[scope or ("" if group == "Grp" else "Job")].format(what=words)
        return f"{text} ({limit} limit)"
    return f"Slurm gives the reason {code}" if code else ""


def plain_end(state: str) -> str:
    """A final job state in words."""
    state = (state or "").split()[0] if state else ""
    return END_STATES.get(state, f"ended ({state})" if state else "ended")


def utc_text(epoch: float | None) -> str:
    if not epoch:
        return ""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M UTC")


def duration_text(seconds: float) -> str:
    """A short duration: 45 s, 12 min, 3 h 05 min."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def session_info(spawner, now: float | None = None) -> dict:
    """One server (a ProfilesSlurmSpawner) as the pages and the API show it.

    Reads the spawner's validated request and the hub's latest view of its jobs; never
    queries Slurm.
    """
    now = time.time() if now is None else now
    user = spawner.user
    child = getattr(spawner, "child_spawner", None)
    request = getattr(spawner, "request", None)
    info = {
        "user": user.name,
        "name": spawner.name,
        "title": spawner.name or "Default server",
        "url": user.server_url(spawner.name) if spawner.ready else "",
        "spawn_url": url_path_join(spawner.hub.base_url, "spawn", user.escaped_name, spawner.name)
        if spawner.hub
        else "",
        "ready": bool(spawner.ready),
        "pending": spawner.pending or "",
        "status": "stopped",
        "job_id": "",
        "job_state": "",
        "node": "",
        "partition": request.partition if request else "",
        "resources": request.describe() if request else "",
        "profile": request.profile if request else "",
        "started_at": None,
        "ends_at": None,
        "expected_start": None,
        "remaining_seconds": None,
        "reason": "",
        "reason_text": "",
        "log_path": "",
        "last_end": dict(getattr(spawner, "last_end", None) or {}),
    }
    job_id = getattr(child, "job_id", "") if child is not None else ""
    if spawner.active and job_id:
        info["job_id"] = job_id
        info["log_path"] = child.log_path
        job = child.latest_job()
        if job is not None:
            info["job_state"], info["node"], info["reason"] = job.state, job.host, job.reason
            pending = job.state in ("PENDING", "CONFIGURING")
            if pending:
                info["expected_start"] = job.start if job.start and job.start > now else None
            else:
                info["started_at"] = job.start
            info["ends_at"] = job.end
        else:
            state, _, rest = (child.job_status or "").partition("|")
            host, _, reason = rest.partition("|")
            info["job_state"], info["node"], info["reason"] = state, host, reason
        if info["node"] in ("(null)", "None", "n/a"):
            info["node"] = ""
        if info["reason"] == "None":
            info["reason"] = ""
        info["reason_text"] = plain_reason(info["reason"])
        if info["ends_at"] and info["job_state"] in ("RUNNING", "COMPLETING"):
            info["remaining_seconds"] = max(0, int(info["ends_at"] - now))
    if spawner.pending == "stop":
        info["status"] = "stopping"
    elif spawner.ready:
        info["status"] = "running"
    elif spawner.pending == "spawn":
        queued = info["job_state"] in ("PENDING", "CONFIGURING") or not info["job_state"]
        info["status"] = "queued" if queued else "starting"
    # Texts for pages without JavaScript (sessions.js keeps them current).
    info["started_text"] = utc_text(info["started_at"])
    info["ends_text"] = utc_text(info["ends_at"])
    info["expected_text"] = utc_text(info["expected_start"])
    remaining = info["remaining_seconds"]
    info["remaining_text"] = duration_text(remaining) if remaining is not None else ""
    info["last_end_text"] = utc_text(info["last_end"].get("at"))
    info["summary"] = summary(info, now)
    return info


def summary(info: dict, now: float) -> str:
    """One line about the server's job, as the pages show it."""
    job = f"Job {info['job_id']}" if info["job_id"] else "The notebook job"
    if info["status"] == "queued":
        if not info["job_id"]:
            return "Submitting the notebook job to Slurm..."
        text = f"{job} is waiting in the queue"
        if info["reason_text"]:
            text += f": {info['reason_text']} (Slurm: {info['reason']})"
        if info["expected_start"]:
            left = duration_text(info["expected_start"] - now)
            text += f". Expected start: {utc_text(info['expected_start'])} (in {left})"
        return text + "."
    if info["status"] in ("starting", "running"):
        where = f" on {info['node']}" if info["node"] else ""
        text = f"{job} is running{where}"
        if info["remaining_seconds"] is not None:
            text += f", {duration_text(info['remaining_seconds'])} of walltime left"
        return text + "."
    if info["status"] == "stopping":
        return f"{job} is stopping."
    last = info["last_end"]
    if last.get("job_id"):
        return f"Job {last['job_id']} {last.get('text') or plain_end(last.get('state', ''))}."
    return "Not running."


def user_sessions(user) -> dict[str, dict]:
    """A user's servers (default first), by name, for templates (template_vars)."""
    if user is None or not hasattr(user, "all_spawners"):
        return {}
    now = time.time()
    # all_spawners() yields bare ORM rows for servers not loaded since the hub started;
    # user.spawners[name] loads the Spawner (and its state: why its last job ended).
    names = sorted(s.name for s in user.all_spawners(include_default=True))
    return {name: session_info(user.spawners[name], now) for name in names}


class SessionsAPIHandler(APIHandler):
    """GET /hub/api/hpchub/sessions/<user>: the user's servers and their jobs."""

    @needs_scope("read:servers")
    async def get(self, user_name):
        user = self.find_user(user_name)
        if user is None:
            raise web.HTTPError(404, f"no such user: {user_name}")
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(
            json.dumps({"now": time.time(), "sessions": list(user_sessions(user).values())})
        )


class StopServerHandler(BaseHandler):
    """POST /hub/hpchub/stop (server=NAME): stop a running server or cancel a queued one."""

    @web.authenticated
    async def post(self):
        user = self.current_user
        name = self.get_body_argument("server", "")
        if name not in user.spawners or not user.spawners[name].active:
            raise web.HTTPError(404, f"You have no running or queued server {name!r}")
        spawner = user.spawners[name]
        if spawner.pending == "spawn":
            # As JupyterHub's own API does for a pending spawn: cancel it, then stop, so the
            # job is scancel'ed (the spawner waits for a submission in flight).
            self.log.info("%s: cancelling the pending spawn from the page", spawner._log_name)
            if spawner._spawn_future:
                spawner._spawn_future.cancel()
            await asyncio.sleep(1)
        if spawner.active and not spawner.pending:
            # Waits up to slow_stop_timeout; the home page shows "stopping" after that.
            await self.stop_single_user(user, name)
        self.redirect(url_path_join(self.hub.base_url, "home"))


class NewServerHandler(BaseHandler):
    """GET /hub/hpchub/new-server?name=NAME -> the spawn form of that named server."""

    @web.authenticated
    async def get(self):
        name = self.get_argument("name", "").strip()
        if not SERVER_NAME.fullmatch(name):
            raise web.HTTPError(
                400,
                "name: a server name is 1-64 letters, digits, '-', '_' or '.', "
                "starting with a letter or digit",
            )
        user = self.current_user
        self.redirect(url_path_join(self.hub.base_url, "spawn", user.escaped_name, name))


def install() -> None:
    """Add the handlers to JupyterHub's routes (it builds them after reading the config)."""
    apihandlers.default_handlers[:] = [
        h for h in apihandlers.default_handlers if h[0] != SESSIONS_API_PATH
    ]
    apihandlers.default_handlers.append((SESSIONS_API_PATH, SessionsAPIHandler))
    pages = {STOP_PATH: StopServerHandler, NEW_SERVER_PATH: NewServerHandler}
    handlers.default_handlers[:] = [h for h in handlers.default_handlers if h[0] not in pages]
    handlers.default_handlers.extend(pages.items())
