"""Settings -> JupyterHub configuration. Reads top to bottom like the hub it builds."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from urllib.parse import urlparse

from . import api, audit, database, form, sessions
from .settings import Settings
from .tls import alt_names

TEMPLATES = str(Path(__file__).parent / "templates")
SPAWNER = "hpchub_config.spawner.ProfilesSlurmSpawner"
PROXY = "hpchub_config.proxy.WatchedProxy"
AUTHENTICATOR = "hpchub_config.auth.AuditedClusterAuthenticator"
# The census service's scopes: list the users, read their servers (pending, ready, options).
CENSUS_SCOPES = ("list:users", "read:servers")
# The metrics service's: /hub/metrics and nothing else.
METRICS_SCOPES = ("read:metrics",)


def configure(c, settings: Settings, settings_path: str) -> None:
    hub, proxy, spawner = settings.hub, settings.proxy, settings.spawner

    # --- the hub process: unprivileged, its state in one directory -------------------
    c.JupyterHub.log_level = hub.log_level
    c.JupyterHub.hub_bind_url = hub.bind_url
    c.JupyterHub.hub_connect_url = hub.connect_url
    if hub.public_url:
        c.JupyterHub.public_url = hub.public_url
    # Per-user origins: a user's server (its HTML and JavaScript) is served from its own
    # host name, so its pages cannot script the hub's (the proxy routes by host name).
    if hub.subdomain_host:
        c.JupyterHub.subdomain_host = hub.subdomain_host
    c.JupyterHub.db_url = database.url(hub)
    c.JupyterHub.cookie_secret_file = hub.cookie_secret_file
    c.JupyterHub.pid_file = ""
    # User servers are Slurm jobs: they keep running when the hub restarts or upgrades.
    c.JupyterHub.cleanup_servers = False
    # Many users (docs/performance.md): spawns and servers the hub accepts at once, and how
    # often it reads every route's activity from the proxy.
    c.JupyterHub.concurrent_spawn_limit = hub.concurrent_spawn_limit
    c.JupyterHub.active_server_limit = hub.active_server_limit
    c.JupyterHub.last_activity_interval = hub.last_activity_interval
    # Site templates first, then hpchub's (home page cards, pending page, banner).
    c.JupyterHub.template_paths = [*hub.template_paths, TEMPLATES]
    # What the pages show of each server's job (sessions.py: no Slurm query per page).
    c.JupyterHub.template_vars = {"hpchub_sessions": sessions.user_sessions}

    # --- internal TLS: hub, proxy and notebook servers authenticate each other ---------
    # JupyterHub's internal_ssl: mutual TLS with CAs per component (hub, proxy API, proxy
    # client, notebooks, services), generated once in internal_tls_dir. A notebook
    # server's certificate names the compute nodes it may run on, never the login node's
    # loopback: a user's certificate cannot stand in for the hub's own listeners there.
    # The proxy checks a target's certificate against the Host the browser asked for: the
    # hub's certificate carries every public name (the spawner adds a user's own).
    c.JupyterHub.internal_ssl = True
    c.JupyterHub.internal_certs_location = hub.internal_tls_dir
    c.JupyterHub.trusted_alt_names = alt_names(
        [urlparse(hub.connect_url).hostname, *hub.public_names]
    )
    c.Spawner.ssl_alt_names_include_local = False

    # --- the proxy: its own systemd service, API on localhost -------------------------
    c.JupyterHub.proxy_class = PROXY
    c.ConfigurableHTTPProxy.should_start = False
    c.ConfigurableHTTPProxy.api_url = proxy.api_url
    c.ConfigurableHTTPProxy.auth_token = Path(proxy.auth_token_file).read_text().strip()
    c.WatchedProxy.route_check_interval = proxy.route_check_interval

    # --- the audit log: security events as JSON lines (journalctl -t hpchub-audit) --------
    audit.setup()
    c.JupyterHub.tornado_settings = {"log_function": audit.log_request}

    # --- logins: PAM against the cluster's accounts, through hpchub's root helper -------
    # (the hub cannot read password hashes; no PAM sessions are opened)
    c.JupyterHub.authenticator_class = AUTHENTICATOR
    c.ClusterPAMAuthenticator.min_uid = hub.min_uid
    c.ClusterPAMAuthenticator.sudo = spawner.sudo
    c.ClusterPAMAuthenticator.helper = hub.auth_helper
    c.Authenticator.admin_users = set(hub.admin_users)
    if hub.allowed_groups:
        c.LocalAuthenticator.allowed_groups = set(hub.allowed_groups)
    else:
        c.Authenticator.allow_all = True

    # --- spawning: profiles of Slurm jobs ---------------------------------------------
    # The spawners read their settings (profiles, Slurm paths, limits) from one object.
    c.JupyterHub.spawner_class = SPAWNER
    c.ProfilesSlurmSpawner.settings = settings
    c.SlurmNotebookSpawner.settings = settings
    # JupyterHub's own spawner traits, shared by the wrapper and its Slurm child.
    c.Spawner.cmd = [f"{spawner.notebook_env}/bin/jupyterhub-singleuser"]
    c.Spawner.default_url = spawner.default_url
    c.Spawner.start_timeout = spawner.start_timeout
    c.Spawner.http_timeout = spawner.http_timeout
    c.Spawner.poll_interval = spawner.poll_interval
    # Named servers: several sessions per user, each its own Slurm job with its own
    # validated options (0 = only the default server).
    c.JupyterHub.allow_named_servers = hub.named_server_limit_per_user > 0
    c.JupyterHub.named_server_limit_per_user = hub.named_server_limit_per_user
    # How often each running server reports its activity to the hub (exported to the job).
    c.Spawner.environment = {"JUPYTERHUB_ACTIVITY_INTERVAL": str(spawner.activity_interval)}
    # Replace batchspawner's port-report API with one that accepts only a port, and serve
    # the form's script.
    api.install()
    form.install()
    # The sessions API (live updates of the cards) and the no-JavaScript stop/new-server.
    sessions.install()

    # --- services ----------------------------------------------------------------------
    services, roles = [], []
    announcement = settings.announcement
    if announcement is not None and announcement.enabled:
        services.append(
            {
                "name": "announcement",
                # Plain HTTP on the loopback, on a port below 1024 that no user can bind.
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
        # Where hub pages fetch the banner from: with per-user origins the service has its
        # own host name (announcement--service.<hub domain>) and allows reads from the hub.
        c.JupyterHub.template_vars["hpchub_announcement_url"] = announcement_url(hub.subdomain_host)
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
                    f"--concurrency={culler.concurrency}",
                    # The hub's API speaks internal TLS only: without these the culler cannot
                    # verify the hub and dies at every round (no server is ever culled). It
                    # runs as the hub account, which owns these certificates.
                    "--ssl-enabled=True",
                    f"--internal-certs-location={hub.internal_tls_dir}",
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
    # Token-only services outside the hub, each with one narrow role:
    # - census: `make census` (playbooks/census.yml) may list users and read their servers'
    #   state, nothing else (docs/census.md);
    # - metrics: Prometheus (roles/prometheus) may read /hub/metrics, nothing else.
    for name, token_file, description, scopes in (
        (
            "census",
            hub.census_token_file,
            "Read-only census: count users and servers (docs/census.md)",
            CENSUS_SCOPES,
        ),
        (
            "metrics",
            hub.metrics_token_file,
            "Prometheus scrapes /hub/metrics (docs/operations.md)",
            METRICS_SCOPES,
        ),
    ):
        if not token_file:
            continue
        services.append({"name": name, "api_token": Path(token_file).read_text().strip()})
        roles.append(
            {"name": name, "description": description, "scopes": list(scopes), "services": [name]}
        )
    c.JupyterHub.services = services
    c.JupyterHub.load_roles = roles

    # JupyterHub >= 5.2 passes no environment to spawners; the Slurm helper uses absolute
    # paths and the job builds its own environment (see spawner.BATCH_SCRIPT).
    c.Spawner.env_keep = ["LANG"] if "LANG" in os.environ else []


def announcement_url(subdomain_host: str) -> str:
    """The public URL of the announcement service's latest message ("" = relative)."""
    path = "/services/announcement/latest"
    if not subdomain_host:
        return ""  # the page uses its own prefix
    parsed = urlparse(subdomain_host)
    port = f":{parsed.port}" if parsed.port else ""
    # JupyterHub's default subdomain hook names it (announcement--service.<hub domain>).
    from jupyterhub.utils import subdomain_hook_idna

    host = subdomain_hook_idna("announcement", parsed.hostname, "service")
    return f"{parsed.scheme}://{host}{port}{path}"
