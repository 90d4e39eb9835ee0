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
- job logs go to ~/.hpchub/logs/, not one file per spawn in the home directory.
"""

from __future__ import annotations

import asyncio
import re
import time

from batchspawner import JobStatus, SlurmSpawner
from batchspawner.batchspawner import format_template
from tornado import web
from traitlets import Float, Instance, Type, Unicode, default
from wrapspawner import ProfilesSpawner, WrapSpawner

from .cluster import ClusterQueryError, cluster_info
from .form import render_form
from .options import (
    OPTION_NAMES,
    OptionsError,
    ResourceRequest,
    offered_partitions,
    resolve_request,
)
from .settings import Settings

# Every value comes from the validated `request` (options.ResourceRequest) or the settings.
BATCH_SCRIPT = """#!/bin/bash
#SBATCH --job-name=jupyter-{{hub_name}}-{{request.profile}}
#SBATCH --output=/dev/null
#SBATCH --chdir={{homedir}}
#SBATCH --export={{keepvars}}
#SBATCH --no-requeue
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --cpus-per-task={{request.cores}}
#SBATCH --mem={{request.memory_gb}}G
#SBATCH --time={{request.walltime_minutes}}
{% if request.partition %}#SBATCH --partition={{request.partition}}
{% endif %}{% if request.account %}#SBATCH --account={{request.account}}
{% endif %}{% if request.gpus %}#SBATCH --gres=gpu:{{request.gpus}}
{% endif %}{% for option in request.sbatch_options %}#SBATCH {{option}}
{% endfor %}
# A JupyterLab server for {{username}}, started by the hub "{{hub_name}}" (hpchub).
# Output goes to a log in {{log_dir}} (the directory may not exist when Slurm opens
# --output, hence the redirection here).
set -eu
log_dir="{{homedir}}/{{log_dir}}"
mkdir -p "$log_dir"
exec >"$log_dir/jupyterlab-${SLURM_JOB_ID}.log" 2>&1
echo "hpchub: job ${SLURM_JOB_ID} of {{username}} on $(hostname) at $(date -Is)"

# The job starts with a minimal environment: load the site's login environment
# (Lmod, MODULEPATH) and export what jupyterlmod needs.
set +u
if [ -r /etc/profile ]; then . /etc/profile || true; fi
set -u
if [ -n "${LMOD_CMD:-}" ]; then export LMOD_CMD; fi
if [ -n "${MODULEPATH:-}" ]; then export MODULEPATH; fi
export PATH="{{env_prefix}}/bin:${PATH}"
{{prologue}}
exec {{cmd}}
"""

# Pending reasons that will never resolve by waiting: fail the spawn at once.
FATAL_PENDING_REASONS = re.compile(
    r"^(PartitionTimeLimit|PartitionNodeLimit|PartitionDown|PartitionInactive|BadConstraints|"
    r"InvalidAccount|InvalidQOS|AccountNotAllowed|QOSMax\w*PerJob\w*|JobHeldAdmin|"
    r"DependencyNeverSatisfied|Req(Node)?NotAvail.*Unavailable.*)$"
)


class SpawnFailed(RuntimeError):
    """A spawn failure whose message is shown to the user as it is."""

    def __init__(self, message: str):
        super().__init__(message)
        # JupyterHub shows this attribute on the spawn-pending page.
        self.jupyterhub_message = message


class SlurmNotebookSpawner(SlurmSpawner):
    """One notebook server as one Slurm job (a batchspawner.SlurmSpawner, hardened)."""

    settings = Instance(Settings, help="hpchub's settings (configure.py sets them)").tag(
        config=True
    )
    # The validated request, linked from the ProfilesSlurmSpawner that owns this child.
    request = Instance(ResourceRequest, allow_none=True)
    job_check_interval = Float(
        2.0, help="While waiting for the server's port: seconds between job state checks"
    ).tag(config=True)

    batch_script = Unicode(BATCH_SCRIPT).tag(config=True)
    state_pending_re = Unicode(r"^(?:PENDING|CONFIGURING)\|").tag(config=True)
    state_running_re = Unicode(r"^(?:RUNNING|COMPLETING)\|").tag(config=True)
    state_exechost_re = Unicode(r"^(?:RUNNING|COMPLETING)\|([\w.-]+)\|").tag(config=True)

    def _slurm(self, command: str) -> str:
        return f"{self.settings.spawner.slurm_bin_dir}/{command}"

    @default("exec_prefix")
    def _default_exec_prefix(self):
        return f"{self.settings.spawner.sudo} -E -u {{username}}"

    @default("batch_submit_cmd")
    def _default_submit(self):
        return self._slurm("sbatch --parsable")

    @default("batch_query_cmd")
    def _default_query(self):
        # %T state, %B batch host, %r reason
        return self._slurm("squeue -h -j {job_id} -o '%T|%B|%r'")

    @default("batch_cancel_cmd")
    def _default_cancel(self):
        return self._slurm("scancel {job_id}")

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
            "keepvars": self.req_keepvars,
            "hub_name": self.settings.hub.name,
            "log_dir": spawner.job_log_dir,
            "env_prefix": spawner.notebook_env,
            "prologue": "\n".join(spawner.job_prologue),
            "request": self.request,
        }

    def _query_cmd(self, template: str) -> str:
        subvars = self.get_req_subvars()
        subvars["job_id"] = self.job_id
        return " ".join(
            (format_template(self.exec_prefix, **subvars), format_template(template, **subvars))
        )

    async def _get_batch_script(self, **subvars):
        # Only trusted values go into the script: batchspawner's caller merged
        # self.user_options into `subvars`; rebuild them instead.
        trusted = self.get_req_subvars()
        trusted["cmd"] = self.cmd_formatted_for_batch()
        return format_template(self.batch_script, **trusted)

    @property
    def log_path(self) -> str:
        return f"~/{self.settings.spawner.job_log_dir}/jupyterlab-{self.job_id}.log"

    def _reason(self) -> str:
        fields = self.job_status.split("|")
        return fields[2].strip() if len(fields) > 2 else ""

    async def _final_state(self) -> str:
        """State and reason of a job that left the queue (while Slurm still knows it)."""
        try:
            out = await self.run_command(
                self._query_cmd(self._slurm("squeue -h -t all -j {job_id} -o '%T|%r'"))
            )
        except Exception:  # noqa: BLE001 - diagnostics only
            return ""
        return out.strip().replace("|", ": ", 1) if out.strip() else ""

    async def _fail(self, what: str) -> None:
        job_id = self.job_id
        final = await self._final_state()
        detail = f" ({final})" if final else ""
        message = (
            f"Your notebook job {job_id} {what}{detail} before JupyterLab started. "
            f"Its log is {self.log_path} on the cluster."
        )
        self.log.warning("%s: %s", self.user.name, message)
        self.clear_state()
        raise SpawnFailed(message)

    async def _accepts_connections(self) -> bool:
        if not self.port:
            return False
        try:
            _reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.ip, self.port), timeout=2
            )
        except (OSError, TimeoutError):
            return False
        writer.close()
        return True

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
        try:
            await self.submit_batch_script()
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

    async def wait_for_job(self, started: float) -> None:
        """Until the job runs; a job that ends, or can never start, fails the spawn."""
        while True:
            status = await self.query_job_status()
            if status == JobStatus.RUNNING:
                break
            if status == JobStatus.NOTFOUND:
                await self._fail("ended")
            if status == JobStatus.PENDING and FATAL_PENDING_REASONS.match(self._reason()):
                reason = self._reason()
                job_id = self.job_id
                await self.cancel_batch_job()
                self.clear_state()
                raise SpawnFailed(
                    f"Slurm cannot run your notebook job {job_id}: {reason}. "
                    "Choose other resources or ask the support team."
                )
            await asyncio.sleep(self.startup_poll_interval)
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
        start-up would be noticed minutes later.
        """
        last_check = time.monotonic()
        while self.port == 0 or not await self._accepts_connections():
            await asyncio.sleep(self.startup_poll_interval)
            if time.monotonic() - last_check >= self.job_check_interval:
                last_check = time.monotonic()
                status = await self.query_job_status()
                if status not in (JobStatus.RUNNING, JobStatus.UNKNOWN):
                    await self._fail("ended")
        self.log.info(
            "%s: notebook server of job %s at %s:%s (%.1f s after submission)",
            self.user.name,
            self.job_id,
            self.ip,
            self.port,
            time.monotonic() - started,
        )

    async def progress(self):
        while True:
            if self.state_ispending():
                reason = self._reason()
                note = f" (Slurm: {reason})" if reason and reason != "None" else ""
                yield {"message": f"Job {self.job_id} is waiting in the queue{note}..."}
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


class ProfilesSlurmSpawner(ProfilesSpawner):
    """The profile menu + resource form; each choice becomes a SlurmNotebookSpawner."""

    settings = Instance(Settings, help="hpchub's settings (configure.py sets them)").tag(
        config=True
    )
    # Never anything but a Slurm job: stock wrapspawner defaults to LocalProcessSpawner.
    child_class = Type(SlurmNotebookSpawner, SlurmNotebookSpawner)
    # The validated request of the current server; wrapspawner links it to the child.
    request = Instance(ResourceRequest, allow_none=True)

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

    @property
    def cluster(self):
        spawner = self.settings.spawner
        return cluster_info(spawner.slurm_bin_dir, spawner.cluster_info_ttl)

    async def _accounts(self) -> list[str] | None:
        if not self.settings.spawner.accounts_from_slurmdbd:
            return None
        return await self.cluster.accounts(self.user.name)

    async def _partitions(self):
        return offered_partitions(await self.cluster.partitions(), self.settings.spawner.partitions)

    async def resolve(self, user_options) -> ResourceRequest:
        return resolve_request(
            user_options,
            self.settings.spawner,
            await self._partitions(),
            accounts=await self._accounts(),
        )

    async def get_options_form(self):
        try:
            partitions = await self._partitions()
            accounts = await self._accounts()
        except ClusterQueryError as e:
            self.log.error("Cannot read partitions from Slurm for the form: %s", e)
            return (
                '<div class="alert alert-danger">The hub cannot reach Slurm right now '
                f"({web.escape.xhtml_escape(str(e))}). Please try again in a minute.</div>"
            )
        previous = self.orm_spawner.user_options if self.orm_spawner else None
        return render_form(
            self.settings.spawner,
            partitions,
            hub_base_url=self.hub.base_url if self.hub else "/hub/",
            accounts=accounts,
            selected=previous if isinstance(previous, dict) else None,
        )

    async def options_from_form(self, formdata):
        options = {k: v[0] for k, v in formdata.items() if k in OPTION_NAMES and v}
        # Validate now, so the form comes back with the message instead of a failed spawn.
        try:
            await self.resolve(options)
        except OptionsError as e:
            raise ValueError(str(e)) from e
        return options

    @staticmethod
    async def _apply_user_options_hook(spawner, user_options):
        """Validate options from the form or the REST API; refuse with HTTP 400."""
        try:
            request = await spawner.resolve(user_options)
        except OptionsError as e:
            spawner.log.warning("%s: refused options %r: %s", spawner.user.name, user_options, e)
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
        return WrapSpawner.construct_child(self)

    def start(self):
        if self.request is None:
            # apply_user_options did not run or failed: never submit unvalidated input.
            raise SpawnFailed("this server has no validated resource request")
        return super().start()

    def get_state(self):
        state = super().get_state()
        if self.request is not None:
            state["request"] = self.request.to_state()
        return state

    def load_state(self, state):
        # Before wrapspawner's load_state, which builds the child (linking the request).
        self.request = ResourceRequest.from_state(state.get("request"))
        super().load_state(state)

    def clear_state(self):
        super().clear_state()
        self.request = None
