"""What the cluster offers: partitions and their limits, read from Slurm itself.

The resource form takes its choices and upper limits from here, and the server-side
validation checks every request against the same numbers. `sinfo` runs as the hub user
(no sudo: partition and node data are public to every Slurm user) and its answer is
cached for a few seconds, so fifty users opening the form cost one sinfo call.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass

log = logging.getLogger("hpchub.cluster")

# %P partition (with * on the default), %c CPUs, %m memory (MB), %G gres, %l time limit,
# %a availability, %t node state; -N: one line per node and partition.
SINFO_FORMAT = "%N|%P|%c|%m|%G|%l|%a|%t"
_UNUSABLE_NODE_STATES = ("down", "drain", "fail", "maint", "inval", "unk", "futr", "npc")


class ClusterQueryError(RuntimeError):
    """Slurm did not answer the query (controller down, command missing, ...)."""


@dataclass(frozen=True)
class Partition:
    name: str
    default: bool
    up: bool
    max_cores: int  # CPUs of the largest usable node (notebook jobs are one node)
    max_memory_mb: int  # RealMemory of the largest usable node
    max_gpus: int  # GPUs of the best-equipped usable node
    max_walltime_minutes: int | None  # None: no limit set in Slurm
    usable_nodes: int
    # Every node of the partition (usable or not): the names a notebook server's internal
    # TLS certificate must carry, since its job may land on any of them.
    nodes: tuple[str, ...] = ()


def parse_slurm_time(text: str) -> int | None:
    """Slurm time limit ("1-02:03:04", "8:00:00", "30", "UNLIMITED") -> minutes."""
    text = text.strip()
    if text.upper() in ("UNLIMITED", "INFINITE", "NONE", "N/A", ""):
        return None
    days = 0
    if "-" in text:
        day_text, text = text.split("-", 1)
        days = int(day_text)
    parts = [int(p) for p in text.split(":")]
    if len(parts) == 1:  # minutes
        hours, minutes, seconds = 0, parts[0], 0
    elif len(parts) == 2:  # minutes:seconds
        hours, (minutes, seconds) = 0, parts
    else:
        hours, minutes, seconds = parts[-3:]
    return days * 1440 + hours * 60 + minutes + (1 if seconds else 0)


def parse_gpu_count(gres: str) -> int:
    """Count GPUs in a gres string such as "gpu:a100:4(S:0-1),shard:8" or "(null)"."""
    total = 0
    for item in gres.split(","):
        item = re.sub(r"\(.*?\)", "", item).strip()
        fields = item.split(":")
        if fields[0] == "gpu" and len(fields) >= 2 and fields[-1].isdigit():
            total += int(fields[-1])
    return total


def parse_sinfo(output: str) -> dict[str, Partition]:
    """Turn `sinfo -h -N -o SINFO_FORMAT` output into partitions."""
    nodes: dict[str, list[tuple[int, int, int, bool]]] = {}
    names: dict[str, dict[str, None]] = {}
    meta: dict[str, tuple[bool, bool, int | None]] = {}
    for line in output.splitlines():
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) != 8:
            raise ClusterQueryError(f"unexpected sinfo line: {line!r}")
        node, part, cpus, memory, gres, limit, avail, state = fields
        default = part.endswith("*")
        name = part.rstrip("*")
        usable = not any(
            state.lower().rstrip("*~#!%$@^-").startswith(s) for s in _UNUSABLE_NODE_STATES
        )
        nodes.setdefault(name, []).append(
            (int(cpus.rstrip("+")), int(memory.rstrip("+")), parse_gpu_count(gres), usable)
        )
        names.setdefault(name, {})[node.strip()] = None
        meta[name] = (default, avail.lower() == "up", parse_slurm_time(limit))
    partitions = {}
    for name, entries in nodes.items():
        default, up, walltime = meta[name]
        usable = [e for e in entries if e[3]]
        partitions[name] = Partition(
            name=name,
            default=default,
            up=up,
            max_cores=max((e[0] for e in usable), default=0),
            max_memory_mb=max((e[1] for e in usable), default=0),
            max_gpus=max((e[2] for e in usable), default=0),
            max_walltime_minutes=walltime,
            usable_nodes=len(usable),
            nodes=tuple(n for n in names[name] if n),
        )
    return partitions


async def run(argv: list[str], timeout: float = 15.0) -> str:
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={"LANG": "C.UTF-8"},
        )
    except OSError as e:
        raise ClusterQueryError(f"cannot run {argv[0]}: {e.strerror}") from e
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError as e:
        proc.kill()
        raise ClusterQueryError(f"{' '.join(argv)} did not answer within {timeout:.0f} s") from e
    if proc.returncode != 0:
        raise ClusterQueryError(err.decode(errors="replace").strip() or f"{argv[0]} failed")
    return out.decode(errors="replace")


class ClusterInfo:
    """Cached partition data (and Slurm accounts per user) from one Slurm installation."""

    def __init__(self, slurm_bin_dir: str = "/usr/bin", ttl: float = 60.0):
        self.slurm_bin_dir = slurm_bin_dir.rstrip("/")
        self.ttl = ttl
        self._partitions: dict[str, Partition] | None = None
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()
        self._accounts: dict[str, tuple[float, list[str]]] = {}

    async def partitions(self) -> dict[str, Partition]:
        async with self._lock:
            if self._partitions is None or time.monotonic() - self._fetched_at > self.ttl:
                output = await run([f"{self.slurm_bin_dir}/sinfo", "-h", "-N", "-o", SINFO_FORMAT])
                self._partitions = parse_sinfo(output)
                self._fetched_at = time.monotonic()
                log.info(
                    "Slurm partitions: %s",
                    ", ".join(
                        f"{p.name}(cores<={p.max_cores}, mem<={p.max_memory_mb}MB, "
                        f"time<={p.max_walltime_minutes}min, gpus<={p.max_gpus})"
                        for p in self._partitions.values()
                    ),
                )
            return self._partitions

    async def accounts(self, username: str) -> list[str]:
        cached = self._accounts.get(username)
        if cached and time.monotonic() - cached[0] < self.ttl:
            return cached[1]
        output = await run(
            [
                f"{self.slurm_bin_dir}/sacctmgr",
                "-nP",
                "show",
                "associations",
                f"user={username}",
                "format=account",
            ]
        )
        accounts = sorted({line.strip() for line in output.splitlines() if line.strip()})
        self._accounts[username] = (time.monotonic(), accounts)
        return accounts


_instances: dict[tuple[str, float], ClusterInfo] = {}


def cluster_info(slurm_bin_dir: str, ttl: float) -> ClusterInfo:
    """One shared cache per Slurm installation, whatever the number of spawners."""
    key = (slurm_bin_dir, ttl)
    if key not in _instances:
        _instances[key] = ClusterInfo(slurm_bin_dir, ttl)
    return _instances[key]
