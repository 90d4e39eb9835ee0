# hpchub's jupyterhub_config.py: the same file on every hub. What differs between sites
# lives in ONE settings file rendered by Ansible (/etc/jupyterhub/hpchub.yaml, validated:
# an unknown or mistyped key stops the hub with an error naming it). Site-specific Python
# goes into jupyterhub_config.d/*.py next to this file: loaded last, it may override
# anything set here.
import glob
import os

from hpchub_config import configure, load_settings

settings_path = os.environ.get("HPCHUB_SETTINGS", "/etc/jupyterhub/hpchub.yaml")
configure(c, load_settings(settings_path), settings_path)  # noqa: F821 - c is the config

for drop_in in sorted(
    glob.glob(os.path.join(os.path.dirname(__file__), "jupyterhub_config.d", "*.py"))
):
    load_subconfig(drop_in)  # noqa: F821 - provided by traitlets' config loader
