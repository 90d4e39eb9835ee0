"""hpchub: the notebook job's end, for JupyterLab's walltime clock (labextension hpchub-walltime).

The batch script exports HPCHUB_JOB_END (Unix time, from squeue) and
HPCHUB_WALLTIME_WARNING_MINUTES; JupyterLab puts page_config_data into its page, where the
extension reads them. Outside an hpchub notebook job this does nothing.
"""

import os

c = get_config()  # noqa: F821 - provided by the Jupyter config loader

_end = os.environ.get("HPCHUB_JOB_END", "")
_warning = os.environ.get("HPCHUB_WALLTIME_WARNING_MINUTES", "")
if _end.isdigit():
    # A plain dict, not .update() on the config value: jupyterhub-singleuser reads
    # c.ServerApp.tornado_settings as a dict (a LazyConfigValue there stops the server).
    _settings = c.ServerApp.tornado_settings if "tornado_settings" in c.ServerApp else {}
    _settings = dict(_settings) if isinstance(_settings, dict) else {}
    _settings["page_config_data"] = {
        **_settings.get("page_config_data", {}),
        "hpchubJobEnd": _end,
        "hpchubWalltimeWarningMinutes": _warning if _warning.isdigit() else "0",
    }
    c.ServerApp.tornado_settings = _settings
