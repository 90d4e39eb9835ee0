"""Spawners: a profile menu (wrapspawner) whose entries are Slurm jobs (batchspawner).

`ProfilesSlurmSpawner` is what JupyterHub instantiates per user. It renders the resource
form, validates user options from the form AND the REST API (apply_user_options), and
builds a `SlurmNotebookSpawner` child from the validated request only. What it changes
compared with stock wrapspawner/batchspawner, and why (see docs/architecture.md):

- an unknown profile is refused; stock ProfilesSpawner silently falls back to a
  LocalProcessSpawner on the hub host;
- user options never reach the batch script: stock batchspawner merges them into the
  template unchecked (script injection through the REST API);
- jobs are submitted with --no-requeue, so a dead node ends the server instead of
  leaving the hub believing in a requeued job;
- a job that ends before its server reports a port fails the spawn within seconds, with
  Slurm's reason and the path of the job log, instead of after start_timeout;
- job logs go to ~/.hpchub/logs/ (directory 0700, logs 0600), not one file per spawn in
  the home directory;
- Slurm commands go through hpchub's root helper (`sudo -n hpchub-slurm VERB USER [JOBID]`,
  no shell, no environment from the hub): it checks the account at call time and runs a
  fixed command as the user. The job gets no environment from sbatch (--export=NIL); the
  hub's JUPYTERHUB_* variables are shell-quoted `export` lines of the script, and neither
  the script nor the environment is ever logged (batchspawner logs both at DEBUG: the
  server's API token would reach the journal);
- no Slurm query per server: every spawner reads the hub's one view of its jobs
  (jobs.JobWatcher: one `hpchub-slurm jobs` per interval for all servers, fast while any
  server starts), and a job that leaves the queue is reported to JupyterHub at the next
  refresh instead of at the server's next poll.
"""

from __future__ import annotations

import asyncio
import functools
import grp
import os
import pwd
import re
import shlex
import ssl
import time
import types
from pathlib import Path
from urllib.parse import urlparse

from batchspawner import JobStatus, SlurmSpawner
from batchspawner.batchspawner import format_template
from jupyterhub.utils import subdomain_hook_idna
from tornado import web
from traitlets import Any, Dict, Float, Instance, Type, Unicode, default
from wrapspawner import ProfilesSpawner, WrapSpawner

from . import audit
from .cluster import ClusterQueryError, cluster_info
from .form import render_form
from .jobs import (
    CommandInterrupted,
    Job,
    JobsQueryError,
    JobWatcher,
    Snapshot,
    job_watcher,
    run_argv,
)
from .options import (
    OPTION_NAMES,
    OptionsError,
    ResourceRequest,
    UserAccess,
    offered_partitions,
    option_errors,
    reconcile,
    resolve_request,
)
from .sessions import plain_end, session_info
from .settings import Settings
from .tls import alt_names

# Every value comes from the validated `request` (options.ResourceRequest) or the settings;
# the `*_q` values and `exports` are shell-quoted (shlex.quote) by the spawner.
BATCH_SCRIPT = """#!/bin/bash
#SBATCH --job-name=jupyter-{{hub_name}}-{{request.profile}}
#SBATCH --output=/dev/null
#SBATCH --chdir={{homedir}}
#SBATCH --export=NIL
#SBATCH --no-requeue
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --cpus-per-task={{request.cores}}
#SBATCH --mem={{request.memory_gb}}G
#SBATCH --time={{request.walltime_minutes}}
{% if request.partition %}#SBATCH --partition={{request.partition}}
{% endif %}{% if request.account %}#SBATCH --account={{request.account}}
{% endif %}{% if request.qos %}#SBATCH --qos={{request.qos}}
{% endif %}{% if request.reservation %}#SBATCH --reservation={{request.reservation}}
{% endif %}{% if request.constraint %}#SBATCH --constraint={{request.constraint}}
{% endif %}{% if request.gres %}#SBATCH --gres={{request.gres}}
{% endif %}{% for option in request.sbatch_options %}#SBATCH {{option}}
{% endfor %}
# A JupyterLab server for {{username}}, started by the hub {{hub_name}} (hpchub).
PATH=/usr/local/bin:/usr/bin:/bin
export PATH
# Output goes to a log only the user can read (directory 0700, log 0600); the directory
# may not exist when Slurm opens --output, hence the redirection here.
set -eu
log_dir={{log_dir_q}}
hpchub_umask=$(umask)
umask 077
mkdir -p "$log_dir"
chmod 700 "$log_dir"
exec >"$log_dir/jupyterlab-${SLURM_JOB_ID}.log" 2>&1
chmod 600 "$log_dir/jupyterlab-${SLURM_JOB_ID}.log"
umask "$hpchub_umask"
echo "hpchub: job ${SLURM_JOB_ID} of {{username}} on $(hostname) at $(date -Is)"

# Nothing from the hub or sbatch reaches the job (--export=NIL): it builds the user's login
# environment here, once, as a login does (the account's HOME, USER and LOGNAME, the locale
# and /etc/environment as pam_env sets them; then, as bash does for a login shell,
# /etc/profile: the site's Lmod and MODULEPATH; then the user's ~/.bash_profile,
# ~/.bash_login or ~/.profile), and exports what jupyterlmod needs. (With --export=NONE,
# and on Slurm 22.05 with NIL too, slurmd first builds one with `su - USER`; later Slurm
# releases skip that for NIL.)
HOME={{homedir_q}} USER={{username_q}} LOGNAME={{username_q}}
export HOME USER LOGNAME
set +u
for hpchub_env in /etc/environment /etc/default/locale; do
  if [ -r "$hpchub_env" ]; then set -a; . "$hpchub_env" || true; set +a; fi
done
if [ -r /etc/profile ]; then . /etc/profile || true; fi
for hpchub_profile in "$HOME/.bash_profile" "$HOME/.bash_login" "$HOME/.profile"; do
  if [ -r "$hpchub_profile" ]; then . "$hpchub_profile" || true; break; fi
done
set -u
if [ -n "${LMOD_CMD:-}" ]; then export LMOD_CMD; fi
if [ -n "${MODULEPATH:-}" ]; then export MODULEPATH; fi
# What the notebook server needs from the hub (its API token among them).
{{exports}}
# The job's end (Unix time) for JupyterLab's walltime clock: Slurm's, else start + walltime.
hpchub_end=$(SLURM_TIME_FORMAT=%s {{squeue_q}} -h -j "$SLURM_JOB_ID" -o %e 2>/dev/null || true)
case "$hpchub_end" in
  ''|*[!0-9]*) hpchub_end=$(( $(date +%s) + {{request.walltime_minutes}} * 60 )) ;;
esac
export HPCHUB_JOB_END="$hpchub_end"
export HPCHUB_WALLTIME_WARNING_MINUTES={{walltime_warning_minutes}}
{% if tls %}
# Internal TLS: this server's key and certificate (issued by the hub for this spawn) and the
# CAs it trusts, in a folder only the user can read, removed when the server exits.
hpchub_umask=$(umask)
umask 077
hpchub_tls=$(mktemp -d "${TMPDIR:-/tmp}/hpchub-tls.XXXXXXXX")
trap 'rm -rf "$hpchub_tls"' EXIT
cat >"$hpchub_tls/server.key" <<'HPCHUB_TLS_END'
{{tls.key}}
HPCHUB_TLS_END
cat >"$hpchub_tls/server.crt" <<'HPCHUB_TLS_END'
{{tls.cert}}
HPCHUB_TLS_END
cat >"$hpchub_tls/trusted-ca.crt" <<'HPCHUB_TLS_END'
{{tls.ca}}
HPCHUB_TLS_END
umask "$hpchub_umask"
export JUPYTERHUB_SSL_KEYFILE="$hpchub_tls/server.key"
export JUPYTERHUB_SSL_CERTFILE="$hpchub_tls/server.crt"
export JUPYTERHUB_SSL_CLIENT_CA="$hpchub_tls/trusted-ca.crt"
{% endif %}
export PATH={{env_bin_q}}:"${PATH}"
{{prologue}}
# The server runs as a child of this script, so that the folder above is removed when it
# exits; Slurm's signals (scancel, walltime) reach it directly and through this trap.
{{cmd}} &
hpchub_server=$!
trap 'kill -TERM "$hpchub_server" 2>/dev/null || true' TERM INT HUP
hpchub_status=0
wait "$hpchub_server" || hpchub_status=$?
wait "$hpchub_server" 2>/dev/null || true
exit "$hpchub_status"
"""

# The hub's variables a notebook server reads (jupyterhub-singleuser, batchspawner's
# wrapper): JUPYTERHUB_* and these.
EXPORTED_PREFIX = "JUPYTERHUB_"
EXPORTED_NAMES = ("HOME", "USER", "SHELL")
# Set by the script's internal TLS block (paths on the compute node), not exported as is.
TLS_ENV_NAMES = ("JUPYTERHUB_SSL_KEYFILE", "JUPYTERHUB_SSL_CERTFILE", "JUPYTERHUB_SSL_CLIENT_CA")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
JOB_ID = re.compile(r"[0-9]+")

# Pending reasons that will never resolve by waiting: fail the spawn at once.
FATAL_PENDING_REASONS = re.compile(
    r"^(PartitionTimeLimit|PartitionNodeLimit|PartitionDown|PartitionInactive|BadConstraints|"
    r"InvalidAccount|InvalidQOS|AccountNotAllowed|QOSMax\w*PerJob\w*|JobHeldAdmin|"
    r"DependencyNeverSatisfied|Req(Node)?NotAvail.*Unavailable.*)$"
)


def tls_client_context(keyfile: str, certfile: str, cafile: str) -> ssl.SSLContext:
    """The TLS context of the hub's port checks, made once per set of files.

    jupyterhub.utils.make_ssl_context also loads the system's CA store (hundreds of
    certificates, ~10 ms of CPU) every time: called for every port check of every starting
    server, it blocked the hub's event loop for most of a 50-user burst. The files only
    change when the hub regenerates them (at its start): their mtimes are part of the key.
    Only the internal CAs are trusted; the check compares the exact certificate anyway.
    """
    stamps = tuple(Path(f).stat().st_mtime_ns for f in (keyfile, certfile, cafile))
    return _tls_client_context(keyfile, certfile, cafile, stamps)


@functools.lru_cache(maxsize=4)
def _tls_client_context(keyfile: str, certfile: str, cafile: str, _stamps) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = True
    context.load_cert_chain(certfile, keyfile)
    return context


def unix_groups(username: str) -> tuple[str, ...]:
    """The names of a user's Unix groups (primary and supplementary), as the login node's
    NSS sees them (files, LDAP, sssd); none for an unknown user."""
    try:
        gid = pwd.getpwnam(username).pw_gid
        gids = os.getgrouplist(username, gid)
    except (KeyError, OSError):
        return ()
    names = []
    for g in gids:
        try:
            names.append(grp.getgrgid(g).gr_name)
        except KeyError:
            continue
    return tuple(sorted(set(names)))


# Query arguments of /hub/spawn that are JupyterHub's, not options of a launch link.
LINK_RESERVED = ("next", "display_name", "_xsrf")


def link_options(query: dict[str, list[bytes]]) -> dict:
    """A launch link's options (/hub/spawn?profile=...&cores=...; opt-cores= works too)."""
    options = {}
    for key, values in query.items():
        if key in LINK_RESERVED:
            continue
        name = key[4:] if key.startswith("opt-") else key
        options[name] = [v.decode("utf-8", "replace") for v in values]
    return {k: v[0] if len(v) == 1 else v for k, v in options.items()}


class SpawnFailed(RuntimeError):
    """A spawn failure whose message is shown to the user as it is."""

    def __init__(self, message: str):
        super().__init__(message)
        # JupyterHub shows this attribute on the spawn-pending page.
        self.jupyterhub_message = message


class ForeignServer(SpawnFailed):
    """The server's reported port answered with a certificate the hub did not issue for it."""


class SlurmNotebookSpawner(SlurmSpawner):
    """One notebook server as one Slurm job (a batchspawner.SlurmSpawner, hardened)."""

    settings = Instance(Settings, help="hpchub's settings (configure.py sets them)").tag(
        config=True
    )
    # The validated request, linked from the ProfilesSlurmSpawner that owns this child.
    request = Instance(ResourceRequest, allow_none=True)
    # The hub's one view of its jobs (shared by every spawner); tests give their own.
    watcher = Instance(JobWatcher)
    # The Spawner JupyterHub polls for this server (the ProfilesSlurmSpawner that owns this
    # child); None: this spawner itself.
    poll_owner = Any(None, allow_none=True)
    # time.monotonic() when sbatch returned this job's id: only a query that started later
    # can say the job is gone. -inf for a job restored from the database.
    _submitted_at = float("-inf")
    # `started` of the last snapshot this spawner read (wait_for_* read successive ones).
    _seen_at = float("-inf")
    _news_task = None
    _submission = None
    stop_confirm_timeout = Float(
        10.0, help="Seconds stop() waits for Slurm to show the cancelled job ended"
    ).tag(config=True)
    # Internal TLS: this spawn's key, certificate and trusted CAs (PEM texts), linked from the
    # ProfilesSlurmSpawner that issued them (see its move_certs).
    tls_files = Dict()

    batch_script = Unicode(BATCH_SCRIPT).tag(config=True)
    state_pending_re = Unicode(r"^(?:PENDING|CONFIGURING)\|").tag(config=True)
    state_running_re = Unicode(r"^(?:RUNNING|COMPLETING)\|").tag(config=True)
    state_exechost_re = Unicode(r"^(?:RUNNING|COMPLETING)\|([\w.-]+)\|").tag(config=True)

    def _helper(self, verb: str) -> str:
        """The hub's only way to Slurm: `sudo -n hpchub-slurm VERB USER [JOBID]`."""
        spawner = self.settings.spawner
        job = "" if verb == "submit" else " {job_id}"
        return f"{spawner.sudo} -n {spawner.slurm_helper} {verb} {{username}}{job}"

    @default("watcher")
    def _default_watcher(self):
        spawner = self.settings.spawner
        command = f"{spawner.sudo} -n {spawner.slurm_helper} jobs"
        return job_watcher(
            command, fast=self.startup_poll_interval, slow=spawner.job_watch_interval
        )

    @default("exec_prefix")
    def _default_exec_prefix(self):
        # Nothing in front of the helper: it runs as root through sudo, then as the user.
        return ""

    @default("batch_submit_cmd")
    def _default_submit(self):
        return self._helper("submit")

    @default("batch_query_cmd")
    def _default_query(self):
        # The helper runs squeue -h -j JOBID -o '%T|%B|%r': state, batch host, reason.
        return self._helper("query")

    @default("batch_cancel_cmd")
    def _default_cancel(self):
        return self._helper("cancel")

    @default("batchspawner_singleuser_cmd")
    def _default_singleuser(self):
        return f"{self.settings.spawner.notebook_env}/bin/batchspawner-singleuser"

    @default("startup_poll_interval")
    def _default_startup_poll_interval(self):
        return self.settings.spawner.startup_poll_interval

    def get_req_subvars(self):
        # The values the batch script and the commands may use: never batchspawner's
        # req_* traits or user options, only the settings and the validated request.
        spawner = self.settings.spawner
        return {
            "username": self.user.name,
            "homedir": self.req_homedir,
            "homedir_q": shlex.quote(self.req_homedir),
            "username_q": shlex.quote(self.user.name),
            "hub_name": self.settings.hub.name,
            "log_dir": spawner.job_log_dir,
            "log_dir_q": shlex.quote(f"{self.req_homedir}/{spawner.job_log_dir}"),
            "env_bin_q": shlex.quote(f"{spawner.notebook_env}/bin"),
            "prologue": "\n".join(spawner.job_prologue),
            "squeue_q": shlex.quote(f"{spawner.slurm_bin_dir}/squeue"),
            "walltime_warning_minutes": spawner.walltime_warning_minutes,
            "request": self.request,
        }

    def job_exports(self) -> str:
        """`export NAME=value` lines (values shell-quoted) of what the server needs."""
        lines = []
        for name, value in sorted(self.get_env().items()):
            if not (name.startswith(EXPORTED_PREFIX) or name in EXPORTED_NAMES):
                continue
            if name in TLS_ENV_NAMES:
                continue
            if not ENV_NAME.fullmatch(name):
                self.log.warning("%s: not exporting %r: not a variable name", self.user.name, name)
                continue
            lines.append(f"export {name}={shlex.quote(str(value))}")
        return "\n".join(lines)

    def cmd_formatted_for_batch(self):
        # Each word of the server's command line shell-quoted.
        return shlex.join([self.batchspawner_singleuser_cmd, *self.cmd, *self.get_args()])

    async def _get_batch_script(self, **subvars):
        # Only trusted values go into the script: batchspawner's caller merged
        # self.user_options into `subvars`; rebuild them instead.
        trusted = self.get_req_subvars()
        trusted["cmd"] = self.cmd_formatted_for_batch()
        trusted["exports"] = self.job_exports()
        trusted["tls"] = self._script_tls()
        return format_template(self.batch_script, **trusted)

    def _script_tls(self):
        """The PEM texts the job writes to files (None without internal TLS)."""
        if not self.internal_ssl:
            return None
        if not self.tls_files:
            raise SpawnFailed("internal TLS is on but this server has no certificate")
        for name in ("key", "cert", "ca"):
            if "HPCHUB_TLS_END" in self.tls_files[name] or not self.tls_files[name].strip():
                raise SpawnFailed(f"the internal TLS {name} file is not PEM text")
        return types.SimpleNamespace(**{k: v.strip() for k, v in self.tls_files.items()})

    def check_account(self) -> None:
        """The uid floor, checked with the account database before every submission."""
        name = self.user.name
        try:
            uid = pwd.getpwnam(name).pw_uid
        except KeyError:
            raise SpawnFailed(f"There is no account {name} on the hub's host.") from None
        min_uid = self.settings.hub.min_uid
        if uid < min_uid:
            self.log.warning("%s: refusing to submit: uid %d is below %d", name, uid, min_uid)
            raise SpawnFailed(
                f"The account {name} (uid {uid}) is a system account: notebook jobs run only "
                f"for accounts with a uid of at least {min_uid}."
            )

    async def run_command(self, cmd, input=None, env=None):
        """Run a helper command without a shell and without the hub's environment.

        `cmd` is split like a shell would (the helper gets exactly its arguments); `env`
        is ignored. Raises RuntimeError with the command's stderr when it fails.
        """
        return await run_argv(shlex.split(cmd), input=input)

    async def query_job_status(self, fresh: bool = False, not_before: float = float("-inf")):
        """The job's state from the hub's view of its jobs (one query for all servers).

        Reads the watcher's snapshot taken after this job's submission (`fresh`: one newer
        than the last this spawner read, waiting for the next shared refresh). A job in the
        snapshot gets its line (`STATE|BATCHHOST|REASON`, finished states included while
        Slurm keeps them: MinJobAge). A job absent from such a snapshot is asked about alone,
        as before the watcher (`_query_one`): Slurm's answer for that job id decides, so a
        job the view cannot show (purged, renamed hub) is never dropped on the view's word.
        A view query that failed or was killed is no answer: the state stays UNKNOWN.
        `not_before` (time.monotonic()): no news wanted from a query started earlier.
        """
        if not self.job_id:
            self.job_status = ""
            return JobStatus.NOTFOUND
        after = max(self._submitted_at, not_before)
        if fresh:
            after = max(after, self._seen_at + 1e-6)
        try:
            snapshot = await self.watcher.snapshot(after=after)
        except JobsQueryError as e:
            self._seen_at = max(self._seen_at, e.started)
            return self._no_answer(e)
        self._seen_at = snapshot.started
        job = snapshot.jobs.get(self.job_id)
        if job is None or job.user != self.user.name:
            return await self._query_one()
        self.job_status = job.status
        return self._job_status_code()

    def _job_status_code(self) -> JobStatus:
        if self.state_isrunning():
            return JobStatus.RUNNING
        if self.state_ispending():
            return JobStatus.PENDING
        if self.state_isunknown():
            return JobStatus.UNKNOWN
        return JobStatus.NOTFOUND

    async def _query_one(self) -> JobStatus:
        """batchspawner's per-job query, except when Slurm gave no answer at all.

        A query killed by a signal (systemd stops the hub's whole cgroup on a restart) or
        that could not run leaves the state UNKNOWN, so the server is kept: batchspawner
        would report the job gone and the hub would forget a running notebook job. An
        answer (squeue's output or its error, e.g. an unknown job id) counts as before.
        """
        cmd = format_template(self.batch_query_cmd, username=self.user.name, job_id=self.job_id)
        try:
            self.job_status = await self.run_command(cmd)
        except CommandInterrupted as e:
            return self._no_answer(e)
        except RuntimeError as e:
            self.job_status = e.args[0] if e.args else ""
        except Exception as e:  # noqa: BLE001 - anything else is no answer either
            return self._no_answer(e)
        return self._job_status_code()

    async def poll(self):
        # batchspawner's poll, remembering why a job that left the queue ended.
        await self._submitted()
        job_id = self.job_id
        status = await self.query_job_status()
        if status in (JobStatus.PENDING, JobStatus.RUNNING, JobStatus.UNKNOWN):
            if self.job_id:
                # A server JupyterHub polls (running, or restored after a hub restart).
                self.watcher.watch(self.job_id, self._job_news)
            return None
        if job_id:
            state, _, rest = self.job_status.partition("|")
            self._record_end(job_id, state, rest.rpartition("|")[2])
        self.clear_state()
        return 1

    async def _submitted(self) -> None:
        """A spawn cancelled while sbatch runs (Cancel on a page): wait for the job id.

        JupyterHub then polls and stops this server; both must see the job to cancel it.
        """
        if self._submission is not None and not self._submission.done():
            await asyncio.wait([self._submission], timeout=30)

    def latest_job(self) -> Job | None:
        """This job in the hub's latest view (no query), if that view is from after submission."""
        latest = self.watcher.latest
        if not self.job_id or latest is None or latest.error:
            return None
        if latest.started < self._submitted_at:
            return None
        job = latest.jobs.get(self.job_id)
        return job if job is not None and job.user == self.user.name else None

    def _record_end(self, job_id: str, state: str, reason: str = "", text: str = "") -> None:
        """Why this server's job ended, kept in the server's state for the home page."""
        if not job_id:
            return
        state = state.strip() if re.fullmatch(r"[A-Z_]+", state.strip()) else ""
        reason = "" if reason.strip() in ("None", "") else reason.strip()
        text = text or plain_end(state)
        if state:
            text += f" (Slurm: {state}{', ' + reason if reason else ''})"
        owner = self.poll_owner or self
        owner.last_end = {
            "job_id": job_id,
            "state": state,
            "reason": reason,
            "text": text,
            "at": time.time(),
        }
        self.log.info("%s: job %s %s", self.user.name, job_id, text)

    def _job_alive(self, snapshot: Snapshot) -> bool:
        job = snapshot.jobs.get(self.job_id)
        if job is None or job.user != self.user.name:
            return False
        status = job.status
        return bool(
            re.search(self.state_running_re, status) or re.search(self.state_pending_re, status)
        )

    def _job_news(self, snapshot: Snapshot) -> None:
        """After each view refresh: a watched job that left the queue is reported now.

        JupyterHub would notice at the server's next poll (up to poll_interval later; the
        view refreshes every job_watch_interval while servers run);
        its poll_and_notify runs the same check at once and, when the job is gone, marks
        the server stopped and runs JupyterHub's callbacks.
        """
        if not self.job_id or self._job_alive(snapshot):
            return
        owner = self.poll_owner or self
        if getattr(owner, "_poll_callback", None) is None:
            return  # not polled by JupyterHub (starting or stopping): start/stop decide
        if self._news_task is not None and not self._news_task.done():
            return
        self.log.info("%s: job %s left the queue; checking now", self.user.name, self.job_id)
        self._news_task = asyncio.ensure_future(owner.poll_and_notify())

    def clear_state(self):
        if self.job_id and "watcher" in self._trait_values:
            self.watcher.unwatch(self.job_id)
        super().clear_state()
        self._submitted_at = float("-inf")
        self._seen_at = float("-inf")

    def _no_answer(self, error: Exception) -> JobStatus:
        self.log.warning(
            "%s: no answer about job %s (%s: %s); its state stays unknown",
            self.user.name,
            self.job_id,
            type(error).__name__,
            error,
        )
        return JobStatus.UNKNOWN

    async def submit_batch_script(self):
        """Submit through the helper. Logs the command's shape and the job id only: the
        script and the environment hold the server's API token (batchspawner's own
        version logs both at DEBUG)."""
        self.check_account()
        script = await self._get_batch_script()
        cmd = format_template(self.batch_submit_cmd, username=self.user.name)
        self.log.info("%s: submitting a notebook job: %s (script on stdin)", self.user.name, cmd)
        out = await self.run_command(cmd, input=script)
        last = out.splitlines()[-1] if out else ""
        job_id = last.split(";")[0].strip()
        self.job_id = job_id if JOB_ID.fullmatch(job_id) else ""
        self._submitted_at = time.monotonic()
        self._seen_at = float("-inf")
        if not self.job_id:
            self.log.error("%s: sbatch returned no job id: %r", self.user.name, last[:200])
        return self.job_id

    @property
    def log_path(self) -> str:
        return f"~/{self.settings.spawner.job_log_dir}/jupyterlab-{self.job_id}.log"

    def _reason(self) -> str:
        fields = self.job_status.split("|")
        return fields[2].strip() if len(fields) > 2 else ""

    async def _final_state(self) -> str:
        """State and reason of a job that left the queue (while Slurm still knows it)."""
        latest = self.watcher.latest
        job = None
        if latest is not None and latest.started >= self._submitted_at:
            job = latest.jobs.get(self.job_id)
        if job is not None and job.user == self.user.name:
            return f"{job.state}: {job.reason}"
        cmd = format_template(self._helper("final"), username=self.user.name, job_id=self.job_id)
        try:
            # The helper runs squeue -h -t all -j JOBID -o '%T|%r'.
            out = await self.run_command(cmd)
        except Exception:  # noqa: BLE001 - diagnostics only
            return ""
        return out.strip().replace("|", ": ", 1) if out.strip() else ""

    async def _fail(self, what: str) -> None:
        job_id = self.job_id
        final = await self._final_state()
        detail = f" ({final})" if final else ""
        state, _, reason = final.partition(":")
        self._record_end(job_id, state, reason, text=f"{what} before JupyterLab started")
        message = (
            f"Your notebook job {job_id} {what}{detail} before JupyterLab started. "
            f"Its log is {self.log_path} on the cluster."
        )
        self.log.warning("%s: %s", self.user.name, message)
        self.clear_state()
        raise SpawnFailed(message)

    async def _accepts_connections(self) -> bool:
        """Whether the server's port answers; with internal TLS, as this server.

        Another user on the same compute node could hold the reported port (bound between
        the report and the server's own bind) and answer with the certificate of their own
        server: same CA, same node name. Only the certificate the hub issued for this spawn
        counts; anything else fails the spawn before any route points at that port.
        """
        if not self.port:
            return False
        context = self._tls_client_context() if self.internal_ssl else None
        try:
            _reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    self.ip,
                    self.port,
                    ssl=context,
                    server_hostname=self.ip if context else None,
                ),
                timeout=5,
            )
        except ssl.SSLError as e:
            raise self._foreign(f"its TLS handshake failed ({e.reason or e})") from e
        except ConnectionRefusedError:
            return False  # nothing listens there yet
        except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError) as e:
            if context is None:
                return False
            raise self._foreign(f"it dropped the TLS handshake ({type(e).__name__})") from e
        except (OSError, TimeoutError):
            return False
        try:
            if context is not None:
                presented = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
                if presented != ssl.PEM_cert_to_DER_cert(self.tls_files["cert"]):
                    raise self._foreign("it presented another server's certificate")
        finally:
            writer.close()
        return True

    def _tls_client_context(self) -> ssl.SSLContext:
        # The hub's own certificate (notebook servers require a client certificate) and
        # every internal CA, like the hub's own client; one context for every check.
        store = Path(self.internal_certs_location)
        return tls_client_context(
            str(store / "hub-internal" / "hub-internal.key"),
            str(store / "hub-internal" / "hub-internal.crt"),
            self.internal_trust_bundles["hub-ca"],
        )

    def _foreign(self, what: str) -> ForeignServer:
        message = (
            f"The port {self.port} your notebook job {self.job_id} reported on {self.ip} is "
            f"not answered by your server: {what}. Another process holds that port; the "
            "job is cancelled and no traffic was sent there. Please start again."
        )
        self.log.warning("%s: %s", self.user.name, message)
        audit.event(
            "spawn_refused",
            user=self.user.name,
            server=self.name,
            job_id=self.job_id,
            reason=f"foreign listener on {self.ip}:{self.port}: {what}",
        )
        return ForeignServer(message)

    async def start(self):
        started = time.monotonic()
        await self.submit()
        await self.wait_for_job(started)
        await self.wait_for_port(started)
        return self.ip, self.port

    async def submit(self) -> None:
        """Submit the batch script; a refused or id-less submission fails the spawn."""
        if self.request is None:
            raise SpawnFailed("this server has no validated resource request")
        self.ip = self.traits()["ip"].default_value
        self.port = 0
        if self.server:
            self.server.port = self.port
        # Shielded: a spawn cancelled from the page (Cancel) while sbatch runs still learns
        # the job id, which stop() then cancels (no orphan job).
        self._submission = asyncio.ensure_future(self.submit_batch_script())
        try:
            await asyncio.shield(self._submission)
        except SpawnFailed:
            raise
        except RuntimeError as e:
            raise SpawnFailed(f"Slurm refused the notebook job: {e}") from e
        if not self.job_id:
            raise SpawnFailed("Slurm accepted the notebook job but returned no job id")
        self.log.info(
            "%s: submitted Slurm job %s (profile %s)",
            self.user.name,
            self.job_id,
            self.request.profile,
        )
        audit.event(
            "spawn",
            user=self.user.name,
            server=self.name,
            job_id=self.job_id,
            **{k: v for k, v in self.request.to_state().items() if k != "sbatch_options"},
        )

    async def wait_for_job(self, started: float) -> None:
        """Until the job runs; a job that ends, or can never start, fails the spawn.

        Each round reads the next refresh of the hub's view (every startup_poll_interval
        while any server starts, one query for all of them). A job that has pended for
        longer than pending_poll_interval is checked every pending_poll_interval: Slurm
        starts queued jobs in scheduling cycles tens of seconds apart, and a class waiting
        in a full queue would otherwise keep the query at its fastest pace for minutes.
        """
        backoff = self.settings.spawner.pending_poll_interval
        not_before = float("-inf")
        while True:
            status = await self.query_job_status(fresh=True, not_before=not_before)
            if status == JobStatus.RUNNING:
                break
            if status == JobStatus.PENDING and time.monotonic() - started > backoff:
                not_before = time.monotonic() + backoff
            if status == JobStatus.NOTFOUND:
                await self._fail("ended")
            if status == JobStatus.PENDING and FATAL_PENDING_REASONS.match(self._reason()):
                reason = self._reason()
                job_id = self.job_id
                self._record_end(job_id, "", reason, text=f"could never start ({reason})")
                await self.cancel_batch_job()
                self.clear_state()
                raise SpawnFailed(
                    f"Slurm cannot run your notebook job {job_id}: {reason}. "
                    "Choose other resources or ask the support team."
                )
        self.ip = self.state_gethost()
        self.log.info(
            "%s: job %s running on %s after %.1f s; waiting for the server's port",
            self.user.name,
            self.job_id,
            self.ip,
            time.monotonic() - started,
        )

    async def wait_for_port(self, started: float) -> None:
        """Until the server's port accepts connections, while the job stays alive.

        batchspawner-singleuser reports its port BEFORE the server starts listening, and
        JupyterHub then only waits for HTTP (http_timeout): a server that crashes on
        start-up would be noticed minutes later. Between two connection attempts, the
        next refresh of the hub's view (no query of its own) tells whether the job lives.
        """
        while self.port == 0 or not await self._accepts_port():
            status = await self.query_job_status(fresh=True)
            if status not in (JobStatus.RUNNING, JobStatus.UNKNOWN):
                await self._fail("ended")
        # Watched from now on: if the job ends, JupyterHub hears it at the next refresh.
        self.watcher.watch(self.job_id, self._job_news)
        self.log.info(
            "%s: notebook server of job %s at %s:%s (%.1f s after submission)",
            self.user.name,
            self.job_id,
            self.ip,
            self.port,
            time.monotonic() - started,
        )

    async def _accepts_port(self) -> bool:
        try:
            return await self._accepts_connections()
        except ForeignServer:
            await self.cancel_batch_job()
            self.clear_state()
            raise

    async def stop(self, now=False):
        """Cancel the job, then wait (up to `stop_confirm_timeout`) until Slurm shows it ended.

        batchspawner re-queries once a second; here each check reads the first refresh of
        the hub's view that started after the cancel (paced like a starting server's).
        """
        await self._submitted()
        self.log.info("%s: stopping server job %s", self.user.name, self.job_id)
        owner = self.poll_owner or self
        if self.job_id and (owner.last_end or {}).get("job_id") != self.job_id:
            queued = self.state_ispending() or not self.state_isrunning()
            text = "was cancelled while queued" if queued else "was stopped from the hub"
            self._record_end(self.job_id, "", text=text)
        await self.cancel_batch_job()
        if now or not self.job_id:
            return
        # Only a query that started after scancel returned can confirm it.
        self._seen_at = max(self._seen_at, time.monotonic())
        deadline = time.monotonic() + self.stop_confirm_timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                status = await asyncio.wait_for(self.query_job_status(fresh=True), remaining)
            except TimeoutError:
                break
            if status not in (JobStatus.RUNNING, JobStatus.UNKNOWN):
                return
        self.log.warning("%s: job %s possibly failed to terminate", self.user.name, self.job_id)

    async def progress(self):
        while True:
            if self.state_ispending():
                yield self._pending_event()
            elif self.state_isrunning():
                host = self.state_gethost() or "a compute node"
                yield {
                    "message": f"Job {self.job_id} is running on {host}; "
                    "waiting for JupyterLab to start..."
                }
                return
            else:
                yield {"message": "Submitting the notebook job to Slurm..."}
            await asyncio.sleep(1)

    def _pending_event(self) -> dict:
        """A progress event for a queued job: the message, and its fields under "hpchub"."""
        if self.poll_owner is None:
            reason = self._reason()
            note = f" (Slurm: {reason})" if reason and reason != "None" else ""
            return {"message": f"Job {self.job_id} is waiting in the queue{note}..."}
        info = session_info(self.poll_owner)
        fields = ("job_id", "job_state", "reason", "reason_text", "expected_start", "log_path")
        return {"message": info["summary"], "hpchub": {k: info[k] for k in fields}}


class ProfilesSlurmSpawner(ProfilesSpawner):
    """The profile menu + resource form; each choice becomes a SlurmNotebookSpawner."""

    settings = Instance(Settings, help="hpchub's settings (configure.py sets them)").tag(
        config=True
    )
    # Never anything but a Slurm job: stock wrapspawner defaults to LocalProcessSpawner.
    child_class = Type(SlurmNotebookSpawner, SlurmNotebookSpawner)
    # The validated request of the current server; wrapspawner links it to the child.
    request = Instance(ResourceRequest, allow_none=True)
    # Why this server's last job ended (job_id, state, reason, text, at): kept across stops
    # in the server's state, shown on the home page.
    last_end = Dict()

    @default("profiles")
    def _default_profiles(self):
        return [
            (p.display_name, p.key, SlurmNotebookSpawner, {})
            for p in self.settings.spawner.profiles
        ]

    @default("options_form")
    def _default_options_form(self):
        # Non-empty so JupyterHub shows a form; its HTML comes from get_options_form().
        return "hpchub resource form"

    @default("apply_user_options")
    def _default_apply_user_options(self):
        return ProfilesSlurmSpawner._apply_user_options_hook

    # --- internal TLS: a certificate per spawn, carried to the job in its script ----------
    tls_files = Dict(help="This spawn's internal TLS key, certificate and CAs (PEM texts)")

    @default("ssl_alt_names")
    def _default_ssl_alt_names(self):
        return ProfilesSlurmSpawner._server_names

    @staticmethod
    async def _server_names(spawner) -> list[str]:
        """The names a notebook server's certificate carries.

        The nodes its job may land on (the hub checks the server at node:port), and the name
        the proxy checks it against: the Host the browser asked for. With per-user origins
        that is the user's own host name, so another user's certificate does not pass the
        proxy; with one origin it is every public name of the hub.
        """
        partitions = await spawner.cluster.partitions()
        wanted = spawner.request.partition if spawner.request else ""
        chosen = [p for p in partitions.values() if (p.name == wanted if wanted else p.default)]
        nodes = sorted({n for p in (chosen or partitions.values()) for n in p.nodes})
        if not nodes:
            raise SpawnFailed("Slurm lists no compute node for this notebook job's partition")
        hub = spawner.settings.hub
        if hub.subdomain_host:
            domain = urlparse(hub.subdomain_host).hostname
            public = [subdomain_hook_idna(spawner.user.name, domain, "user")]
        else:
            public = list(hub.public_names)
        return alt_names([*nodes, *public])

    async def move_certs(self, paths):
        """Read this spawn's certificate files; the job script carries them to the node.

        There is no shared place the user can read and other users cannot: the key goes
        into the batch script, which Slurm shows only to the user, root and SlurmUser (as
        the server's API token already does), and the job writes it to a 0700 folder.
        """
        self.tls_files = {
            name: Path(paths[key]).read_text()
            for name, key in (("key", "keyfile"), ("cert", "certfile"), ("ca", "cafile"))
        }
        # Where the job puts them (the script sets JUPYTERHUB_SSL_* itself).
        return {
            "keyfile": "$hpchub_tls/server.key",
            "certfile": "$hpchub_tls/server.crt",
            "cafile": "$hpchub_tls/trusted-ca.crt",
        }

    @property
    def cluster(self):
        spawner = self.settings.spawner
        helper = (spawner.sudo, "-n", spawner.slurm_helper)
        return cluster_info(spawner.slurm_bin_dir, spawner.cluster_info_ttl, helper)

    # The user's Unix groups (which profiles they see); tests give their own.
    groups_of = Any(unix_groups)
    # Options of a form submission that was refused: the form shows them again, with errors.
    _refused_form = None

    async def _access(self, max_age: float | None = None) -> tuple[dict, UserAccess]:
        """The offered partitions and what Slurm lets this user use (cached, see cluster.py)."""
        spawner = self.settings.spawner
        snapshot = await self.cluster.snapshot(max_age)
        associations = None
        if spawner.accounts_from_slurmdbd:
            associations = await self.cluster.associations(self.user.name, max_age)
        partitions = offered_partitions(snapshot.partitions, spawner.partitions)
        groups = tuple(self.groups_of(self.user.name))
        access = UserAccess(self.user.name, associations, snapshot.reservations, groups)
        return partitions, access

    async def resolve(self, user_options) -> ResourceRequest:
        # A spawn is checked against data no older than the TTL (a form may show older).
        partitions, access = await self._access(max_age=self.settings.spawner.cluster_info_ttl)
        return resolve_request(user_options, self.settings.spawner, partitions, access)

    async def get_options_form(self):
        try:
            partitions, access = await self._access()
        except ClusterQueryError as e:
            self.log.error("Cannot read partitions from Slurm for the form: %s", e)
            return (
                '<div class="alert alert-danger">The hub cannot reach Slurm right now '
                f"({web.escape.xhtml_escape(str(e))}). Please try again in a minute.</div>"
            )
        values, notes, errors = self._form_values(partitions, access)
        return render_form(
            self.settings.spawner,
            partitions,
            hub_base_url=self.hub.base_url if self.hub else "/hub/",
            access=access,
            values=values,
            notes=notes,
            errors=errors,
        )

    def _link_query(self) -> dict | None:
        """The query of the launch link being opened (GET /hub/spawn?...), if any."""
        handler = self.handler
        if handler is None or getattr(handler, "_finished", True):
            return None
        if handler.request.method != "GET":
            return None
        return link_options(handler.request.query_arguments) or None

    def remembered_options(self) -> dict:
        """The user's last choices: this server's, else those of their latest server."""
        own = self.orm_spawner.user_options if self.orm_spawner else None
        if own:
            return dict(own)
        others = [
            s
            for s in getattr(self.user, "orm_spawners", {}).values()
            if s is not self.orm_spawner and s.user_options
        ]
        if not others:
            return {}
        latest = max(others, key=lambda s: (s.started or s.last_activity or 0, s.id or 0))
        return dict(latest.user_options)

    def _form_values(self, partitions, access) -> tuple[dict, list[str], dict[str, str]]:
        """What the form shows: a refused submission with its errors, a launch link's values
        with theirs, or the remembered choices minus what the cluster no longer offers."""
        settings = self.settings.spawner
        refused, self._refused_form = self._refused_form, None
        if refused is not None:
            return refused, [], option_errors(refused, settings, partitions, access)
        link = self._link_query()
        if link is not None:
            errors = option_errors(link, settings, partitions, access)
            if errors:
                audit.event(
                    "spawn_link_refused",
                    user=self.user.name,
                    server=self.name,
                    reason="; ".join(errors.values()),
                )
            return link, [], errors
        values, notes = reconcile(self.remembered_options(), settings, partitions, access)
        return values, notes, {}

    async def options_from_form(self, formdata):
        options = {k: v[0] for k, v in formdata.items() if k in OPTION_NAMES and v}
        # Validate now, so the form comes back with the message instead of a failed spawn.
        try:
            await self.resolve(options)
        except OptionsError as e:
            audit.event("spawn_refused", user=self.user.name, server=self.name, reason=str(e))
            self._refused_form = options
            raise ValueError(str(e)) from e
        self._refused_form = None
        return options

    @staticmethod
    async def _apply_user_options_hook(spawner, user_options):
        """Validate options from the form or the REST API; refuse with HTTP 400."""
        try:
            request = await spawner.resolve(user_options)
        except OptionsError as e:
            spawner.log.warning("%s: refused options %r: %s", spawner.user.name, user_options, e)
            audit.event("spawn_refused", user=spawner.user.name, server=spawner.name, reason=str(e))
            raise web.HTTPError(400, f"Invalid server options: {e}") from e
        except ClusterQueryError as e:
            spawner.log.error("%s: cannot check options against Slurm: %s", spawner.user.name, e)
            raise web.HTTPError(503, f"The hub cannot reach Slurm right now: {e}") from e
        spawner.request = request
        spawner.log.info(
            "%s: profile %s -> %s", spawner.user.name, request.profile, request.describe()
        )

    def select_profile(self, profile):
        # Whatever the stored profile, the child is a Slurm job (never a local process);
        # its resources come from the validated request, linked to the child.
        self.child_class = SlurmNotebookSpawner

    def construct_child(self):
        if self.child_spawner is None and self.request is not None:
            self.child_profile = self.request.profile
        # Not linked from the wrapper: the child never sees raw user options.
        self.child_config = {"user_options": {}}
        self.child_class = SlurmNotebookSpawner
        child = WrapSpawner.construct_child(self)
        # JupyterHub polls this wrapper: the child reports a vanished job through it.
        child.poll_owner = self
        return child

    def start(self):
        if self.request is None:
            # apply_user_options did not run or failed: never submit unvalidated input.
            raise SpawnFailed("this server has no validated resource request")
        return super().start()

    def get_state(self):
        state = super().get_state()
        if self.request is not None:
            state["request"] = self.request.to_state()
        if self.last_end:
            state["last_end"] = self.last_end
        return state

    def load_state(self, state):
        # Before wrapspawner's load_state, which builds the child (linking the request).
        self.request = ResourceRequest.from_state(state.get("request"))
        if isinstance(state.get("last_end"), dict):
            self.last_end = state["last_end"]
        super().load_state(state)

    def clear_state(self):
        super().clear_state()
        self.request = None
