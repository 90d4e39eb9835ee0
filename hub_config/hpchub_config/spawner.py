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
from traitlets import Bool, Dict, Float, List, Type, Unicode, default
from wrapspawner import ProfilesSpawner, WrapSpawner

from .cluster import ClusterQueryError, cluster_info
from .form import render_form
from .options import (
    OPTION_NAMES,
    OptionsError,
    ProfileSpec,
    ResourceRequest,
    offered_partitions,
    resolve_request,
)

BATCH_SCRIPT = """#!/bin/bash
#SBATCH --job-name=jupyter-{{hub_name}}-{{profile}}
#SBATCH --output=/dev/null
#SBATCH --chdir={{homedir}}
#SBATCH --export={{keepvars}}
#SBATCH --no-requeue
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --cpus-per-task={{nprocs}}
#SBATCH --mem={{memory}}
#SBATCH --time={{runtime}}
{% if partition %}#SBATCH --partition={{partition}}
{% endif %}{% if account %}#SBATCH --account={{account}}
{% endif %}{% if gres %}#SBATCH --gres={{gres}}
{% endif %}{% for option in sbatch_options %}#SBATCH {{option}}
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

    hub_name = Unicode("hpchub", help="Name of the hub, part of the job name").tag(config=True)
    notebook_env = Unicode(help="Prefix of the notebook environment on the compute nodes").tag(
        config=True
    )
    job_log_dir = Unicode(".hpchub/logs", help="Job log folder, relative to home").tag(config=True)
    slurm_bin_dir = Unicode("/usr/bin", help="Where sbatch/squeue/scancel live").tag(config=True)
    sudo = Unicode("/usr/bin/sudo", help="sudo, to run Slurm commands as the user").tag(config=True)
    job_check_interval = Float(
        2.0, help="While waiting for the server's port: seconds between job state checks"
    ).tag(config=True)

    # Filled from the validated request (see ProfilesSlurmSpawner.child_config_for).
    req_profile = Unicode("default")
    req_sbatch_options = List(Unicode())
    req_hub_name = Unicode()
    req_log_dir = Unicode()
    req_env_prefix = Unicode()
    req_srun = Unicode("")  # the server runs in the batch step: no --export surprises

    batch_script = Unicode(BATCH_SCRIPT).tag(config=True)
    # %T state, %B batch host, %r reason
    batch_query_cmd = Unicode("squeue -h -j {job_id} -o '%T|%B|%r'").tag(config=True)
    state_pending_re = Unicode(r"^(?:PENDING|CONFIGURING)\|").tag(config=True)
    state_running_re = Unicode(r"^(?:RUNNING|COMPLETING)\|").tag(config=True)
    state_exechost_re = Unicode(r"^(?:RUNNING|COMPLETING)\|([\w.-]+)\|").tag(config=True)

    @default("req_hub_name")
    def _default_hub_name(self):
        return self.hub_name

    @default("req_log_dir")
    def _default_log_dir(self):
        return self.job_log_dir

    @default("req_env_prefix")
    def _default_env_prefix(self):
        return self.notebook_env

    @default("exec_prefix")
    def _default_exec_prefix(self):
        return f"{self.sudo} -E -u {{username}}"

    @default("batch_submit_cmd")
    def _default_submit(self):
        return f"{self.slurm_bin_dir}/sbatch --parsable"

    @default("batch_cancel_cmd")
    def _default_cancel(self):
        return f"{self.slurm_bin_dir}/scancel {{job_id}}"

    @default("batchspawner_singleuser_cmd")
    def _default_singleuser(self):
        return f"{self.notebook_env}/bin/batchspawner-singleuser"

    def _query_cmd(self, template: str) -> str:
        subvars = self.get_req_subvars()
        subvars["job_id"] = self.job_id
        return " ".join(
            (format_template(self.exec_prefix, **subvars), format_template(template, **subvars))
        )

    async def query_job_status(self):
        # Make the configured squeue absolute: JupyterHub >= 5.2 passes no PATH.
        if not self.batch_query_cmd.startswith("/"):
            self.batch_query_cmd = f"{self.slurm_bin_dir}/{self.batch_query_cmd}"
        return await super().query_job_status()

    async def _get_batch_script(self, **subvars):
        # Only trusted values go into the script: batchspawner's caller merged
        # self.user_options into `subvars`; rebuild them from the req_* traits instead.
        trusted = self.get_req_subvars()
        trusted["cmd"] = self.cmd_formatted_for_batch()
        return format_template(self.batch_script, **trusted)

    @property
    def log_path(self) -> str:
        return f"~/{self.job_log_dir}/jupyterlab-{self.job_id}.log"

    def _reason(self) -> str:
        fields = self.job_status.split("|")
        return fields[2].strip() if len(fields) > 2 else ""

    async def _final_state(self) -> str:
        """State and reason of a job that left the queue (while Slurm still knows it)."""
        template = f"{self.slurm_bin_dir}/squeue -h -t all -j {{job_id}} -o '%T|%r'"
        try:
            out = await self.run_command(self._query_cmd(template))
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
        self.ip = self.traits()["ip"].default_value
        self.port = 0
        if self.server:
            self.server.port = self.port
        started = time.monotonic()
        try:
            await self.submit_batch_script()
        except RuntimeError as e:
            raise SpawnFailed(f"Slurm refused the notebook job: {e}") from e
        if not self.job_id:
            raise SpawnFailed("Slurm accepted the notebook job but returned no job id")
        self.log.info(
            "%s: submitted Slurm job %s (profile %s)", self.user.name, self.job_id, self.req_profile
        )

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
        # batchspawner-singleuser reports its port BEFORE the server starts listening, and
        # JupyterHub then only waits for HTTP (http_timeout): a server that crashes on
        # start-up would be noticed minutes later. So wait here until the port accepts
        # connections, checking every few seconds that the job is still alive.
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
        return self.ip, self.port

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


def profile_specs(profiles: list[dict]) -> list[ProfileSpec]:
    return [
        ProfileSpec(**{**p, "sbatch_options": tuple(p.get("sbatch_options", ()))}) for p in profiles
    ]


class ProfilesSlurmSpawner(ProfilesSpawner):
    """The profile menu + resource form; each choice becomes a SlurmNotebookSpawner."""

    hpc_profiles = List(Dict(), help="Profiles: dicts with the fields of options.ProfileSpec").tag(
        config=True
    )
    allow_custom_resources = Bool(True).tag(config=True)
    allowed_partitions = List(Unicode(), help="Partitions offered; [] = all").tag(config=True)
    max_walltime_hours = Float(24.0).tag(config=True)
    accounts_from_slurmdbd = Bool(False).tag(config=True)
    slurm_bin_dir = Unicode("/usr/bin").tag(config=True)
    cluster_info_ttl = Float(60.0).tag(config=True)

    # Never anything but a Slurm job: stock wrapspawner defaults to LocalProcessSpawner.
    child_class = Type(SlurmNotebookSpawner, SlurmNotebookSpawner)
    request = Dict(help="The validated resource request of the current server")

    @default("profiles")
    def _default_profiles(self):
        return [(p.display_name, p.key, SlurmNotebookSpawner, {}) for p in self.specs]

    @default("options_form")
    def _default_options_form(self):
        # Non-empty so JupyterHub shows a form; its HTML comes from get_options_form().
        return "hpchub resource form"

    @default("apply_user_options")
    def _default_apply_user_options(self):
        return ProfilesSlurmSpawner._apply_user_options_hook

    @property
    def specs(self) -> list[ProfileSpec]:
        return profile_specs(self.hpc_profiles)

    @property
    def cluster(self):
        return cluster_info(self.slurm_bin_dir, self.cluster_info_ttl)

    async def _accounts(self) -> list[str] | None:
        if not self.accounts_from_slurmdbd:
            return None
        return await self.cluster.accounts(self.user.name)

    async def resolve(self, user_options) -> ResourceRequest:
        partitions = offered_partitions(await self.cluster.partitions(), self.allowed_partitions)
        return resolve_request(
            user_options,
            self.specs,
            partitions,
            allow_custom_resources=self.allow_custom_resources,
            max_walltime_hours=self.max_walltime_hours,
            accounts=await self._accounts(),
        )

    async def get_options_form(self):
        try:
            partitions = offered_partitions(
                await self.cluster.partitions(), self.allowed_partitions
            )
            accounts = await self._accounts()
        except ClusterQueryError as e:
            self.log.error("Cannot read partitions from Slurm for the form: %s", e)
            return (
                '<div class="alert alert-danger">The hub cannot reach Slurm right now '
                f"({web.escape.xhtml_escape(str(e))}). Please try again in a minute.</div>"
            )
        previous = self.orm_spawner.user_options if self.orm_spawner else None
        return render_form(
            self.specs,
            partitions,
            allow_custom_resources=self.allow_custom_resources,
            max_walltime_hours=self.max_walltime_hours,
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
        spawner.request = request.as_dict()
        spawner.log.info(
            "%s: profile %s -> %s", spawner.user.name, request.profile, request.describe()
        )

    @staticmethod
    def child_config_for(request: dict) -> dict:
        return {
            "req_profile": request["profile"],
            "req_partition": request["partition"],
            "req_nprocs": str(request["cores"]),
            "req_memory": f"{request['memory_gb']}G",
            "req_runtime": str(request["walltime_minutes"]),
            "req_gres": f"gpu:{request['gpus']}" if request["gpus"] else "",
            "req_account": request["account"],
            "req_sbatch_options": list(request.get("sbatch_options", ())),
            # Not linked from the wrapper: the child never sees raw user options.
            "user_options": {},
        }

    def select_profile(self, profile):
        # Whatever the stored profile, the child is a Slurm job (never a local process);
        # its resources come from the saved child_config.
        self.child_class = SlurmNotebookSpawner

    def construct_child(self):
        # A new server: the child is built from the validated request alone. A server
        # restored from the database (load_state) keeps its saved child_config.
        if self.child_spawner is None and not self.child_config and self.request:
            self.child_profile = self.request["profile"]
            self.child_config = self.child_config_for(self.request)
        self.child_class = SlurmNotebookSpawner
        return WrapSpawner.construct_child(self)

    def start(self):
        if not self.request:
            # apply_user_options did not run or failed: never submit unvalidated input.
            raise SpawnFailed("this server has no validated resource request")
        return super().start()

    def get_state(self):
        state = super().get_state()
        if self.request:
            state["request"] = self.request
        return state

    def load_state(self, state):
        self.request = state.get("request", {})
        super().load_state(state)

    def clear_state(self):
        super().clear_state()
        self.request = {}
