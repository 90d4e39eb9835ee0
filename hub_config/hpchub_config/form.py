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

from jupyterhub.handlers.pages import SpawnHandler
from tornado import web

from .cluster import Partition
from .options import (
    OPTIONS,
    RESOURCE_OPTIONS,
    UserAccess,
    default_partition,
    format_walltime,
    usable_reservations,
    visible_profiles,
)
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
    preset = {name: getattr(profile, name) for name in RESOURCE_OPTIONS}
    preset["partition"] = profile.partition or fallback_partition
    return preset


def _text(value) -> str:
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, float) and value.is_integer():
        return f"{value:g}"
    return "" if value is None else str(value)


def _gpus(counts) -> str:
    return ", ".join(f"{n} {t or 'GPU'}" for t, n in counts) or "none"


def _free_gpus(p: Partition) -> str:
    return f", GPUs: {_gpus(p.free_gpus)}" if p.max_gpus else ""


class _Form:
    """Builds the HTML of one form: each field with its label, its error and its lock."""

    def __init__(self, values: dict, errors: dict, locked: tuple[str, ...]):
        self.values, self.errors, self.locked = values, errors, locked
        self.html: list[str] = []

    def add(self, text: str) -> None:
        self.html.append(text)

    def _field_attrs(self, name: str) -> str:
        attrs = {"id": f"hpchub-{name}", "name": name}
        described = [f"hpchub-{name}-help"]
        if name in self.errors:
            attrs["aria-invalid"] = "true"
            described.append(f"hpchub-{name}-error")
        attrs["aria-describedby"] = " ".join(described)
        return _attrs(**attrs)

    def _after(self, name: str, help_text: str) -> None:
        self.add(f'<div id="hpchub-{name}-help" class="form-text">{escape(help_text)}</div>')
        if name in self.errors:
            self.add(
                f'<div id="hpchub-{name}-error" class="invalid-feedback d-block">'
                f"{escape(self.errors[name])}</div>"
            )

    def label(self, name: str, text: str) -> None:
        self.add(f'<label for="hpchub-{name}" class="form-label mt-2">{escape(text)}</label>')

    def select(self, name: str, text: str, choices, help_text: str = "", autofocus=False):
        """choices: (value, label, extra data attributes) triples."""
        self.label(name, text)
        chosen = _text(self.values.get(name, ""))
        locked = " disabled" if name in self.locked else ""
        focus = " autofocus" if autofocus else ""
        self.add(f'<select class="form-select" {self._field_attrs(name)}{locked}{focus}>')
        # One choice is selected: the first with the value (and, when several choices share
        # it, such as a QOS of two accounts, the one whose data-account is the chosen one).
        matches = [i for i, (value, _, _) in enumerate(choices) if _text(value) == chosen]
        account = _text(self.values.get("account", ""))
        fitting = [
            i
            for i in matches
            if choices[i][2].get("data-account", account) == account
            or (not account and choices[i][2].get("data-default-account"))
        ]
        selected = (fitting or matches or [None])[0]
        for i, (value, label, data) in enumerate(choices):
            flag = " selected" if i == selected else ""
            self.add(f"<option {_attrs(value=value, **data)}{flag}>{escape(label)}</option>")
        self.add("</select>")
        self._after(name, help_text)

    def number(self, option, help_text: str) -> None:
        self.label(option.name, option.label)
        value = _text(self.values.get(option.name, ""))
        locked = " readonly" if option.name in self.locked else ""
        self.add(
            '<input type="number" class="form-control" '
            + self._field_attrs(option.name)
            + " "
            + _attrs(min=f"{option.minimum:g}", step=f"{option.step:g}", value=value)
            + f" required{locked}>"
        )
        self._after(option.name, help_text)


def _partition_table(partitions: dict[str, Partition], settings: SpawnerSettings) -> str:
    rows = []
    for p in partitions.values():
        limit = _walltime_limit_hours(p, settings.max_walltime_hours)
        rows.append(
            f'<tr data-partition="{escape(p.name)}"><th scope="row">{escape(p.name)}</th>'
            f"<td>{p.max_cores} cores, {p.max_memory_mb // 1024} GB, "
            f"{escape(format_walltime(round(limit * 60)))}"
            f"{f', {p.max_gpus} GPUs' if p.max_gpus else ''}</td>"
            f"<td>{p.free_cores} cores, {p.free_memory_mb // 1024} GB</td>"
            f"<td>{escape(_gpus(p.free_gpus))}</td>"
            f"<td>{escape(', '.join(p.features) or '-')}</td></tr>"
        )
    return (
        '<table id="hpchub-partitions" class="table table-sm">'
        "<caption>Partitions: per node limits, and what is free now</caption>"
        '<thead><tr><th scope="col">Partition</th><th scope="col">Limits per job</th>'
        '<th scope="col">Free now</th><th scope="col">Free GPUs</th>'
        '<th scope="col">Node features</th></tr></thead><tbody>'
        + "".join(rows)
        + "</tbody></table>"
    )


def render_form(
    settings: SpawnerSettings,
    partitions: dict[str, Partition],
    *,
    hub_base_url: str = "/hub/",
    access: UserAccess | None = None,
    values: dict | None = None,
    notes: list[str] | tuple[str, ...] = (),
    errors: dict[str, str] | None = None,
) -> str:
    """HTML for JupyterHub's spawn page (its spawn.html wraps this in its <form>).

    `values` are the choices to show (remembered, or from a launch link), else the chosen
    profile's; `notes` say what was dropped from them; `errors` are problems by field.
    """
    access = access or UserAccess(username="")
    values, errors = dict(values or {}), dict(errors or {})
    profiles = visible_profiles(settings, access.groups)
    keys = [p.key for p in profiles]
    chosen = _text(values.get("profile")) if _text(values.get("profile")) in keys else ""
    profile = settings.profile(chosen) if chosen else (profiles[0] if profiles else None)
    fallback_partition = default_partition(partitions)
    if profile is not None:
        values = {**_preset(profile, fallback_partition), **values, "profile": profile.key}
        for name in profile.locked:  # a locked field shows the profile's value
            values[name] = _preset(profile, fallback_partition)[name]
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
    form = _Form(values, errors, tuple(profile.locked) if profile else ())
    form.add(f'<div id="hpchub-options" {_attrs(**data)}>')
    if notes:
        form.add('<div id="hpchub-notes" class="alert alert-info" role="status"><ul class="mb-0">')
        form.add("".join(f"<li>{escape(n)}</li>" for n in notes) + "</ul></div>")
    if errors:
        form.add(
            '<div id="hpchub-errors" class="alert alert-danger" role="alert">'
            '<p>Nothing was submitted. Please correct:</p><ul class="mb-0">'
        )
        form.add(
            "".join(f"<li>{escape(m if f in m else f'{f}: {m}')}</li>" for f, m in errors.items())
            + "</ul></div>"
        )
    form.select(
        "profile",
        "Profile",
        [
            (
                p.key,
                p.display_name,
                {
                    "data-preset": json.dumps(_preset(p, fallback_partition)),
                    "data-locked": json.dumps(p.locked),
                },
            )
            for p in profiles
        ],
        "A profile fills in the resources below"
        + ("; fields it locks are read-only." if any(p.locked for p in profiles) else "."),
        autofocus=True,
    )

    if settings.allow_custom_resources and partitions:
        form.add('<fieldset class="mb-3"><legend class="fs-6 mt-3">Resources</legend>')
        form.add(_partition_table(partitions, settings))
        form.select(
            "partition",
            "Partition",
            [
                (p.name, f"{p.name} (free now: {p.free_cores} cores{_free_gpus(p)})", {})
                for p in partitions.values()
            ],
            "Limits and free resources of each partition are in the table above.",
        )
        any_gpus = any(p.max_gpus for p in partitions.values())
        for option in _NUMBER_FIELDS:
            if option.name == "gpus" and not any_gpus:
                continue
            form.number(option, "Within the limits of the partition.")
        gpu_types = sorted({t for p in partitions.values() for t, _ in p.gpu_types if t})
        if gpu_types:
            form.select(
                "gpu_type",
                "GPU type",
                [("", "Any type", {})]
                + [
                    (
                        t,
                        t,
                        {
                            "data-partitions": json.dumps(
                                [p.name for p in partitions.values() if t in dict(p.gpu_types)]
                            )
                        },
                    )
                    for t in gpu_types
                ],
                "Only with GPUs; the types of the chosen partition.",
            )
        features = sorted({f for p in partitions.values() for f in p.features})
        if features:
            form.select(
                "constraint",
                "Node features",
                [("", "Any node", {})]
                + [
                    (
                        f,
                        f,
                        {
                            "data-partitions": json.dumps(
                                [p.name for p in partitions.values() if f in p.features]
                            )
                        },
                    )
                    for f in features
                ],
                "Run on a node with this feature (Slurm --constraint).",
            )
        associations = access.associations
        if associations is not None and associations.qos:
            default = associations.default_account
            form.select(
                "account",
                "Slurm account",
                [("", f"Default account ({default or 'none'})", {})]
                + [(a, a, {}) for a in associations.accounts],
                "The account the job is charged to.",
            )
            qos_choices = [("", "Default QOS of the account", {})]
            for account in associations.accounts:
                for qos in associations.qos[account]:
                    data = {"data-account": account}
                    if account == default:
                        data["data-default-account"] = "true"
                    qos_choices.append((qos, f"{qos} ({account})", data))
            form.select(
                "qos",
                "QOS",
                qos_choices,
                "Each account allows these QOS: "
                + "; ".join(
                    f"{a}: {', '.join(associations.qos[a]) or 'none'}"
                    for a in associations.accounts
                )
                + ".",
            )
        reservations = usable_reservations(access)
        if reservations or values.get("reservation"):
            form.select(
                "reservation",
                "Reservation",
                [("", "No reservation", {})]
                + [
                    (r.name, f"{r.name} (nodes {','.join(r.nodes) or '-'}, ends {r.end_time})", {})
                    for r in reservations.values()
                ],
                "Active reservations you may run in.",
            )
        form.add("</fieldset>")
    form.add("</div>")
    form.add(f'<script src="{escape(hub_base_url + FORM_SCRIPT_PATH)}"></script>')
    return "\n".join(form.html)


class StaticHandler(web.StaticFileHandler):
    """hpchub's static files (the form's script), public like JupyterHub's own."""


class LinkSpawnHandler(SpawnHandler):
    """JupyterHub's SpawnHandler, except that a launch link's query FILLS the form.

    Stock JupyterHub starts a server at once from /hub/spawn?options; here the form shows
    the link's values (and their errors, if any) and the user confirms with Start. The
    spawner reads the query when it renders the form (spawner.link_options).
    """

    def _get_user_options(self, query_options):
        return {}


def install() -> None:
    """Serve static/ under the hub's prefix, and launch links that fill the form
    (JupyterHub builds its routes from default_handlers after reading the config)."""
    from jupyterhub import handlers

    route = (STATIC_ROUTE, StaticHandler, {"path": str(STATIC_DIR)})
    handlers.default_handlers[:] = [h for h in handlers.default_handlers if h[0] != STATIC_ROUTE]
    handlers.default_handlers.append(route)
    handlers.default_handlers[:] = [
        (h[0], LinkSpawnHandler, *h[2:])
        if isinstance(h[1], type) and issubclass(h[1], SpawnHandler)
        else h
        for h in handlers.default_handlers
    ]
