"""The hpchub settings: ONE schema, read by the hub, the role and the docs.

The dataclasses below are the only place where a hub setting is defined: its type, its
default, its limits and its one-line documentation. From them

- the hub reads /etc/jupyterhub/hpchub.yaml (an unknown or mistyped key stops the hub with
  an error that names it and the closest known key, so a typo never falls back to a
  default);
- `tools/settings_schema.py` generates the roles' defaults, argument specs and settings
  templates and docs/configuration.md (a unit test fails when they are out of date);
- the preflight play checks the inventory's values with the same rules, naming the
  Ansible variable, before any host is touched (`check_ansible_values`).

Each field carries its Ansible side in its metadata: either the role variable that sets it
(`var`, default name `<prefix><field>`) or, for values the role derives from other
variables (URLs, secret paths), the Jinja expression that renders it (`render`).

The main file (/etc/jupyterhub/hpchub.yaml) may be completed by fragments in
hpchub.d/*.yaml next to it (the announcement role writes one). A fragment adds whole
top-level sections; a section defined twice is an error naming both files.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

DEFAULT_SETTINGS_PATH = "/etc/jupyterhub/hpchub.yaml"

# Patterns are matched against the WHOLE value (re.fullmatch): no trailing newline slips by.
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"  # Slurm partitions, accounts, hub name
PROFILE_KEY_PATTERN = r"[a-z0-9][a-z0-9_-]{0,31}"
SBATCH_OPTION_PATTERN = r"--[a-z][a-z-]*(=[A-Za-z0-9_.,:=@%+/-]+)?"
ABSOLUTE_PATH_PATTERN = r"/[A-Za-z0-9_.,+@%/-]*"  # nothing a shell would interpret
HOME_PATH_PATTERN = r"(?!/)(?!.*(^|/)\.\.(/|$))[A-Za-z0-9_.,+@%/-]+"  # inside the home
URL_PATH_PATTERN = r"/[A-Za-z0-9_.,+@%/?=&-]*"
HTTPS_URL_PATTERN = r"https://[A-Za-z0-9_.-]+(:\d{1,5})?/?"
LOCALHOST_URL_PATTERN = r"https://(127\.0\.0\.1|localhost|\[::1\]):\d{1,5}/?"
PUBLIC_URL_PATTERN = r"(https://[^\s/]+(/\S*)?)?"
HOST_NAME_PATTERN = r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252}[A-Za-z0-9])?"
SUBDOMAIN_HOST_PATTERN = (
    r"(https://[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+(:\d{1,5})?)?"
)
# What each pattern means, for error messages and the docs.
PATTERN_HINTS = {
    NAME_PATTERN: "a name of letters, digits, _ . - (at most 64, no leading punctuation)",
    f"({NAME_PATTERN})?": "empty or a name of letters, digits, _ . - (at most 64)",
    PROFILE_KEY_PATTERN: "a key of a-z, 0-9, _ - (at most 32)",
    ABSOLUTE_PATH_PATTERN: "an absolute path of letters, digits, _ . , + @ % / -",
    f"({ABSOLUTE_PATH_PATTERN})?": "empty or an absolute path of letters, digits, _ . , + @ % / -",
    HOME_PATH_PATTERN: "a relative path inside the home directory",
    SBATCH_OPTION_PATTERN: "a plain --option[=value]",
    URL_PATH_PATTERN: "a path from /",
    HTTPS_URL_PATTERN: "https://host:port (internal traffic is TLS)",
    LOCALHOST_URL_PATTERN: "https://127.0.0.1:<port> (the proxy API listens on localhost only)",
    PUBLIC_URL_PATTERN: "https://host[/path] or empty",
    SUBDOMAIN_HOST_PATTERN: "https://hub.domain[:port] (lower case, no path) or empty",
    HOST_NAME_PATTERN: "a host name or an IPv4 address",
}
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# Unix group names (as NSS returns them: local, LDAP, AD).
GROUP_NAME_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}"
# The fields of a profile a user may change, and a profile may lock (options.RESOURCE_OPTIONS).
PROFILE_FIELDS = (
    "partition",
    "cores",
    "memory_gb",
    "walltime_hours",
    "gpus",
    "gpu_type",
    "account",
    "qos",
    "reservation",
    "constraint",
)


DATABASE_KINDS = ("sqlite", "postgresql")


class SettingsError(ValueError):
    """The settings file is invalid. `problems` lists (key path, message) pairs."""

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source = source
        self.problems = problems
        lines = [f"invalid hpchub settings in {source}:"]
        lines += [f"  - {key}: {message}" for key, message in problems]
        super().__init__("\n".join(lines))


def setting(
    default=dataclasses.MISSING,
    *,
    doc: str,
    var: str | None = None,
    render: str | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    pattern: str | None = None,
    pattern_hint: str = "",
    choices: tuple | None = None,
    unique: str | None = None,
    non_empty: bool = False,
    role_default: str | None = None,
):
    """A schema field. `doc` is its one line of documentation (docs, defaults, argspecs).

    var / render: the Ansible side (see the module docstring); neither = `<prefix><name>`.
    minimum / maximum / pattern / choices: checked at hub start and in preflight.
    unique: for lists of mappings, the field that must differ between entries.
    role_default: a Jinja default for the role variable when the value depends on
    another role (the Python default then stays the fallback).
    """
    metadata = {
        "doc": doc,
        "var": var,
        "render": render,
        "minimum": minimum,
        "maximum": maximum,
        "pattern": pattern,
        "pattern_hint": pattern_hint or PATTERN_HINTS.get(pattern, ""),
        "choices": choices,
        "unique": unique,
        "non_empty": non_empty,
        "role_default": role_default,
    }
    if isinstance(default, list):
        items = default
        return field(default_factory=lambda: list(items), metadata=metadata)
    return field(default=default, metadata=metadata)


# --------------------------------------------------------------------------- schema


@dataclass(frozen=True)
class Profile:
    """One entry of the profile menu: a Slurm job with preset resources."""

    key: str = setting(
        doc='Stable id (a-z, 0-9, -, _): the REST API option "profile" and part of the job name.',
        pattern=PROFILE_KEY_PATTERN,
    )
    display_name: str = setting(doc="What users see in the menu.")
    partition: str = setting(
        "", doc="Slurm partition; empty = the cluster default.", pattern=f"({NAME_PATTERN})?"
    )
    cores: int = setting(1, doc="CPU cores.", minimum=1)
    memory_gb: int = setting(2, doc="Memory in GB.", minimum=1)
    walltime_hours: float = setting(1.0, doc="Walltime in hours.", minimum=0.1)
    gpus: int = setting(0, doc="GPUs (--gres=gpu:N).", minimum=0)
    gpu_type: str = setting(
        "", doc="GPU type (--gres=gpu:TYPE:N); empty = any.", pattern=f"({NAME_PATTERN})?"
    )
    account: str = setting("", doc="Slurm account; empty = none.", pattern=f"({NAME_PATTERN})?")
    qos: str = setting(
        "",
        doc="Slurm QOS (--qos); empty = the association's default.",
        pattern=f"({NAME_PATTERN})?",
    )
    reservation: str = setting(
        "", doc="Slurm reservation (--reservation); empty = none.", pattern=f"({NAME_PATTERN})?"
    )
    constraint: str = setting(
        "",
        doc="Node features, joined by & (--constraint); empty = any node.",
        pattern=r"([A-Za-z0-9][A-Za-z0-9_.-]{0,63}(&[A-Za-z0-9][A-Za-z0-9_.-]{0,63}){0,7})?",
        pattern_hint="empty or node features joined by &",
    )
    sbatch_options: list[str] = setting(
        [],
        doc="Extra plain sbatch options, e.g. --qos=interactive.",
        pattern=SBATCH_OPTION_PATTERN,
    )
    locked: list[str] = setting(
        [],
        doc="Fields users cannot change from this profile's values (read-only in the form; "
        "the form, the REST API and launch links refuse another value), e.g. [partition, gpus].",
        choices=PROFILE_FIELDS,
    )
    groups: list[str] = setting(
        [],
        doc="Unix groups whose members see this profile (one is enough); [] = everyone. "
        "Others neither see it in the form nor may request it.",
        pattern=GROUP_NAME_PATTERN,
        pattern_hint="a Unix group name",
    )

    def visible_to(self, groups) -> bool:
        """Whether a user in these Unix groups may see and use this profile."""
        return not self.groups or bool(set(self.groups) & set(groups))


@dataclass(frozen=True)
class HubSettings:
    """The hub process."""

    connect_url: str = setting(
        doc="How compute nodes reach the hub API (mutual TLS).",
        render="https://{{ jupyterhub_connect_host }}:{{ jupyterhub_hub_port }}",
        pattern=HTTPS_URL_PATTERN,
    )
    bind_url: str = setting(
        doc="Where the hub API listens (mutual TLS).",
        render="https://0.0.0.0:{{ jupyterhub_hub_port }}",
        pattern=HTTPS_URL_PATTERN,
    )
    public_names: list[str] = setting(
        doc="Host names and addresses users reach the hub by. The internal certificates carry "
        "them: the proxy checks a target's certificate against the name the browser asked for.",
        render="{{ __jupyterhub_public_names | to_json }}",
        pattern=HOST_NAME_PATTERN,
    )
    internal_tls_dir: str = setting(
        doc="Internal TLS: the CAs and certificates of the hub, the proxy and the notebook "
        "servers (JupyterHub internal_ssl), owned by the hub account.",
        render="{{ __jupyterhub_internal_tls_dir }}",
        pattern=ABSOLUTE_PATH_PATTERN,
    )
    cookie_secret_file: str = setting(
        doc="The hub's cookie secret (0600, generated once).",
        render="{{ __jupyterhub_cookie_secret_path }}",
        pattern=ABSOLUTE_PATH_PATTERN,
    )
    name: str = setting(
        "hpchub",
        doc="Short name of this hub: part of every Slurm job name (jupyter-<name>-<profile>).",
        pattern=NAME_PATTERN,
    )
    public_url: str = setting(
        "",
        doc='The URL users open, e.g. https://jupyter.example.org/; "" = not set.',
        pattern=PUBLIC_URL_PATTERN,
    )
    subdomain_host: str = setting(
        "",
        doc="Per-user origins: https://hub.example.org serves user NAME at NAME.hub.example.org "
        '(wildcard DNS, certificate); "" = one origin.',
        pattern=SUBDOMAIN_HOST_PATTERN,
    )
    state_dir: str = setting(
        "/var/lib/jupyterhub",
        doc="State directory (database, cookie secret): upgrades keep it.",
        pattern=ABSOLUTE_PATH_PATTERN,
    )
    database: str = setting(
        "sqlite",
        doc="Hub database: sqlite (a file in the state folder) or postgresql (Debian's "
        "PostgreSQL on the login node: unix socket, peer authentication).",
        choices=DATABASE_KINDS,
    )
    postgresql_database: str = setting(
        "jupyterhub",
        doc="postgresql: the hub's database on the login node's PostgreSQL (its role is the "
        "hub account's name).",
        pattern=r"[a-z_][a-z0-9_]{0,62}",
        pattern_hint="lower-case letters, digits and _ (a PostgreSQL name needing no quotes)",
    )
    db_url: str = setting(
        "",
        doc='Database URL (SQLAlchemy), e.g. an external server; "" = what `database` '
        "chooses. Passwords go in the hub account's ~/.pgpass.",
    )
    admin_users: list[str] = setting([], doc="Hub administrators (account names).")
    allowed_groups: list[str] = setting(
        [], doc="Unix groups whose members may log in and spawn; [] = every account >= min_uid."
    )
    min_uid: int = setting(
        1000,
        doc="Accounts below this uid (root, daemons) can never log in or have jobs submitted.",
        minimum=1,
    )
    auth_helper: str = setting(
        "/usr/local/libexec/hpchub/hpchub-auth",
        doc="hpchub-auth: the root helper (run through sudo) that checks passwords with PAM.",
        render="{{ __jupyterhub_auth_helper }}",
        pattern=ABSOLUTE_PATH_PATTERN,
    )
    log_level: str = setting("INFO", doc="Log level of the hub.", choices=LOG_LEVELS)
    concurrent_spawn_limit: int = setting(
        100,
        doc="Servers starting at once, more get HTTP 429 (0 = no limit): a guard against a "
        "stuck Slurm, not against a class (docs/performance.md).",
        minimum=0,
    )
    active_server_limit: int = setting(
        0,
        doc="At most this many running servers (0 = no limit): the cluster's notebook "
        "capacity; a running server costs the hub next to nothing.",
        minimum=0,
    )
    last_activity_interval: int = setting(
        300,
        doc="Seconds between the hub's reads of every route's activity from the proxy "
        "(the culler's input; also a full route check).",
        minimum=30,
    )
    named_server_limit_per_user: int = setting(
        2,
        doc="Named servers a user may have besides the default one, each its own Slurm job "
        "(0 = no named servers).",
        minimum=0,
        maximum=50,
    )
    template_paths: list[str] = setting(
        [],
        doc="Folders of site templates, searched before hpchub's.",
        pattern=ABSOLUTE_PATH_PATTERN,
    )
    census_token_file: str = setting(
        "",
        doc='Token of the read-only census service (0600, generated once); "" = none.',
        render="{{ __jupyterhub_census_token_path }}",
        pattern=f"({ABSOLUTE_PATH_PATTERN})?",
    )
    metrics_token_file: str = setting(
        "",
        doc="Token of the metrics service (scope read:metrics only: Prometheus scrapes "
        '/hub/metrics with it; 0600, generated once); "" = none.',
        render="{{ __jupyterhub_metrics_token_path }}",
        pattern=f"({ABSOLUTE_PATH_PATTERN})?",
    )


@dataclass(frozen=True)
class ProxySettings:
    """configurable-http-proxy, running as its own systemd service."""

    api_url: str = setting(
        doc="The proxy's REST API (localhost only, mutual TLS).",
        render="https://127.0.0.1:{{ jupyterhub_proxy_api_port }}",
        pattern=LOCALHOST_URL_PATTERN,
    )
    auth_token_file: str = setting(
        doc="The hub-proxy token (0600, generated once).",
        render="{{ __jupyterhub_proxy_token_path }}",
        pattern=ABSOLUTE_PATH_PATTERN,
    )
    route_check_interval: float = setting(
        2.0,
        doc="Seconds between checks that the proxy kept its routes (restored after it restarts).",
        minimum=0.5,
    )


def _default_profiles() -> list[Profile]:
    return [
        Profile(key="small", display_name="1 core, 2 GB, 1 hour"),
        Profile(
            key="medium",
            display_name="2 cores, 4 GB, 4 hours",
            cores=2,
            memory_gb=4,
            walltime_hours=4.0,
        ),
    ]


@dataclass(frozen=True)
class SpawnerSettings:
    """Notebook servers as Slurm jobs."""

    notebook_env: str = setting(
        doc="Prefix of the notebook environment on the compute nodes (see role jupyter_env).",
        role_default="{{ jupyter_env_prefix | default('/opt/software/hpchub/jupyter') }}",
        pattern=ABSOLUTE_PATH_PATTERN,
    )
    profiles: list[Profile] = setting(
        _default_profiles(),
        doc="Profiles offered to users (fields below).",
        unique="key",
        non_empty=True,
    )
    slurm_bin_dir: str = setting(
        "/usr/bin",
        doc="Where Slurm's commands are (sbatch, squeue, scancel, sinfo, sacctmgr).",
        pattern=ABSOLUTE_PATH_PATTERN,
    )
    sudo: str = setting(
        "/usr/bin/sudo",
        doc="sudo, to run hpchub's two root helpers (Slurm commands, password checks).",
        pattern=ABSOLUTE_PATH_PATTERN,
    )
    slurm_helper: str = setting(
        "/usr/local/libexec/hpchub/hpchub-slurm",
        doc="hpchub-slurm: the root helper (run through sudo) that runs sbatch, squeue and "
        "scancel as the user.",
        render="{{ __jupyterhub_slurm_helper }}",
        pattern=ABSOLUTE_PATH_PATTERN,
    )
    job_log_dir: str = setting(
        ".hpchub/logs",
        doc="Job logs, relative to each user's home.",
        pattern=HOME_PATH_PATTERN,
    )
    job_prologue: list[str] = setting(
        [], doc='Shell lines run in every notebook job before the server (e.g. "module load x").'
    )
    start_timeout: int = setting(
        300, doc="Seconds from submission to a reachable server before the spawn fails.", minimum=10
    )
    http_timeout: int = setting(
        120, doc="Seconds from a running job to a responding server.", minimum=5
    )
    poll_interval: int = setting(
        30,
        doc="Seconds between JupyterHub's own check of each server (Spawner.poll_interval): "
        "a fallback, reading the hub's job view, which reports ended jobs by itself every "
        "job_watch_interval.",
        minimum=1,
    )
    job_watch_interval: float = setting(
        5.0,
        doc="Seconds between the hub's job queries while all servers run (ONE query for all "
        "servers): a job cancelled outside the hub, ended by its walltime or marked lost with "
        "its node by Slurm is shown stopped within this.",
        minimum=1,
    )
    startup_poll_interval: float = setting(
        0.5,
        doc="Seconds between the hub's job queries while any server starts (one for all).",
        minimum=0.1,
    )
    pending_poll_interval: float = setting(
        5.0,
        doc="Seconds between the hub's checks of a job that has waited in the queue longer "
        "than this (Slurm's main and backfill schedulers run every few tens of seconds): a "
        "class waiting in a busy queue costs a query every few seconds, not twice a second.",
        minimum=0.1,
    )
    activity_interval: int = setting(
        300,
        doc="Seconds between a server's activity reports to the hub "
        "(JUPYTERHUB_ACTIVITY_INTERVAL); well below the culler's timeout.",
        minimum=10,
    )
    cluster_info_ttl: int = setting(
        60,
        doc="Seconds the cluster data (partitions, free resources, reservations, each user's "
        "associations) is served before a background refresh.",
        minimum=0,
    )
    default_url: str = setting("/lab", doc="Page users land on.", pattern=URL_PATH_PATTERN)
    walltime_warning_minutes: int = setting(
        10,
        doc="JupyterLab warns this many minutes before the job's walltime ends (0 = no "
        "warning); its top bar always shows the time left.",
        minimum=0,
        maximum=1440,
    )
    allow_custom_resources: bool = setting(
        True, doc="Let users change a profile's resources within the partition's limits."
    )
    partitions: list[str] = setting(
        [],
        doc="Partitions offered in the form; [] = every partition that is up.",
        pattern=NAME_PATTERN,
    )
    max_walltime_hours: float = setting(
        24.0, doc="Walltime cap (hours) for partitions without a MaxTime.", minimum=0.1
    )
    accounts_from_slurmdbd: bool = setting(
        False,
        doc="Offer the user's Slurm accounts and QOS (needs slurmdbd; read with "
        "`hpchub-slurm assoc USER`, as the user).",
    )

    def profile(self, key: str) -> Profile | None:
        return next((p for p in self.profiles if p.key == key), None)


@dataclass(frozen=True)
class SeededAnnouncement:
    """An announcement put into the queue at deploy time (e.g. a maintenance window)."""

    message: str = setting(doc="The announcement (HTML is sanitized).")


@dataclass(frozen=True)
class AnnouncementSettings:
    """jupyterhub-announcement as a hub-managed service (role jupyterhub_announcement)."""

    persist_path: str = setting(
        doc="The announcement queue.",
        render="{{ jupyterhub_announcement_state_dir }}/announcements.json",
        pattern=ABSOLUTE_PATH_PATTERN,
    )
    cookie_secret_file: str = setting(
        doc="The service's cookie secret (0600, generated once).",
        render="{{ __jupyterhub_announcement_cookie_secret }}",
        pattern=ABSOLUTE_PATH_PATTERN,
    )
    enabled: bool = setting(
        True, doc="Run the announcement service (banner on hub pages, page to post them)."
    )
    port: int = setting(
        888,
        doc="Port of the service on 127.0.0.1, below 1024: no user can bind it when it is down.",
        minimum=1,
        maximum=1023,
    )
    lifetime_days: float = setting(
        7.0, doc="Days an announcement stays in the queue.", minimum=0.01
    )
    fixed_message: str = setting(
        "", doc="A fixed message on the service's page (e.g. a link to the status page)."
    )
    seed: list[SeededAnnouncement] = setting(
        [], doc='Announcements put in place at deploy time, e.g. [{message: "Maintenance..."}].'
    )


@dataclass(frozen=True)
class IdleCullerSettings:
    """jupyterhub-idle-culler as a hub-managed service."""

    enabled: bool = setting(True, doc="Stop idle servers (jupyterhub-idle-culler).")
    timeout: int = setting(
        3600, doc="Seconds of inactivity before a server is stopped.", minimum=60
    )
    every: int = setting(
        300,
        doc="Seconds between culler runs (each lists the users with a running server, paged).",
        minimum=10,
    )
    concurrency: int = setting(
        10,
        doc="Servers the culler stops at once (each stop is one scancel through the helper).",
        minimum=1,
        maximum=100,
    )
    max_age: int = setting(
        0, doc="Stop servers older than this many seconds, idle or not (0 = never).", minimum=0
    )


@dataclass(frozen=True)
class Settings:
    hub: HubSettings
    spawner: SpawnerSettings
    proxy: ProxySettings
    idle_culler: IdleCullerSettings = field(default_factory=IdleCullerSettings)
    # Written by the jupyterhub_announcement role as a fragment; absent = no service.
    announcement: AnnouncementSettings | None = None


# Where each section lives on the Ansible side: the role that renders it, the prefix of its
# variables and the template the role writes (see tools/settings_schema.py).
@dataclass(frozen=True)
class Section:
    name: str
    cls: type
    role: str
    prefix: str
    template: str


SECTIONS = (
    Section("hub", HubSettings, "jupyterhub", "jupyterhub_", "hpchub.yaml.j2"),
    Section("proxy", ProxySettings, "jupyterhub", "jupyterhub_", "hpchub.yaml.j2"),
    Section("spawner", SpawnerSettings, "jupyterhub", "jupyterhub_", "hpchub.yaml.j2"),
    Section(
        "idle_culler", IdleCullerSettings, "jupyterhub", "jupyterhub_idle_culler_", "hpchub.yaml.j2"
    ),
    Section(
        "announcement",
        AnnouncementSettings,
        "jupyterhub_announcement",
        "jupyterhub_announcement_",
        "announcement.yaml.j2",
    ),
)


def ansible_variable(section: Section, f: dataclasses.Field) -> str | None:
    """The role variable that sets a field, or None for a derived (rendered) field."""
    if f.metadata.get("render"):
        return None
    return f.metadata.get("var") or f"{section.prefix}{f.name}"


# --------------------------------------------------------------------------- checking


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}s"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {str: "string", int: "integer", float: "number", bool: "boolean"}.get(tp, str(tp))


def _article(tp) -> str:
    name = _type_name(tp)
    if name.startswith("a "):
        return name
    return f"an {name}" if name[0] in "aeiou" else f"a {name}"


_INVALID = object()  # a value that could not be converted (the problem is recorded)


def _check_scalar(meta, value, path: str, problems: list[tuple[str, str]]) -> None:
    minimum, maximum = meta.get("minimum"), meta.get("maximum")
    if minimum is not None and value < minimum:
        problems.append((path, f"must be at least {minimum}, got {value!r}"))
    if maximum is not None and value > maximum:
        problems.append((path, f"must be at most {maximum}, got {value!r}"))
    if meta.get("choices") and value not in meta["choices"]:
        problems.append((path, f"must be one of {', '.join(meta['choices'])}, got {value!r}"))
    pattern = meta.get("pattern")
    if pattern and isinstance(value, str) and not re.fullmatch(pattern, value):
        hint = meta.get("pattern_hint")
        expected = f"must be {hint}" if hint else f"must match {pattern}"
        problems.append((path, f"{expected}, got {value!r}"))


def _convert(tp, value, path: str, problems: list[tuple[str, str]], meta=None):
    """Convert a YAML value to the schema type `tp`; record problems instead of raising."""
    meta = meta or {}
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        (tp,) = [t for t in typing.get_args(tp) if t is not type(None)]
        origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path, problems)
    if origin is list:
        (item_type,) = typing.get_args(tp)
        if not isinstance(value, list):
            problems.append((path, f"must be {_type_name(tp)}, got {type(value).__name__}"))
            return _INVALID
        items = [
            _convert(item_type, v, f"{path}[{i}]", problems, meta) for i, v in enumerate(value)
        ]
        if any(i is _INVALID for i in items):
            return _INVALID
        if meta.get("non_empty") and not items:
            problems.append((path, "at least one entry is required"))
        if meta.get("unique"):
            seen: set = set()
            for i, item in enumerate(items):
                key = getattr(item, meta["unique"])
                if key in seen:
                    problems.append((f"{path}[{i}].{meta['unique']}", f"duplicate {key!r}"))
                seen.add(key)
        return items
    ok = (
        (tp is bool and isinstance(value, bool))
        or (tp is int and isinstance(value, int) and not isinstance(value, bool))
        or (tp is float and isinstance(value, int | float) and not isinstance(value, bool))
        or (tp is str and isinstance(value, str))
    )
    if not ok:
        problems.append((path, f"must be {_article(tp)}, got {value!r}"))
        return _INVALID
    value = float(value) if tp is float else value
    _check_scalar(meta, value, path, problems)
    return value


def _build(cls, data, path: str, problems: list[tuple[str, str]]):
    if not isinstance(data, dict):
        problems.append((path or "(top level)", f"must be a mapping, got {type(data).__name__}"))
        return _INVALID
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    prefix = f"{path}." if path else ""
    for key in data:
        if key not in known:
            hint = difflib.get_close_matches(str(key), list(known), n=1)
            suggestion = f" (did you mean {prefix}{hint[0]}?)" if hint else ""
            problems.append((f"{prefix}{key}", f"unknown key{suggestion}"))
    kwargs = {}
    complete = True
    for name, f in known.items():
        if name in data:
            kwargs[name] = _convert(
                hints[name], data[name], f"{prefix}{name}", problems, f.metadata
            )
            complete = complete and kwargs[name] is not _INVALID
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            problems.append((f"{prefix}{name}", "is required"))
            complete = False
    return cls(**kwargs) if complete else _INVALID


def settings_from_dict(data, source: str = "<settings>") -> Settings:
    problems: list[tuple[str, str]] = []
    settings = _build(Settings, data, "", problems)
    if problems:
        raise SettingsError(source, problems)
    return settings


def _from_ansible(tp, value):
    """What the generated template's filters (int, float, bool) make of an inventory value."""
    if isinstance(value, str):
        text = value.strip()
        if tp is int and re.fullmatch(r"-?\d+", text):
            return int(text)
        if tp is float and re.fullmatch(r"-?\d+(\.\d*)?", text):
            return float(text)
        if tp is bool and text.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return text.lower() in ("true", "yes", "on", "1")
    return value


def check_ansible_values(variables: dict) -> list[str]:
    """Check the role variables an inventory sets with the schema's rules (for preflight).

    Returns one message per problem, naming the Ansible variable. Only the variables that
    are set are checked: the others take the schema's defaults, which are valid.
    """
    messages = []
    for section in SECTIONS:
        hints = typing.get_type_hints(section.cls)
        for f in dataclasses.fields(section.cls):
            var = ansible_variable(section, f)
            if var is None or var not in variables:
                continue
            problems: list[tuple[str, str]] = []
            value = _from_ansible(hints[f.name], variables[var])
            _convert(hints[f.name], value, var, problems, f.metadata)
            messages += [f"{key}: {message}" for key, message in problems]
    return messages


# --------------------------------------------------------------------------- files


def _read_yaml(path: Path):
    try:
        with path.open() as stream:
            data = yaml.safe_load(stream)
    except OSError as e:
        raise SettingsError(str(path), [("(file)", f"cannot read: {e.strerror}")]) from e
    except yaml.YAMLError as e:
        raise SettingsError(str(path), [("(file)", f"not valid YAML: {e}")]) from e
    return {} if data is None else data


def read_settings_data(path: str | Path) -> tuple[dict, str]:
    """Read the main file plus hpchub.d/*.yaml fragments into one mapping."""
    main = Path(path)
    data = _read_yaml(main)
    if not isinstance(data, dict):
        raise SettingsError(str(main), [("(top level)", "must be a mapping")])
    origin = dict.fromkeys(data, str(main))
    sources = [str(main)]
    for fragment in sorted(main.parent.glob(f"{main.stem}.d/*.yaml")):
        extra = _read_yaml(fragment)
        if not isinstance(extra, dict):
            raise SettingsError(str(fragment), [("(top level)", "must be a mapping")])
        for key, value in extra.items():
            if key in data:
                raise SettingsError(
                    str(fragment), [(key, f"section already defined in {origin[key]}")]
                )
            data[key] = value
            origin[key] = str(fragment)
        sources.append(str(fragment))
    return data, " + ".join(sources)


def load_settings(path: str | Path = DEFAULT_SETTINGS_PATH) -> Settings:
    data, source = read_settings_data(path)
    return settings_from_dict(data, source)


def check_fragment(path: str | Path) -> None:
    """Validate the sections present in one file (used by Ansible before writing it)."""
    data = _read_yaml(Path(path))
    if not isinstance(data, dict):
        raise SettingsError(str(path), [("(top level)", "must be a mapping")])
    problems: list[tuple[str, str]] = []
    hints = typing.get_type_hints(Settings)
    for key, value in data.items():
        if key not in hints:
            hint = difflib.get_close_matches(str(key), list(hints), n=1)
            problems.append(
                (key, "unknown section" + (f" (did you mean {hint[0]}?)" if hint else ""))
            )
        else:
            _convert(hints[key], value, key, problems)
    if problems:
        raise SettingsError(str(path), problems)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Validate hpchub settings files.")
    parser.add_argument("path", nargs="?", default=DEFAULT_SETTINGS_PATH)
    parser.add_argument(
        "--fragment",
        action="store_true",
        help="validate only the sections present in PATH (a file about to be written)",
    )
    args = parser.parse_args(argv)
    try:
        if args.fragment:
            check_fragment(args.path)
        else:
            load_settings(args.path)
    except SettingsError as e:
        print(e, file=sys.stderr)
        return 1
    print(f"{args.path}: valid")
    return 0


if __name__ == "__main__":
    sys.exit(main())
