"""User options -> a validated Slurm resource request.

The spawn form, the REST API and the docs share one vocabulary, `OPTIONS` below
(docs/api.md lists it). Form fields arrive as strings, API values as JSON numbers or
strings: both are accepted, anything else (null, booleans, objects) is refused. Every value
is checked against the profile and the limits the cluster reports, and only the checked
values, as a `ResourceRequest`, ever reach the batch script. Errors are `OptionsError`s
whose message is written for the user who filled in the form.

`resolve_request` reads top to bottom like the decision it makes: parse the options,
choose the profile, choose the partition, check the limits, the GPU type, the node
features, then the account, its QOS and the reservation against what Slurm says the user
may use (`UserAccess`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields

from .cluster import Associations, Partition, Reservation
from .settings import NAME_PATTERN, PROFILE_FIELDS, Profile, SpawnerSettings


class OptionsError(ValueError):
    """A user option is invalid; the message is meant for the user. `field` names the
    option it is about ("" when it is about the options as a whole)."""

    def __init__(self, message: str, field: str = ""):
        super().__init__(message)
        self.field = field


@contextmanager
def _about(field: str) -> Iterator[None]:
    """Errors raised inside are about `field` (unless they already name one)."""
    try:
        yield
    except OptionsError as e:
        e.field = e.field or field
        raise


@dataclass(frozen=True)
class Option:
    """One user option: its name in the form, the REST API and launch links."""

    name: str
    label: str
    kind: str  # "profile", "name", "whole", "hours" or "constraint"
    minimum: float = 0
    step: float = 1


OPTIONS = (
    Option("profile", "Profile", "profile"),
    Option("partition", "Partition", "name"),
    Option("cores", "CPU cores", "whole", minimum=1),
    Option("memory_gb", "Memory (GB)", "whole", minimum=1),
    Option("walltime_hours", "Walltime (hours)", "hours", minimum=0.25, step=0.25),
    Option("gpus", "GPUs", "whole", minimum=0),
    Option("gpu_type", "GPU type", "name"),
    Option("account", "Slurm account", "name"),
    Option("qos", "QOS", "name"),
    Option("reservation", "Reservation", "name"),
    Option("constraint", "Node features", "constraint"),
)
OPTION_NAMES = tuple(o.name for o in OPTIONS)
# What a user may change in a profile (each is also a field of settings.Profile).
RESOURCE_OPTIONS = OPTION_NAMES[1:]
assert RESOURCE_OPTIONS == PROFILE_FIELDS, "settings.PROFILE_FIELDS lists the same options"
_LARGEST_NUMBER = 10**9  # anything larger is out of every range (and would overflow floats)
# Node features joined by "&" (all of them on the node): the only constraint form offered.
FEATURE_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
CONSTRAINT_PATTERN = rf"{FEATURE_PATTERN}(&{FEATURE_PATTERN}){{0,7}}"


@dataclass(frozen=True)
class UserAccess:
    """What Slurm lets one user use, for validation: their associations (None when the hub
    does not read them: accounts and QOS are then only the profile's) and the cluster's
    reservations (the user's are picked by Reservation.usable_by)."""

    username: str
    associations: Associations | None = None
    reservations: dict[str, Reservation] | None = None
    # The user's Unix groups (profiles with `groups` are only for their members).
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class ResourceRequest:
    """What is submitted to Slurm, after validation. Stored in the spawner's state."""

    profile: str
    partition: str
    cores: int
    memory_gb: int
    walltime_minutes: int
    gpus: int
    account: str
    sbatch_options: tuple[str, ...] = ()
    gpu_type: str = ""
    qos: str = ""
    reservation: str = ""
    constraint: str = ""

    @property
    def gres(self) -> str:
        """The --gres value ("" without GPUs): gpu:N or gpu:TYPE:N."""
        if not self.gpus:
            return ""
        return f"gpu:{self.gpu_type}:{self.gpus}" if self.gpu_type else f"gpu:{self.gpus}"

    def to_state(self) -> dict:
        return {**asdict(self), "sbatch_options": list(self.sbatch_options)}

    @classmethod
    def from_state(cls, state: dict | None) -> ResourceRequest | None:
        if not state:
            return None
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in state.items() if k in known}
        values["sbatch_options"] = tuple(values.get("sbatch_options", ()))
        return cls(**values)

    def describe(self) -> str:
        text = (
            f"{self.cores} core{'s' * (self.cores != 1)}, {self.memory_gb} GB, "
            f"{format_walltime(self.walltime_minutes)} on partition {self.partition}"
        )
        if self.gpus:
            kind = f" {self.gpu_type}" if self.gpu_type else ""
            text += f", {self.gpus}{kind} GPU{'s' * (self.gpus != 1)}"
        if self.constraint:
            text += f", features {self.constraint}"
        if self.account:
            text += f", account {self.account}"
        if self.qos:
            text += f", QOS {self.qos}"
        if self.reservation:
            text += f", reservation {self.reservation}"
        return text


def format_walltime(minutes: int) -> str:
    hours, rest = divmod(minutes, 60)
    if not rest:
        return f"{hours} h"
    if not hours:
        return f"{rest} min"
    return f"{hours} h {rest} min"


# --------------------------------------------------------------------------- values


def _whole_number(name: str, value) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*\d{1,9}\s*", value):
        return int(value)
    raise OptionsError(f"{name} must be a whole number, got {value!r}", name)


def _hours(name: str, value) -> float:
    if isinstance(value, int) and not isinstance(value, bool):
        number = float(min(value, _LARGEST_NUMBER))
    elif isinstance(value, float) and not math.isnan(value):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"\s*\d{1,9}(\.\d{1,3})?\s*", value):
        number = float(value)
    else:
        raise OptionsError(f"{name} must be a number of hours, got {value!r}", name)
    return number


def _name(name: str, value) -> str:
    if not isinstance(value, str) or not re.fullmatch(NAME_PATTERN, value):
        raise OptionsError(f"{name} {value!r} is not a valid Slurm {name} name", name)
    return value


def _constraint(name: str, value) -> str:
    if not isinstance(value, str) or not re.fullmatch(CONSTRAINT_PATTERN, value):
        raise OptionsError(
            f"{name} {value!r} is not a node feature or features joined by & (e.g. avx512&gpu)",
            name,
        )
    return value


def _profile_key(name: str, value) -> str:
    if not isinstance(value, str):
        raise OptionsError(f"{name} must be the key of a profile, got {value!r}", name)
    return value


_PARSERS = {
    "profile": _profile_key,
    "name": _name,
    "whole": _whole_number,
    "hours": _hours,
    "constraint": _constraint,
}


def _single(name: str, value):
    """Form data arrives as lists of strings; the API sends plain values."""
    if isinstance(value, list):
        if len(value) != 1:
            raise OptionsError(f"{name}: expected one value, got {len(value)}", name)
        return value[0]
    return value


# --------------------------------------------------------------------------- decisions


def parse_options(user_options) -> dict:
    """Shape check: a mapping of known option names to single values; empty = preset."""
    if user_options is None:
        return {}
    if not isinstance(user_options, dict):
        raise OptionsError('options must be a JSON object such as {"profile": "..."}')
    unknown = sorted(str(k) for k in user_options if k not in OPTION_NAMES)
    if unknown:
        raise OptionsError(
            f"unknown option{'s' * (len(unknown) > 1)} {', '.join(map(repr, unknown))}; "
            f"known options: {', '.join(OPTION_NAMES)}",
            unknown[0],
        )
    kinds = {o.name: o.kind for o in OPTIONS}
    options = {}
    for name, value in user_options.items():
        value = _single(name, value)
        if isinstance(value, str) and value.strip() == "":
            continue  # an empty form field means "the profile's value"
        # Typed here, so that null, false, 0 or {} are refused like any wrong type and
        # can never make a later step fall back to (or drop) a profile's preset.
        options[name] = _PARSERS[kinds[name]](name, value)
    return options


def visible_profiles(settings: SpawnerSettings, groups) -> list[Profile]:
    """The profiles a user in these Unix groups may see (and use), in the settings' order."""
    return [p for p in settings.profiles if p.visible_to(groups)]


def choose_profile(options: dict, settings: SpawnerSettings, groups=()) -> Profile:
    visible = visible_profiles(settings, groups)
    if not visible:
        raise OptionsError("no profile is available to you on this hub", "profile")
    key = options.get("profile", visible[0].key)
    profile = settings.profile(key)
    if profile is not None and not profile.visible_to(groups):
        raise OptionsError(
            f"profile {key!r} is not available to you; choose one of: "
            f"{', '.join(p.key for p in visible)}",
            "profile",
        )
    if profile is None:
        raise OptionsError(
            f"unknown profile {key!r}; choose one of: {', '.join(p.key for p in visible)}",
            "profile",
        )
    customised = [k for k in RESOURCE_OPTIONS if k in options]
    if customised and not settings.allow_custom_resources:
        raise OptionsError(
            f"this hub offers its profiles as they are; remove {', '.join(customised)}",
            customised[0],
        )
    return profile


def check_locks(options: dict, profile: Profile, partitions: dict[str, Partition]) -> None:
    """A profile's locked fields keep its values: another value is refused, naming the field."""
    for name in profile.locked:
        if name not in options:
            continue
        fixed = getattr(profile, name)
        if name == "partition":
            fixed = fixed or default_partition(partitions)
        if options[name] != fixed:
            shown = fixed if fixed != "" else "(none)"
            raise OptionsError(
                f"{name} is locked to {shown!r} by profile {profile.key!r}; "
                f"remove it or choose another profile",
                name,
            )


def offered_partitions(
    partitions: dict[str, Partition], allowed: list[str] | tuple[str, ...]
) -> dict[str, Partition]:
    """Partitions the form offers: up, with usable nodes, and allowed by the site."""
    return {
        name: p
        for name, p in partitions.items()
        if p.up and p.usable_nodes and (not allowed or name in allowed)
    }


def default_partition(partitions: dict[str, Partition]) -> str:
    for p in partitions.values():
        if p.default:
            return p.name
    return next(iter(partitions), "")


def choose_partition(
    options: dict, profile: Profile, partitions: dict[str, Partition]
) -> Partition:
    if not partitions:
        raise OptionsError("no Slurm partition is available right now; try again later")
    name = options.get("partition") or profile.partition or default_partition(partitions)
    if name not in partitions:
        raise OptionsError(
            f"partition {name!r} is not available; choose one of: {', '.join(sorted(partitions))}",
            "partition",
        )
    return partitions[name]


def walltime_limit_minutes(partition: Partition, settings: SpawnerSettings) -> int:
    if partition.max_walltime_minutes is not None:
        return partition.max_walltime_minutes
    return math.floor(settings.max_walltime_hours * 60)


def _within(value: int, minimum: int, maximum: int, *, below: str, above: str, field: str) -> None:
    if value < minimum:
        raise OptionsError(below, field)
    if value > maximum:
        raise OptionsError(above, field)


def check_limits(
    options: dict, profile: Profile, partition: Partition, settings: SpawnerSettings
) -> tuple[int, int, int, int]:
    """Cores, memory (GB), GPUs and walltime (minutes) within the partition's limits."""
    cores = options.get("cores", profile.cores)
    memory_gb = options.get("memory_gb", profile.memory_gb)
    gpus = options.get("gpus", profile.gpus)
    hours = options.get("walltime_hours", profile.walltime_hours)

    where = f"nodes in partition {partition.name}"
    _within(
        cores,
        1,
        partition.max_cores,
        below="cores must be at least 1",
        above=f"{cores} cores requested, but {where} have at most {partition.max_cores}",
        field="cores",
    )
    max_memory_gb = partition.max_memory_mb // 1024
    _within(
        memory_gb,
        1,
        max_memory_gb,
        below="memory_gb must be at least 1",
        above=f"{memory_gb} GB of memory requested, but {where} have at most {max_memory_gb} GB",
        field="memory_gb",
    )
    gpu_limit = f"at most {partition.max_gpus}" if partition.max_gpus else "no GPUs"
    _within(
        gpus,
        0,
        partition.max_gpus,
        below="gpus cannot be negative",
        above=f"{gpus} GPUs requested, but {where} have {gpu_limit}",
        field="gpus",
    )
    if not hours > 0:
        raise OptionsError("walltime_hours must be more than 0", "walltime_hours")
    limit = walltime_limit_minutes(partition, settings)
    if hours * 60 > limit:
        requested = (
            format_walltime(math.ceil(hours * 60)) if hours < _LARGEST_NUMBER else (f"{hours:g} h")
        )
        raise OptionsError(
            f"a walltime of {requested} was requested, but partition "
            f"{partition.name} allows at most {format_walltime(limit)}",
            "walltime_hours",
        )
    return cores, memory_gb, gpus, math.ceil(hours * 60)


def _listing(values) -> str:
    return ", ".join(values) if values else "none"


def check_gpu_type(options: dict, profile: Profile, partition: Partition, gpus: int) -> str:
    """The GPU type ("" = any): one the partition's nodes have, in the number asked for."""
    gpu_type = options.get("gpu_type", profile.gpu_type)
    if not gpu_type:
        return ""
    types = dict(partition.gpu_types)
    if gpu_type not in types or not gpu_type:
        raise OptionsError(
            f"gpu_type {gpu_type!r} is not in partition {partition.name}; GPU types there: "
            f"{_listing(t for t in types if t)}"
        )
    if gpus < 1:
        raise OptionsError(f"gpu_type {gpu_type!r} needs gpus of at least 1")
    if gpus > types[gpu_type]:
        raise OptionsError(
            f"{gpus} {gpu_type} GPUs requested, but nodes in partition {partition.name} "
            f"have at most {types[gpu_type]}"
        )
    return gpu_type


def check_constraint(options: dict, profile: Profile, partition: Partition) -> str:
    """Node features: each known in the partition, and all of them on one usable node."""
    constraint = options.get("constraint", profile.constraint)
    if not constraint:
        return ""
    wanted = set(constraint.split("&"))
    unknown = sorted(wanted - set(partition.features))
    if unknown:
        raise OptionsError(
            f"constraint: feature {', '.join(map(repr, unknown))} is not offered in partition "
            f"{partition.name}; features there: {_listing(partition.features)}"
        )
    if not any(wanted <= set(node) for node in partition.node_features):
        raise OptionsError(
            f"constraint {constraint!r}: no node in partition {partition.name} has all of "
            f"these features; its nodes offer: "
            + "; ".join(",".join(node) for node in partition.node_features)
        )
    return constraint


def choose_account(options: dict, profile: Profile, access: UserAccess) -> str:
    """The profile's account, or one of the user's (no associations: the profile's only)."""
    account = options.get("account", profile.account)
    if not account:
        return ""
    if access.associations is None:
        if account != profile.account:
            raise OptionsError("account: this hub does not let you choose a Slurm account")
    elif account not in access.associations.qos:
        raise OptionsError(
            f"account: you cannot use Slurm account {account!r}; your accounts: "
            f"{_listing(access.associations.accounts)}"
        )
    return account


def choose_qos(options: dict, profile: Profile, access: UserAccess, account: str) -> str:
    """A QOS of the association the job runs under (the account, or the default one)."""
    qos = options.get("qos", profile.qos)
    if not qos:
        return ""
    if access.associations is None:
        if qos != profile.qos:
            raise OptionsError("qos: this hub does not let you choose a QOS")
        return qos
    under = account or access.associations.default_account
    allowed = access.associations.qos.get(under, ())
    if qos not in allowed:
        raise OptionsError(
            f"qos: you cannot use QOS {qos!r} with account {under or '(none)'!r}; "
            f"allowed: {_listing(allowed)}"
        )
    return qos


def usable_reservations(access: UserAccess) -> dict[str, Reservation]:
    """Active reservations the user may run in (by name or through one of their accounts)."""
    accounts = access.associations.accounts if access.associations else []
    return {
        name: r
        for name, r in (access.reservations or {}).items()
        if r.active and r.usable_by(access.username, accounts)
    }


def choose_reservation(
    options: dict, profile: Profile, access: UserAccess, partition: Partition, account: str
) -> str:
    name = options.get("reservation", profile.reservation)
    if not name:
        return ""
    usable = usable_reservations(access)
    reservation = usable.get(name)
    if reservation is None:
        raise OptionsError(
            f"reservation: {name!r} is not an active reservation you may use; yours: "
            f"{_listing(sorted(usable))}"
        )
    if reservation.nodes and not set(reservation.nodes) & set(partition.nodes):
        raise OptionsError(
            f"reservation: {name!r} holds no node of partition {partition.name} "
            f"(its nodes: {', '.join(reservation.nodes)})"
        )
    accounts = access.associations.accounts if access.associations else []
    admitted = reservation.accounts_for(access.username, accounts)
    charged = account or (access.associations.default_account if access.associations else "")
    if charged and admitted and charged not in admitted:
        raise OptionsError(
            f"reservation: {name!r} admits your accounts {_listing(admitted)}, "
            f"not {charged!r}; choose one of those as account"
        )
    return name


def resolve_request(
    user_options,
    settings: SpawnerSettings,
    partitions: dict[str, Partition],
    access: UserAccess | None = None,
) -> ResourceRequest:
    """Validate user options against the profiles and the cluster; return the request.

    `partitions` are the offered partitions (see offered_partitions); `access` what Slurm
    lets the user use (associations, reservations; default: nothing beyond the profile).
    """
    access = access or UserAccess(username="")
    options = parse_options(user_options)
    with _about("profile"):
        profile = choose_profile(options, settings, access.groups)
    check_locks(options, profile, partitions)
    with _about("partition"):
        partition = choose_partition(options, profile, partitions)
    cores, memory_gb, gpus, minutes = check_limits(options, profile, partition, settings)
    with _about("gpu_type"):
        gpu_type = check_gpu_type(options, profile, partition, gpus)
    with _about("constraint"):
        constraint = check_constraint(options, profile, partition)
    with _about("account"):
        account = choose_account(options, profile, access)
    with _about("qos"):
        qos = choose_qos(options, profile, access, account)
    with _about("reservation"):
        reservation = choose_reservation(options, profile, access, partition, account)
    return ResourceRequest(
        profile=profile.key,
        partition=partition.name,
        cores=cores,
        memory_gb=memory_gb,
        walltime_minutes=minutes,
        gpus=gpus,
        account=account,
        sbatch_options=tuple(profile.sbatch_options),
        gpu_type=gpu_type,
        qos=qos,
        reservation=reservation,
        constraint=constraint,
    )


def _without(options: dict, name: str) -> dict:
    return {k: v for k, v in options.items() if k != name}


def option_errors(
    user_options,
    settings: SpawnerSettings,
    partitions: dict[str, Partition],
    access: UserAccess | None = None,
) -> dict[str, str]:
    """Every problem of a set of options, by option name ({} = valid), for a form that
    shows each field's error: the problem of one option is recorded, that option set
    aside, and the rest checked again (so a later option is checked against the earlier
    valid ones, as resolve_request does)."""
    if user_options is not None and not isinstance(user_options, dict):
        return {"": 'options must be a JSON object such as {"profile": "..."}'}
    remaining = dict(user_options or {})
    errors: dict[str, str] = {}
    for _ in range(len(remaining) + 1):
        try:
            resolve_request(remaining, settings, partitions, access)
            break
        except OptionsError as e:
            if e.field not in remaining:
                errors[e.field] = str(e)
                break
            errors[e.field] = str(e)
            remaining = _without(remaining, e.field)
    return errors


def reconcile(
    remembered,
    settings: SpawnerSettings,
    partitions: dict[str, Partition],
    access: UserAccess | None = None,
) -> tuple[dict, list[str]]:
    """A user's remembered choices, minus what the cluster no longer offers them.

    Returns the choices to offer and one note per dropped choice (a partition gone, a
    reservation ended, an account removed, a profile no longer visible...): the form shows
    the notes, so nothing is dropped silently.
    """
    if not isinstance(remembered, dict):
        return {}, []
    kept = {k: v for k, v in remembered.items() if k in OPTION_NAMES}
    notes = []
    for field, message in option_errors(kept, settings, partitions, access).items():
        if field not in kept:
            continue
        value = kept.pop(field)
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
        notes.append(f"Your last {field} {value!r} was dropped: {message}.")
    return kept, notes
