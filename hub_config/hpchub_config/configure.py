"""Settings -> JupyterHub configuration. Reads top to bottom like the hub it builds."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from . import api
from .settings import Settings

TEMPLATES = str(Path(__file__).parent / "templates")
SPAWNER = "hpchub_config.spawner.ProfilesSlurmSpawner"
PROXY = "hpchub_config.proxy.WatchedProxy"
AUTHENTICATOR = "hpchub_config.auth.ClusterPAMAuthenticator"


def configure(c, settings: Settings, settings_path: str) -> None:
    hub, proxy, spawner = settings.hub, settings.proxy, settings.spawner

    # --- the hub process: unprivileged, its state in one directory -------------------
    c.JupyterHub.log_level = hub.log_level
    c.JupyterHub.hub_bind_url = hub.bind_url
    c.JupyterHub.hub_connect_url = hub.connect_url
    if hub.public_url:
        c.JupyterHub.public_url = hub.public_url
    c.JupyterHub.db_url = hub.db_url or f"sqlite:///{hub.state_dir}/jupyterhub.sqlite"
    c.JupyterHub.cookie_secret_file = hub.cookie_secret_file
    c.JupyterHub.pid_file = ""
    # User servers are Slurm jobs: they keep running when the hub restarts or upgrades.
    c.JupyterHub.cleanup_servers = False
    c.JupyterHub.concurrent_spawn_limit = hub.concurrent_spawn_limit
    c.JupyterHub.active_server_limit = hub.active_server_limit
    c.JupyterHub.template_paths = list(hub.template_paths)

    # --- the proxy: its own systemd service, API on localhost -------------------------
    c.JupyterHub.proxy_class = PROXY
    c.ConfigurableHTTPProxy.should_start = False
    c.ConfigurableHTTPProxy.api_url = proxy.api_url
    c.ConfigurableHTTPProxy.auth_token = Path(proxy.auth_token_file).read_text().strip()
    c.WatchedProxy.route_check_interval = proxy.route_check_interval

    # --- logins: PAM against the cluster's accounts ----------------------------------
    c.JupyterHub.authenticator_class = AUTHENTICATOR
    c.PAMAuthenticator.service = "login"
    c.PAMAuthenticator.open_sessions = False  # needs root; the hub is unprivileged
    c.ClusterPAMAuthenticator.min_uid = hub.min_uid
    c.Authenticator.admin_users = set(hub.admin_users)
    if hub.allowed_groups:
        c.LocalAuthenticator.allowed_groups = set(hub.allowed_groups)
    else:
        c.Authenticator.allow_all = True

    # --- spawning: profiles of Slurm jobs ---------------------------------------------
    c.JupyterHub.spawner_class = SPAWNER
    c.ProfilesSlurmSpawner.hpc_profiles = [
        {
            "key": p.key,
            "display_name": p.display_name,
            "partition": p.partition,
            "cores": p.cores,
            "memory_gb": p.memory_gb,
            "walltime_hours": p.walltime_hours,
            "gpus": p.gpus,
            "account": p.account,
            "sbatch_options": list(p.sbatch_options),
        }
        for p in spawner.profiles
    ]
    c.ProfilesSlurmSpawner.allow_custom_resources = spawner.allow_custom_resources
    c.ProfilesSlurmSpawner.allowed_partitions = list(spawner.partitions)
    c.ProfilesSlurmSpawner.max_walltime_hours = spawner.max_walltime_hours
    c.ProfilesSlurmSpawner.accounts_from_slurmdbd = spawner.accounts_from_slurmdbd
    c.ProfilesSlurmSpawner.slurm_bin_dir = spawner.slurm_bin_dir
    c.ProfilesSlurmSpawner.cluster_info_ttl = float(spawner.cluster_info_ttl)
    c.SlurmNotebookSpawner.hub_name = hub.name
    c.SlurmNotebookSpawner.notebook_env = spawner.notebook_env
    c.SlurmNotebookSpawner.job_log_dir = spawner.job_log_dir
    c.SlurmNotebookSpawner.slurm_bin_dir = spawner.slurm_bin_dir
    c.SlurmNotebookSpawner.sudo = spawner.sudo
    c.SlurmNotebookSpawner.req_prologue = "\n".join(spawner.job_prologue)
    c.SlurmNotebookSpawner.startup_poll_interval = spawner.startup_poll_interval
    # Shared by the wrapper and its Slurm child (wrapspawner links common traits).
    c.Spawner.cmd = [f"{spawner.notebook_env}/bin/jupyterhub-singleuser"]
    c.Spawner.default_url = spawner.default_url
    c.Spawner.start_timeout = spawner.start_timeout
    c.Spawner.http_timeout = spawner.http_timeout
    c.Spawner.poll_interval = spawner.poll_interval
    # Replace batchspawner's port-report API with one that accepts only a port.
    api.install()

    # --- services ----------------------------------------------------------------------
    services, roles = [], []
    announcement = settings.announcement
    if announcement.enabled:
        services.append(
            {
                "name": "announcement",
                "url": f"http://127.0.0.1:{announcement.port}",
                "command": [
                    sys.executable,
                    "-m",
                    "hpchub_config.announcements",
                    "--settings",
                    settings_path,
                ],
                "cwd": hub.state_dir,
                # Admins open its page without an extra OAuth consent screen. The
                # service gets no API scopes: it only needs to know who visits.
                "oauth_no_confirm": True,
            }
        )
        c.JupyterHub.template_paths = [*c.JupyterHub.template_paths, TEMPLATES]
    culler = settings.idle_culler
    if culler.enabled:
        services.append(
            {
                "name": "idle-culler",
                "command": [
                    sys.executable,
                    "-m",
                    "jupyterhub_idle_culler",
                    f"--timeout={culler.timeout}",
                    f"--cull-every={culler.every}",
                    f"--max-age={culler.max_age}",
                ],
            }
        )
        roles.append(
            {
                "name": "idle-culler",
                "description": "Stop idle notebook servers (and nothing else)",
                "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
                "services": ["idle-culler"],
            }
        )
    c.JupyterHub.services = services
    c.JupyterHub.load_roles = roles

    # JupyterHub >= 5.2 passes no environment to spawners; the batch commands use
    # absolute paths and the job builds its own environment (see spawner.BATCH_SCRIPT).
    c.Spawner.env_keep = ["LANG"] if "LANG" in os.environ else []
