"""The hpchub settings file: one validated YAML file rendered by Ansible.

The schema is the set of dataclasses below. Every key of the file must be one of their
fields: an unknown or mistyped key stops the hub with an error that names it (and the
closest known key), so a typo never silently falls back to a default.

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
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

DEFAULT_SETTINGS_PATH = "/etc/jupyterhub/hpchub.yaml"

_PROFILE_KEY_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_SBATCH_OPTION_RE = re.compile(r"^--[a-z][a-z-]*(=[A-Za-z0-9_.,:=@%+/-]+)?$")


class SettingsError(ValueError):
    """The settings file is invalid. `problems` lists (key path, message) pairs."""

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source = source
        self.problems = problems
        lines = [f"invalid hpchub settings in {source}:"]
        lines += [f"  - {key}: {message}" for key, message in problems]
        super().__init__("\n".join(lines))


# --------------------------------------------------------------------------- schema


@dataclass(frozen=True)
class HubSettings:
    """The hub process."""

    connect_url: str  # how compute nodes reach the hub API, e.g. http://login1:8081
    name: str = "hpchub"  # short name of this hub; part of every Slurm job name
    bind_url: str = "http://0.0.0.0:8081"  # where the hub API listens
    public_url: str = ""  # the users' URL (https://hub.example.org/); "" = not set
    state_dir: str = "/var/lib/jupyterhub"  # database and cookie secret
    db_url: str = ""  # "" = sqlite in state_dir
    cookie_secret_file: str = "/var/lib/jupyterhub/jupyterhub_cookie_secret"  # noqa: S105
    admin_users: list[str] = field(default_factory=list)
    allowed_groups: list[str] = field(default_factory=list)  # [] = every local user
    min_uid: int = 1000  # accounts below this uid (system accounts) may never log in
    log_level: str = "INFO"
    concurrent_spawn_limit: int = 100
    active_server_limit: int = 0  # 0 = no limit
    template_paths: list[str] = field(default_factory=list)  # site templates, before ours

    def check(self, path: str, problems: list[tuple[str, str]]) -> None:
        for key in ("connect_url", "bind_url"):
            value = getattr(self, key)
            if not re.match(r"^https?://[^/\s]+(:\d+)?/?$", value):
                problems.append((f"{path}.{key}", f"must be http(s)://host:port, got {value!r}"))
        if self.public_url and not self.public_url.startswith("https://"):
            problems.append((f"{path}.public_url", "must start with https://"))
        if not _NAME_RE.match(self.name):
            problems.append((f"{path}.name", f"must match {_NAME_RE.pattern}, got {self.name!r}"))
        if self.log_level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            problems.append((f"{path}.log_level", f"unknown level {self.log_level!r}"))
        _check_min(self, path, problems, min_uid=1, concurrent_spawn_limit=0, active_server_limit=0)


@dataclass(frozen=True)
class ProxySettings:
    """configurable-http-proxy, running as its own systemd service."""

    api_url: str = "http://127.0.0.1:8001"
    auth_token_file: str = "/etc/jupyterhub/secrets/proxy_auth_token"  # noqa: S105
    route_check_interval: float = 2.0  # seconds between checks that the proxy kept its routes

    def check(self, path: str, problems: list[tuple[str, str]]) -> None:
        if not re.match(r"^http://(127\.0\.0\.1|localhost|\[::1\]):\d+/?$", self.api_url):
            problems.append((f"{path}.api_url", "the proxy API must listen on localhost only"))
        _check_min(self, path, problems, route_check_interval=0.5)


@dataclass(frozen=True)
class Profile:
    """One entry of the profile menu: a Slurm job with preset resources."""

    key: str  # stable id, used in the REST API and the Slurm job name
    display_name: str
    partition: str = ""  # "" = the cluster's default partition
    cores: int = 1
    memory_gb: int = 2
    walltime_hours: float = 1.0
    gpus: int = 0
    account: str = ""
    sbatch_options: list[str] = field(default_factory=list)  # e.g. ["--qos=interactive"]

    def check(self, path: str, problems: list[tuple[str, str]]) -> None:
        if not _PROFILE_KEY_RE.match(self.key):
            problems.append((f"{path}.key", f"must match {_PROFILE_KEY_RE.pattern}"))
        for key in ("partition", "account"):
            value = getattr(self, key)
            if value and not _NAME_RE.match(value):
                problems.append((f"{path}.{key}", f"invalid name {value!r}"))
        _check_min(self, path, problems, cores=1, memory_gb=1, walltime_hours=0.1, gpus=0)
        for i, option in enumerate(self.sbatch_options):
            if not _SBATCH_OPTION_RE.match(option):
                problems.append(
                    (f"{path}.sbatch_options[{i}]", f"not a plain --option[=value]: {option!r}")
                )


@dataclass(frozen=True)
class SpawnerSettings:
    """Notebook servers as Slurm jobs."""

    notebook_env: str  # prefix of the notebook environment on the compute nodes
    profiles: list[Profile]
    slurm_bin_dir: str = "/usr/bin"  # sbatch, squeue, scancel, sinfo, scontrol
    sudo: str = "/usr/bin/sudo"
    job_log_dir: str = ".hpchub/logs"  # job logs, relative to the user's home
    job_prologue: list[str] = field(default_factory=list)  # shell lines run before the server
    start_timeout: int = 300  # seconds from submission to a reachable server
    http_timeout: int = 120  # seconds from a running job to a responding server
    poll_interval: int = 30  # seconds between squeue checks of a running server
    startup_poll_interval: float = 0.5  # seconds between squeue checks while starting
    cluster_info_ttl: int = 60  # seconds the partition limits from sinfo are cached
    default_url: str = "/lab"
    allow_custom_resources: bool = True  # form/API may change a profile's resources
    partitions: list[str] = field(default_factory=list)  # offered partitions; [] = all up
    max_walltime_hours: float = 24.0  # cap for partitions without MaxTime
    accounts_from_slurmdbd: bool = False  # offer the user's Slurm accounts (sacctmgr)

    def check(self, path: str, problems: list[tuple[str, str]]) -> None:
        if not self.profiles:
            problems.append((f"{path}.profiles", "at least one profile is required"))
        seen: set[str] = set()
        for i, profile in enumerate(self.profiles):
            if profile.key in seen:
                problems.append((f"{path}.profiles[{i}].key", f"duplicate key {profile.key!r}"))
            seen.add(profile.key)
        for key in ("notebook_env", "slurm_bin_dir", "sudo"):
            if not getattr(self, key).startswith("/"):
                problems.append((f"{path}.{key}", "must be an absolute path"))
        if self.job_log_dir.startswith("/") or ".." in self.job_log_dir.split("/"):
            problems.append((f"{path}.job_log_dir", "must be a path inside the home directory"))
        if not self.default_url.startswith("/"):
            problems.append((f"{path}.default_url", "must start with /"))
        for i, name in enumerate(self.partitions):
            if not _NAME_RE.match(name):
                problems.append((f"{path}.partitions[{i}]", f"invalid name {name!r}"))
        _check_min(
            self,
            path,
            problems,
            start_timeout=10,
            http_timeout=5,
            poll_interval=1,
            startup_poll_interval=0.1,
            cluster_info_ttl=0,
            max_walltime_hours=0.1,
        )


@dataclass(frozen=True)
class SeededAnnouncement:
    """An announcement put into the queue at deploy time (e.g. a maintenance window)."""

    message: str


@dataclass(frozen=True)
class AnnouncementSettings:
    """jupyterhub-announcement as a hub-managed service."""

    enabled: bool = True
    port: int = 8888
    persist_path: str = "/var/lib/jupyterhub/announcements.json"
    cookie_secret_file: str = "/var/lib/jupyterhub/announcement_cookie_secret"  # noqa: S105
    lifetime_days: float = 7.0
    fixed_message: str = ""
    seed: list[SeededAnnouncement] = field(default_factory=list)

    def check(self, path: str, problems: list[tuple[str, str]]) -> None:
        _check_min(self, path, problems, port=1, lifetime_days=0.01)
        if self.port > 65535:
            problems.append((f"{path}.port", "must be at most 65535"))


@dataclass(frozen=True)
class IdleCullerSettings:
    """jupyterhub-idle-culler as a hub-managed service."""

    enabled: bool = True
    timeout: int = 3600  # seconds of inactivity before a server is stopped
    every: int = 300  # seconds between checks
    max_age: int = 0  # stop servers older than this (seconds); 0 = never

    def check(self, path: str, problems: list[tuple[str, str]]) -> None:
        _check_min(self, path, problems, timeout=60, every=10, max_age=0)


@dataclass(frozen=True)
class Settings:
    hub: HubSettings
    spawner: SpawnerSettings
    proxy: ProxySettings = field(default_factory=ProxySettings)
    announcement: AnnouncementSettings = field(
        default_factory=lambda: AnnouncementSettings(enabled=False)
    )
    idle_culler: IdleCullerSettings = field(default_factory=IdleCullerSettings)

    def profile(self, key: str) -> Profile | None:
        return next((p for p in self.spawner.profiles if p.key == key), None)


# --------------------------------------------------------------------------- loading


def _check_min(obj, path, problems, **minimums) -> None:
    for key, minimum in minimums.items():
        value = getattr(obj, key)
        if value < minimum:
            problems.append((f"{path}.{key}", f"must be at least {minimum}, got {value!r}"))


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}s"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {str: "string", int: "integer", float: "number", bool: "boolean"}.get(tp, str(tp))


_INVALID = object()  # a value that could not be converted (the problem is recorded)


def _convert(tp, value, path: str, problems: list[tuple[str, str]]):
    """Convert a YAML value to the schema type `tp`; record problems instead of raising."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path, problems)
    if origin is list:
        (item_type,) = typing.get_args(tp)
        if not isinstance(value, list):
            problems.append((path, f"must be {_type_name(tp)}, got {type(value).__name__}"))
            return _INVALID
        items = [_convert(item_type, v, f"{path}[{i}]", problems) for i, v in enumerate(value)]
        return _INVALID if any(i is _INVALID for i in items) else items
    ok = (
        (tp is bool and isinstance(value, bool))
        or (tp is int and isinstance(value, int) and not isinstance(value, bool))
        or (tp is float and isinstance(value, int | float) and not isinstance(value, bool))
        or (tp is str and isinstance(value, str))
    )
    if not ok:
        problems.append((path, f"must be a {_type_name(tp)}, got {value!r}"))
        return _INVALID
    return float(value) if tp is float else value


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
            kwargs[name] = _convert(hints[name], data[name], f"{prefix}{name}", problems)
            complete = complete and kwargs[name] is not _INVALID
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            problems.append((f"{prefix}{name}", "is required"))
            complete = False
    if not complete:
        return _INVALID
    obj = cls(**kwargs)
    check = getattr(obj, "check", None)
    if check:
        check(path, problems)
    return obj


def settings_from_dict(data, source: str = "<settings>") -> Settings:
    problems: list[tuple[str, str]] = []
    settings = _build(Settings, data, "", problems)
    if problems:
        raise SettingsError(source, problems)
    return settings


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
