"""Settings -> JupyterHub configuration, and the pieces it installs."""

import pytest
from hpchub_config import configure, sessions
from hpchub_config.settings import settings_from_dict
from traitlets.config import Config


@pytest.fixture
def config(tmp_path, settings_data):
    token = tmp_path / "proxy_auth_token"
    token.write_text("proxy-secret\n")
    settings_data["proxy"]["auth_token_file"] = str(token)
    c = Config()
    configure(c, settings_from_dict(settings_data), "/etc/jupyterhub/hpchub.yaml")
    return c


def test_hub_keeps_servers_and_uses_the_external_proxy(config):
    assert config.JupyterHub.cleanup_servers is False
    assert config.ConfigurableHTTPProxy.should_start is False
    assert config.ConfigurableHTTPProxy.auth_token == "proxy-secret"
    assert config.JupyterHub.proxy_class == "hpchub_config.proxy.WatchedProxy"
    assert config.JupyterHub.hub_connect_url == "https://login1:881"
    assert config.JupyterHub.db_url == "sqlite:////var/lib/jupyterhub/jupyterhub.sqlite"


def test_pam_logins_for_allowed_groups_only(config):
    assert config.JupyterHub.authenticator_class == "hpchub_config.auth.AuditedClusterAuthenticator"
    from hpchub_config.audit import AuditedLoginMixin
    from hpchub_config.auth import AuditedClusterAuthenticator, ClusterPAMAuthenticator

    # The audited class is the PAM-through-helper one (its config applies) plus the audit.
    assert issubclass(AuditedClusterAuthenticator, ClusterPAMAuthenticator)
    assert issubclass(AuditedClusterAuthenticator, AuditedLoginMixin)
    # PAM runs in hpchub's root helper, never in the hub: no PAM sessions, no hashes read.
    assert config.ClusterPAMAuthenticator.helper == "/usr/local/libexec/hpchub/hpchub-auth"
    assert config.ClusterPAMAuthenticator.sudo == "/usr/bin/sudo"
    assert config.ClusterPAMAuthenticator.min_uid == 1000
    assert config.LocalAuthenticator.allowed_groups == {"hpcusers"}
    assert config.Authenticator.admin_users == {"hubadmin"}
    assert "allow_all" not in config.Authenticator


def test_every_local_user_when_no_group_is_set(tmp_path, settings_data):
    token = tmp_path / "t"
    token.write_text("x")
    settings_data["proxy"]["auth_token_file"] = str(token)
    settings_data["hub"]["allowed_groups"] = []
    c = Config()
    configure(c, settings_from_dict(settings_data), "x.yaml")
    assert c.Authenticator.allow_all is True


def test_spawner_profiles_and_absolute_commands(config):
    assert config.JupyterHub.spawner_class == "hpchub_config.spawner.ProfilesSlurmSpawner"
    settings = config.ProfilesSlurmSpawner.settings
    # Both spawners read the one settings object: no copies of its values in traits.
    assert config.SlurmNotebookSpawner.settings is settings
    profiles = settings.spawner.profiles
    assert [p.key for p in profiles] == ["small", "medium"]
    assert profiles[1].cores == 2 and profiles[1].walltime_hours == 4.0
    assert config.Spawner.cmd == ["/opt/software/hpchub/jupyter/bin/jupyterhub-singleuser"]
    assert settings.hub.name == "testhub"
    assert config.Spawner.default_url == "/lab"


def test_services_get_minimal_scopes(config):
    services = {s["name"]: s for s in config.JupyterHub.services}
    assert set(services) == {"announcement", "idle-culler"}
    assert "hpchub_config.announcements" in services["announcement"]["command"]
    assert services["announcement"]["url"] == "http://127.0.0.1:888"
    (role,) = config.JupyterHub.load_roles
    assert role["services"] == ["idle-culler"]
    assert sorted(role["scopes"]) == sorted(
        ["list:users", "read:users:activity", "read:servers", "delete:servers"]
    )
    assert "--timeout=3600" in services["idle-culler"]["command"]
    # Internal TLS: the culler verifies the hub with the hub's CA (else it never culls).
    assert "--ssl-enabled=True" in services["idle-culler"]["command"]
    assert (
        f"--internal-certs-location={config.JupyterHub.internal_certs_location}"
        in services["idle-culler"]["command"]
    )
    assert any(p.endswith("hpchub_config/templates") for p in config.JupyterHub.template_paths)


def test_form_script_is_served_by_the_hub(config):
    from hpchub_config.form import STATIC_DIR, STATIC_ROUTE, StaticHandler
    from jupyterhub import handlers

    routes = [h for h in handlers.default_handlers if h[0] == STATIC_ROUTE]
    assert routes == [(STATIC_ROUTE, StaticHandler, {"path": str(STATIC_DIR)})]
    assert (STATIC_DIR / "form.js").is_file()


def test_no_announcement_service_without_its_section(tmp_path, settings_data):
    token = tmp_path / "t"
    token.write_text("x")
    settings_data["proxy"]["auth_token_file"] = str(token)
    del settings_data["announcement"]
    c = Config()
    configure(c, settings_from_dict(settings_data), "x.yaml")
    assert [s["name"] for s in c.JupyterHub.services] == ["idle-culler"]


def test_batchspawner_port_api_is_replaced(config):
    from hpchub_config.api import PortReportHandler
    from jupyterhub import apihandlers

    routes = [h for h in apihandlers.default_handlers if h[0] == "/api/batchspawner"]
    assert routes == [("/api/batchspawner", PortReportHandler)]


def test_static_config_file_loads_settings_and_drop_ins(tmp_path, settings_data, monkeypatch):
    """jupyterhub_config.py as JupyterHub loads it, with a site drop-in last."""
    import shutil
    from pathlib import Path

    import yaml
    from traitlets.config.loader import PyFileConfigLoader

    token = tmp_path / "t"
    token.write_text("x")
    settings_data["proxy"]["auth_token_file"] = str(token)
    settings = tmp_path / "hpchub.yaml"
    settings.write_text(yaml.safe_dump(settings_data))
    shutil.copy(Path(__file__).parents[2] / "hub_config" / "jupyterhub_config.py", tmp_path)
    (tmp_path / "jupyterhub_config.d").mkdir()
    (tmp_path / "jupyterhub_config.d" / "50-site.py").write_text(
        "c.Spawner.default_url = '/tree'\n"
    )
    monkeypatch.setenv("HPCHUB_SETTINGS", str(settings))
    config = PyFileConfigLoader("jupyterhub_config.py", path=str(tmp_path)).load_config()
    assert config.Spawner.default_url == "/tree"
    assert config.JupyterHub.cleanup_servers is False


def test_invalid_settings_stop_the_static_config(tmp_path, settings_data, monkeypatch):
    import shutil
    from pathlib import Path

    import yaml
    from hpchub_config.settings import SettingsError
    from traitlets.config.loader import PyFileConfigLoader

    settings_data["hub"]["admin_user"] = ["typo"]
    settings = tmp_path / "hpchub.yaml"
    settings.write_text(yaml.safe_dump(settings_data))
    shutil.copy(Path(__file__).parents[2] / "hub_config" / "jupyterhub_config.py", tmp_path)
    monkeypatch.setenv("HPCHUB_SETTINGS", str(settings))
    with pytest.raises(SettingsError) as info:
        PyFileConfigLoader("jupyterhub_config.py", path=str(tmp_path)).load_config()
    assert "hub.admin_user: unknown key (did you mean hub.admin_users?)" in str(info.value)


def test_requests_go_through_the_audit_log(config):
    from hpchub_config import audit

    assert config.JupyterHub.tornado_settings["log_function"] is audit.log_request


def test_internal_traffic_is_mutual_tls_and_user_certificates_name_no_local_host(config):
    assert config.JupyterHub.internal_ssl is True
    assert config.JupyterHub.internal_certs_location == "/var/lib/jupyterhub/internal-tls"
    # The hub's certificate names the host the compute nodes connect to and the public names.
    assert config.JupyterHub.trusted_alt_names == ["DNS:login1", "DNS:jupyter.example.org"]
    # A user's server certificate never names localhost/127.0.0.1 (the login node's listeners).
    assert config.Spawner.ssl_alt_names_include_local is False
    assert config.ConfigurableHTTPProxy.api_url == "https://127.0.0.1:801"


def test_one_origin_unless_subdomain_host_is_set(config):
    assert "subdomain_host" not in config.JupyterHub
    assert config.JupyterHub.template_vars["hpchub_announcement_url"] == ""


def test_named_servers_follow_the_per_user_limit(tmp_path, settings_data, config):
    assert config.JupyterHub.allow_named_servers is True
    assert config.JupyterHub.named_server_limit_per_user == 2
    token = tmp_path / "proxy_auth_token"
    token.write_text("proxy-secret\n")
    settings_data["proxy"]["auth_token_file"] = str(token)
    settings_data["hub"]["named_server_limit_per_user"] = 0
    c = Config()
    configure(c, settings_from_dict(settings_data), "/etc/jupyterhub/hpchub.yaml")
    assert c.JupyterHub.allow_named_servers is False


def test_pages_get_the_sessions_of_the_user_who_views_them(config):
    assert config.JupyterHub.template_vars["hpchub_sessions"] is sessions.user_sessions
    assert config.JupyterHub.template_vars["hpchub_sessions"](None) == {}


def test_per_user_origins_and_the_announcement_at_its_own_host(tmp_path, settings_data):
    token = tmp_path / "proxy_auth_token"
    token.write_text("proxy-secret\n")
    settings_data["proxy"]["auth_token_file"] = str(token)
    settings_data["hub"]["subdomain_host"] = "https://hub.example.org:8443"
    c = Config()
    configure(c, settings_from_dict(settings_data), "/etc/jupyterhub/hpchub.yaml")
    assert c.JupyterHub.subdomain_host == "https://hub.example.org:8443"
    assert c.JupyterHub.template_vars["hpchub_announcement_url"] == (
        "https://announcement--service.hub.example.org:8443/services/announcement/latest"
    )


@pytest.mark.parametrize(
    "value",
    [
        "https://hub.example.org/",  # a path: the hub's base URL is not the domain
        "https://hub.example.org/jupyter",
        "http://hub.example.org",  # plain HTTP
        "https://Hub.Example.org",  # host names are compared lower case by the proxy
        "https://localhost",  # no domain to put user names under
        "https://hub.example.org\n",
    ],
)
def test_subdomain_host_must_be_an_https_domain_without_path(settings_data, value):
    from hpchub_config.settings import SettingsError

    settings_data["hub"]["subdomain_host"] = value
    with pytest.raises(SettingsError, match="hub.subdomain_host"):
        settings_from_dict(settings_data)


def test_census_service_gets_read_scopes_only(tmp_path, settings_data):
    token = tmp_path / "t"
    token.write_text("x")
    census_token = tmp_path / "census_token"
    census_token.write_text("census-secret\n")
    settings_data["proxy"]["auth_token_file"] = str(token)
    settings_data["hub"]["census_token_file"] = str(census_token)
    c = Config()
    configure(c, settings_from_dict(settings_data), "x.yaml")
    services = {s["name"]: s for s in c.JupyterHub.services}
    assert services["census"] == {"name": "census", "api_token": "census-secret"}
    roles = {r["name"]: r for r in c.JupyterHub.load_roles}
    assert roles["census"]["services"] == ["census"]
    assert sorted(roles["census"]["scopes"]) == ["list:users", "read:servers"]


def test_metrics_service_may_read_the_metrics_only(tmp_path, settings_data):
    token = tmp_path / "t"
    token.write_text("x")
    metrics_token = tmp_path / "metrics_token"
    metrics_token.write_text("metrics-secret\n")
    settings_data["proxy"]["auth_token_file"] = str(token)
    settings_data["hub"]["metrics_token_file"] = str(metrics_token)
    c = Config()
    configure(c, settings_from_dict(settings_data), "x.yaml")
    services = {s["name"]: s for s in c.JupyterHub.services}
    assert services["metrics"] == {"name": "metrics", "api_token": "metrics-secret"}
    roles = {r["name"]: r for r in c.JupyterHub.load_roles}
    assert roles["metrics"]["services"] == ["metrics"]
    assert roles["metrics"]["scopes"] == ["read:metrics"]
    # JupyterHub asks for that scope at /hub/metrics (authenticate_prometheus, on by default).
    assert c.JupyterHub.get("authenticate_prometheus", True) is True


def test_no_census_service_without_its_token_file(config):
    assert "census" not in {s["name"] for s in config.JupyterHub.services}
    assert "census" not in {r["name"] for r in config.JupyterHub.load_roles}
    assert "metrics" not in {s["name"] for s in config.JupyterHub.services}


def test_many_users_settings_reach_jupyterhub_the_jobs_and_the_culler(tmp_path, settings_data):
    token = tmp_path / "t"
    token.write_text("x")
    settings_data["proxy"]["auth_token_file"] = str(token)
    settings_data["hub"] |= {"concurrent_spawn_limit": 250, "last_activity_interval": 600}
    settings_data["spawner"]["activity_interval"] = 120
    settings_data["idle_culler"] = {"concurrency": 20}
    c = Config()
    configure(c, settings_from_dict(settings_data), "x.yaml")
    assert c.JupyterHub.concurrent_spawn_limit == 250
    assert c.JupyterHub.last_activity_interval == 600
    # Exported to the job (a JUPYTERHUB_* variable), read by jupyterhub-singleuser.
    assert c.Spawner.environment == {"JUPYTERHUB_ACTIVITY_INTERVAL": "120"}
    (culler,) = [s for s in c.JupyterHub.services if s["name"] == "idle-culler"]
    assert "--concurrency=20" in culler["command"]


def test_many_users_settings_have_limits(settings_data):
    from hpchub_config.settings import SettingsError

    settings_data["hub"]["last_activity_interval"] = 5
    settings_data["idle_culler"] = {"concurrency": 0}
    with pytest.raises(SettingsError) as info:
        settings_from_dict(settings_data)
    assert "hub.last_activity_interval: must be at least 30" in str(info.value)
    assert "idle_culler.concurrency: must be at least 1" in str(info.value)
