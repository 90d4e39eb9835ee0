"""User options -> a validated Slurm resource request.

The spawn form and the REST API share one vocabulary (documented in docs/api.md):

    profile         key of a profile (default: the first one)
    partition       Slurm partition name
    cores           whole number of CPU cores
    memory_gb       whole number of GB
    walltime_hours  hours, decimals allowed (0.5 = 30 minutes)
    gpus            whole number of GPUs
    account         Slurm account

Form fields arrive as strings, API values as JSON numbers or strings: both are accepted,
anything else is refused. Every value is checked against the profile and the limits the
cluster reports, and only the checked values ever reach the batch script. Errors are
`OptionsError`s whose message is written for the user who filled in the form.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

from .cluster import Partition

OPTION_NAMES = (
    "profile",
    "partition",
    "cores",
    "memory_gb",
    "walltime_hours",
    "gpus",
    "account",
)
RESOURCE_OPTIONS = OPTION_NAMES[1:]
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class OptionsError(ValueError):
    """A user option is invalid; the message is meant for the user."""


@dataclass(frozen=True)
class ProfileSpec:
    """A profile as the spawner sees it (built from the settings file)."""

    key: str
    display_name: str
    partition: str = ""
    cores: int = 1
    memory_gb: int = 2
    walltime_hours: float = 1.0
    gpus: int = 0
    account: str = ""
    sbatch_options: tuple[str, ...] = ()


@dataclass(frozen=True)
class ResourceRequest:
    """What is submitted to Slurm, after validation."""

    profile: str
    partition: str
    cores: int
    memory_gb: int
    walltime_minutes: int
    gpus: int
    account: str
    sbatch_options: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        text = (
            f"{self.cores} core{'s' * (self.cores != 1)}, {self.memory_gb} GB, "
            f"{format_walltime(self.walltime_minutes)} on partition {self.partition}"
        )
        if self.gpus:
            text += f", {self.gpus} GPU{'s' * (self.gpus != 1)}"
        if self.account:
            text += f", account {self.account}"
        return text


def format_walltime(minutes: int) -> str:
    hours, rest = divmod(minutes, 60)
    if not rest:
        return f"{hours} h"
    if not hours:
        return f"{rest} min"
    return f"{hours} h {rest} min"


def _whole_number(name: str, value) -> int:
    if isinstance(value, bool):
        raise OptionsError(f"{name} must be a whole number, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*\d{1,6}\s*", value):
        return int(value)
    raise OptionsError(f"{name} must be a whole number, got {value!r}")


def _hours(name: str, value) -> float:
    if isinstance(value, bool):
        raise OptionsError(f"{name} must be a number of hours, got {value!r}")
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str) and re.fullmatch(r"\s*\d{1,5}(\.\d{1,3})?\s*", value):
        number = float(value)
    else:
        raise OptionsError(f"{name} must be a number of hours, got {value!r}")
    if not math.isfinite(number):
        raise OptionsError(f"{name} must be a number of hours, got {value!r}")
    return number


def _name(name: str, value) -> str:
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise OptionsError(f"{name} {value!r} is not a valid Slurm {name} name")
    return value


def _single(value):
    """Form data arrives as lists of strings; the API sends plain values."""
    if isinstance(value, list):
        if len(value) != 1:
            raise OptionsError(f"expected one value, got {len(value)}")
        return value[0]
    return value


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


def resolve_request(
    user_options,
    profiles: list[ProfileSpec],
    partitions: dict[str, Partition],
    *,
    allow_custom_resources: bool = True,
    max_walltime_hours: float = 24.0,
    accounts: list[str] | None = None,
) -> ResourceRequest:
    """Validate user options against the profiles and the cluster; return the request.

    `partitions` are the offered partitions (see offered_partitions); `accounts` the
    user's Slurm accounts when the site uses them (None: accounts are not offered).
    """
    if user_options is None:
        user_options = {}
    if not isinstance(user_options, dict):
        raise OptionsError('options must be a JSON object such as {"profile": "..."}')
    unknown = sorted(str(k) for k in user_options if k not in OPTION_NAMES)
    if unknown:
        raise OptionsError(
            f"unknown option{'s' * (len(unknown) > 1)} {', '.join(map(repr, unknown))}; "
            f"known options: {', '.join(OPTION_NAMES)}"
        )
    options = {k: _single(v) for k, v in user_options.items()}
    # Empty form fields mean "the profile's value".
    options = {k: v for k, v in options.items() if not (isinstance(v, str) and v.strip() == "")}

    if not profiles:
        raise OptionsError("no profiles are configured on this hub")
    key = options.get("profile", profiles[0].key)
    profile = next((p for p in profiles if p.key == key), None)
    if profile is None:
        raise OptionsError(
            f"unknown profile {key!r}; choose one of: {', '.join(p.key for p in profiles)}"
        )

    customised = [k for k in RESOURCE_OPTIONS if k in options]
    if customised and not allow_custom_resources:
        raise OptionsError(
            f"this hub offers its profiles as they are; remove {', '.join(customised)}"
        )

    if not partitions:
        raise OptionsError("no Slurm partition is available right now; try again later")
    partition_name = options.get("partition") or profile.partition or default_partition(partitions)
    partition_name = _name("partition", partition_name)
    partition = partitions.get(partition_name)
    if partition is None:
        raise OptionsError(
            f"partition {partition_name!r} is not available; "
            f"choose one of: {', '.join(sorted(partitions))}"
        )

    cores = _whole_number("cores", options.get("cores", profile.cores))
    memory_gb = _whole_number("memory_gb", options.get("memory_gb", profile.memory_gb))
    gpus = _whole_number("gpus", options.get("gpus", profile.gpus))
    hours = _hours("walltime_hours", options.get("walltime_hours", profile.walltime_hours))

    if cores < 1:
        raise OptionsError("cores must be at least 1")
    if cores > partition.max_cores:
        raise OptionsError(
            f"{cores} cores requested, but nodes in partition {partition.name} "
            f"have at most {partition.max_cores}"
        )
    if memory_gb < 1:
        raise OptionsError("memory_gb must be at least 1")
    max_memory_gb = partition.max_memory_mb // 1024
    if memory_gb > max_memory_gb:
        raise OptionsError(
            f"{memory_gb} GB of memory requested, but nodes in partition {partition.name} "
            f"have at most {max_memory_gb} GB"
        )
    if gpus < 0:
        raise OptionsError("gpus cannot be negative")
    if gpus > partition.max_gpus:
        raise OptionsError(
            f"{gpus} GPUs requested, but nodes in partition {partition.name} "
            f"have {'no GPUs' if not partition.max_gpus else f'at most {partition.max_gpus}'}"
        )
    minutes = math.ceil(hours * 60)
    if minutes < 1:
        raise OptionsError("walltime_hours must be more than 0")
    limit = partition.max_walltime_minutes
    if limit is None:
        limit = math.floor(max_walltime_hours * 60)
    if minutes > limit:
        raise OptionsError(
            f"a walltime of {format_walltime(minutes)} was requested, but partition "
            f"{partition.name} allows at most {format_walltime(limit)}"
        )

    account = options.get("account", profile.account) or ""
    if account:
        account = _name("account", account)
        if accounts is not None and account not in accounts:
            raise OptionsError(
                f"you cannot use Slurm account {account!r}"
                + (f"; your accounts: {', '.join(accounts)}" if accounts else "")
            )
        if accounts is None and account != profile.account:
            raise OptionsError("this hub does not let you choose a Slurm account")

    return ResourceRequest(
        profile=profile.key,
        partition=partition.name,
        cores=cores,
        memory_gb=memory_gb,
        walltime_minutes=minutes,
        gpus=gpus,
        account=account,
        sbatch_options=tuple(profile.sbatch_options),
    )
