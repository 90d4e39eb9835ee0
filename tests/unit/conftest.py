"""Shared helpers for the unit tests of hub_config (no testbed needed)."""

import copy
import types

import pytest
from hpchub_config.cluster import Partition
from hpchub_config.settings import settings_from_dict
from traitlets.config import Config

BASE_SETTINGS = {
    "hub": {
        "name": "testhub",
        "connect_url": "https://login1:881",
        "bind_url": "https://0.0.0.0:881",
        "public_names": ["login1", "jupyter.example.org"],
        "internal_tls_dir": "/var/lib/jupyterhub/internal-tls",
        "cookie_secret_file": "/var/lib/jupyterhub/jupyterhub_cookie_secret",
        "admin_users": ["hubadmin"],
        "allowed_groups": ["hpcusers"],
    },
    "proxy": {"api_url": "https://127.0.0.1:801", "auth_token_file": "/nonexistent/set-by-test"},
    "spawner": {
        "notebook_env": "/opt/software/hpchub/jupyter",
        "profiles": [
            {
                "key": "small",
                "display_name": "1 core, 2 GB, 1 h",
                "partition": "batch",
                "cores": 1,
                "memory_gb": 2,
                "walltime_hours": 1,
            },
            {
                "key": "medium",
                "display_name": "2 cores, 4 GB, 4 h",
                "partition": "batch",
                "cores": 2,
                "memory_gb": 4,
                "walltime_hours": 4,
            },
        ],
    },
    "announcement": {
        "persist_path": "/var/lib/jupyterhub/announcements.json",
        "cookie_secret_file": "/var/lib/jupyterhub/announcement_cookie_secret",
        "enabled": True,
        "seed": [{"message": "Maintenance on Monday"}],
    },
    "idle_culler": {"timeout": 3600},
}


@pytest.fixture
def settings_data():
    return copy.deepcopy(BASE_SETTINGS)


@pytest.fixture
def partitions():
    return {
        "batch": Partition(
            name="batch",
            default=True,
            up=True,
            max_cores=4,
            max_memory_mb=8000,
            max_gpus=0,
            max_walltime_minutes=480,
            usable_nodes=2,
            nodes=("c1", "c2"),
        ),
        "gpu": Partition(
            name="gpu",
            default=False,
            up=True,
            max_cores=8,
            max_memory_mb=64000,
            max_gpus=2,
            max_walltime_minutes=None,
            usable_nodes=1,
            nodes=("g1",),
        ),
    }


def fake_user(name="alice"):
    return types.SimpleNamespace(
        name=name, url=f"/user/{name}/", escaped_name=name, base_url="/", id=1
    )


def fake_hub():
    return types.SimpleNamespace(
        api_url="https://login1:881/hub/api",
        base_url="/hub/",
        url="https://login1:881/hub/",
        public_host="",
    )


def spawner_settings():
    """The settings the spawner tests run with (a hub named testhub, env in /opt/env)."""
    data = copy.deepcopy(BASE_SETTINGS)
    data["spawner"]["notebook_env"] = "/opt/env"
    data["spawner"]["profiles"][0]["display_name"] = "Small"
    data["spawner"]["profiles"][1]["display_name"] = "Medium"
    data["spawner"]["profiles"][1]["sbatch_options"] = ["--qos=interactive"]
    return settings_from_dict(data)


@pytest.fixture
def spawner_config():
    c = Config()
    settings = spawner_settings()
    c.ProfilesSlurmSpawner.settings = settings
    c.SlurmNotebookSpawner.settings = settings
    c.Spawner.cmd = ["/opt/env/bin/jupyterhub-singleuser"]
    return c
