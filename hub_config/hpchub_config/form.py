"""The spawn form: a profile menu plus resources whose choices come from the cluster.

Every choice and limit shown here is checked again on the server (options.py); the form
only makes the valid choices easy. Field names and labels are the REST API's vocabulary
(options.OPTIONS); the page's behaviour is static/form.js, served by the hub at
FORM_SCRIPT_PATH and told the option names through data attributes.
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path

from tornado import web

from .cluster import Partition
from .options import OPTIONS, RESOURCE_OPTIONS, default_partition, format_walltime
from .settings import Profile, SpawnerSettings

STATIC_DIR = Path(__file__).parent / "static"
STATIC_ROUTE = r"/hpchub/static/(.*)"  # under the hub's prefix: /hub/hpchub/static/
FORM_SCRIPT_PATH = "hpchub/static/form.js"  # relative to the hub's base URL
_NUMBER_FIELDS = tuple(o for o in OPTIONS if o.kind in ("whole", "hours"))


def _attrs(**attributes) -> str:
    return " ".join(f'{name}="{escape(str(value))}"' for name, value in attributes.items())


def _walltime_limit_hours(p: Partition, max_walltime_hours: float) -> float:
    if p.max_walltime_minutes is None:
        return max_walltime_hours
    return round(p.max_walltime_minutes / 60, 2)


def _preset(profile: Profile, fallback_partition: str) -> dict:
    """The form values a profile fills in (its resource fields, by option name)."""
    preset = {name: getattr(profile, name) for name in RESOURCE_OPTIONS if name != "account"}
    preset["partition"] = profile.partition or fallback_partition
    return preset


def render_form(
    settings: SpawnerSettings,
    partitions: dict[str, Partition],
    *,
    hub_base_url: str = "/hub/",
    accounts: list[str] | None = None,
    selected: dict | None = None,
) -> str:
    """HTML for JupyterHub's spawn page (it wraps this in its own <form>)."""
    selected = selected or {}
    profiles = settings.profiles
    chosen = selected.get("profile") or profiles[0].key
    fallback_partition = default_partition(partitions)
    limits = {
        p.name: {
            "cores": p.max_cores,
            "memory_gb": p.max_memory_mb // 1024,
            "walltime_hours": _walltime_limit_hours(p, settings.max_walltime_hours),
            "gpus": p.max_gpus,
        }
        for p in partitions.values()
    }
    data = {"data-options": json.dumps(RESOURCE_OPTIONS), "data-limits": json.dumps(limits)}
    html = [f'<div id="hpchub-options" {_attrs(**data)}>']
    html.append('<div class="mb-3">')
    html.append('<label for="hpchub-profile" class="form-label">Profile</label>')
    html.append('<select id="hpchub-profile" name="profile" class="form-select" autofocus>')
    for p in profiles:
        preset = json.dumps(_preset(p, fallback_partition))
        flag = " selected" if p.key == chosen else ""
        html.append(
            f"<option {_attrs(value=p.key, **{'data-preset': preset})}{flag}>"
            f"{escape(p.display_name)}</option>"
        )
    html.append("</select></div>")

    if settings.allow_custom_resources and partitions:
        any_gpus = any(p.max_gpus for p in partitions.values())
        html.append('<fieldset class="mb-3"><legend class="fs-6">Resources</legend>')
        html.append(
            '<p class="form-text">The profile fills these in; change them within the '
            "limits of the partition.</p>"
        )
        html.append('<label for="hpchub-partition" class="form-label">Partition</label>')
        html.append('<select id="hpchub-partition" name="partition" class="form-select mb-2">')
        for p in partitions.values():
            limit = _walltime_limit_hours(p, settings.max_walltime_hours)
            label = (
                f"{p.name}: up to {p.max_cores} cores, {p.max_memory_mb // 1024} GB, "
                f"{format_walltime(round(limit * 60))}"
                + (f", {p.max_gpus} GPUs" if p.max_gpus else "")
                + f"; free now: {p.free_cores} cores, {p.free_memory_mb // 1024} GB"
                + "".join(f", {n} {t or 'GPU'}" for t, n in p.free_gpus)
            )
            html.append(f"<option {_attrs(value=p.name)}>{escape(label)}</option>")
        html.append("</select>")
        for option in _NUMBER_FIELDS:
            if option.name == "gpus" and not any_gpus:
                continue
            html.append(
                f'<label for="hpchub-{option.name}" class="form-label">'
                f"{escape(option.label)}</label>"
            )
            html.append(
                '<input type="number" class="form-control mb-2" '
                + _attrs(
                    id=f"hpchub-{option.name}",
                    name=option.name,
                    min=f"{option.minimum:g}",
                    step=f"{option.step:g}",
                )
                + " required>"
            )
        if accounts:
            html.append('<label for="hpchub-account" class="form-label">Slurm account</label>')
            html.append('<select id="hpchub-account" name="account" class="form-select mb-2">')
            for account in accounts:
                html.append(f"<option {_attrs(value=account)}>{escape(account)}</option>")
            html.append("</select>")
        html.append("</fieldset>")
    html.append("</div>")
    html.append(f'<script src="{escape(hub_base_url + FORM_SCRIPT_PATH)}"></script>')
    return "\n".join(html)


class StaticHandler(web.StaticFileHandler):
    """hpchub's static files (the form's script), public like JupyterHub's own."""


def install() -> None:
    """Serve static/ under the hub's prefix (JupyterHub builds its routes after the config)."""
    from jupyterhub import handlers

    route = (STATIC_ROUTE, StaticHandler, {"path": str(STATIC_DIR)})
    handlers.default_handlers[:] = [h for h in handlers.default_handlers if h[0] != STATIC_ROUTE]
    handlers.default_handlers.append(route)
