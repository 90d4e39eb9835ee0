"""hpchub's JupyterHub configuration package (see jupyterhub_config.py)."""

from .configure import configure
from .settings import DEFAULT_SETTINGS_PATH, Settings, SettingsError, load_settings

__all__ = ["DEFAULT_SETTINGS_PATH", "Settings", "SettingsError", "configure", "load_settings"]
