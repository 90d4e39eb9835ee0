"""What the cluster offers: partitions and their limits, read from Slurm itself.

The resource form takes its choices and upper limits from here, and the server-side
validation checks every request against the same numbers. One snapshot of the cluster
(`ClusterSnapshot`) comes from four read-only queries run as the hub user, no sudo
(partition, node and reservation data are public to every Slurm user):

    sinfo -h -N -o SINFO_FORMAT       partitions, node sizes, time limits, node states
    scontrol show node -o             per node: allocated cores, memory and GPUs (by type),
                                      features
    scontrol show partition -o        per partition: MaxCPUsPerNode, MaxMemPerNode
    scontrol show reservation -o      reservations: state, users, accounts, nodes

Each user's associations (accounts, and the QOS of each) are private to the user under
Slurm's PrivateData, so they come through the root helper: `hpchub-slurm assoc USER`
runs sacctmgr as that user.

Both are cached and refreshed in the background (stale-while-revalidate): a page never
waits for slurmctld once the hub has a snapshot; an older one is served while a single
refresh runs. Validation of a spawn asks for data no older than the TTL (it waits for the
running refresh at most), so fifty users opening the form cost one round of queries.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import time
from dataclasses import dataclass, field

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
    usable_node_names: tuple[str, ...] = ()
    # From scontrol (ClusterSnapshot): GPUs per type of the best-equipped usable node, the
    # node features (each a tuple: the features of one usable node), and what is free now
    # on the usable nodes (idle cores, unallocated memory, unallocated GPUs per type).
    gpu_types: tuple[tuple[str, int], ...] = ()
    node_features: tuple[tuple[str, ...], ...] = ()
    free_cores: int = 0
    free_memory_mb: int = 0
    free_gpus: tuple[tuple[str, int], ...] = ()

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(sorted({f for node in self.node_features for f in node}))


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
        names.setdefault(name, {})[node.strip()] = usable
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
            usable_node_names=tuple(n for n, ok in names[name].items() if n and ok),
        )
    return partitions


# --------------------------------------------------------------------------- scontrol

_KEY = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9_:/]*)=")


def parse_oneliner(line: str) -> dict[str, str]:
    """`scontrol show ... -o` line -> {key: value}; values may hold spaces (OS=Linux 6.1 #1)."""
    matches = list(_KEY.finditer(line))
    values = {}
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(line)
        values[m.group(1)] = line[m.end() : end].strip()
    return values


def _null(value: str | None) -> str:
    return "" if value in (None, "(null)", "N/A", "n/a", "none", "None") else value


def expand_hostlist(text: str) -> list[str]:
    """Slurm host list ("node[1-3,5],gpu01") -> names."""
    names: list[str] = []
    for part in re.findall(r"[^,\[]+(?:\[[^\]]*\])?[^,]*", _null(text)):
        m = re.fullmatch(r"([^\[]*)\[([^\]]*)\](.*)", part)
        if not m:
            names.append(part)
            continue
        prefix, ranges, suffix = m.groups()
        for item in ranges.split(","):
            low, _, high = item.partition("-")
            width = len(low)
            for n in range(int(low), int(high or low) + 1):
                names.append(f"{prefix}{n:0{width}d}{suffix}")
    return names


def parse_tres(text: str) -> dict[str, str]:
    """ "cpu=2,mem=4G,gres/gpu=1,gres/gpu:a100=1" -> {"cpu": "2", ...}."""
    pairs = (item.split("=", 1) for item in _null(text).split(",") if "=" in item)
    return {k: v for k, v in pairs}


def gpu_types_of(gres: str) -> dict[str, int]:
    """ "gpu:a100:2(S:0),gpu:v100:1,shard:4" -> {"a100": 2, "v100": 1}; untyped GPUs as ""."""
    types: dict[str, int] = {}
    for item in _null(gres).split(","):
        fields = re.sub(r"\(.*?\)", "", item).strip().split(":")
        if fields[0] == "gpu" and len(fields) >= 2 and fields[-1].isdigit():
            kind = fields[1] if len(fields) == 3 else ""
            types[kind] = types.get(kind, 0) + int(fields[-1])
    return types


def _megabytes(text: str) -> int:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]?)", text.strip())
    if not m:
        return 0
    scale = {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024 * 1024}[m.group(2)]
    return int(float(m.group(1)) * scale)


@dataclass(frozen=True)
class Node:
    name: str
    partitions: tuple[str, ...]
    cpus: int
    cpus_allocated: int
    memory_mb: int
    memory_allocated_mb: int
    gpus: dict[str, int]  # type -> count ("" for untyped)
    gpus_allocated: dict[str, int]
    features: tuple[str, ...]

    @property
    def free_gpus(self) -> dict[str, int]:
        return {t: max(0, n - self.gpus_allocated.get(t, 0)) for t, n in self.gpus.items()}


def parse_nodes(output: str) -> dict[str, Node]:
    """`scontrol show node -o` -> nodes. Allocated GPUs come from AllocTRES (typed entries
    gres/gpu:TYPE=N when AccountingStorageTRES lists them; else gres/gpu=N, which is
    the node's only type when it has one)."""
    nodes = {}
    for line in output.splitlines():
        if not line.startswith("NodeName="):
            continue
        v = parse_oneliner(line)
        gpus = gpu_types_of(v.get("Gres", ""))
        alloc = parse_tres(v.get("AllocTRES", ""))
        used = {k.split(":", 1)[1]: int(n) for k, n in alloc.items() if k.startswith("gres/gpu:")}
        if not used and alloc.get("gres/gpu") and len(gpus) == 1:
            used = {next(iter(gpus)): int(alloc["gres/gpu"])}
        try:
            nodes[v["NodeName"]] = Node(
                name=v["NodeName"],
                partitions=tuple(p for p in _null(v.get("Partitions", "")).split(",") if p),
                cpus=int(v.get("CPUTot", "0")),
                cpus_allocated=int(v.get("CPUAlloc", "0")),
                memory_mb=int(v.get("RealMemory", "0")),
                memory_allocated_mb=int(v.get("AllocMem", "0") or 0),
                gpus=gpus,
                gpus_allocated=used,
                features=tuple(f for f in _null(v.get("AvailableFeatures", "")).split(",") if f),
            )
        except ValueError as e:
            raise ClusterQueryError(f"unexpected scontrol node line: {line[:120]!r}") from e
    return nodes


def parse_partition_limits(output: str) -> dict[str, dict[str, int | None]]:
    """`scontrol show partition -o` -> {name: {max_cpus_per_node, max_mem_per_node_mb}}."""
    limits = {}
    for line in output.splitlines():
        if not line.startswith("PartitionName="):
            continue
        v = parse_oneliner(line)
        cpus = v.get("MaxCPUsPerNode", "UNLIMITED")
        memory = v.get("MaxMemPerNode", "UNLIMITED")
        limits[v["PartitionName"]] = {
            "max_cpus_per_node": int(cpus) if cpus.isdigit() else None,
            "max_mem_per_node_mb": int(memory) if memory.isdigit() else None,
        }
    return limits


@dataclass(frozen=True)
class Reservation:
    name: str
    active: bool
    users: tuple[str, ...]  # "-name" entries exclude
    accounts: tuple[str, ...]
    nodes: tuple[str, ...]
    partition: str
    end_time: str

    def usable_by(self, user: str, accounts: list[str] | tuple[str, ...]) -> bool:
        """Slurm's rule: the user is listed, or one of the user's accounts is."""
        return bool(self.accounts_for(user, accounts) or self._user_listed(user))

    def _user_listed(self, user: str) -> bool:
        if f"-{user}" in self.users:
            return False
        allowed = [u for u in self.users if not u.startswith("-")]
        return user in allowed or (bool(self.users) and not allowed)

    def accounts_for(self, user: str, accounts) -> tuple[str, ...]:
        """The user's accounts that this reservation admits (all of them when the user is
        listed by name)."""
        if f"-{user}" in self.users:
            return ()
        if self._user_listed(user):
            return tuple(accounts)
        allowed = [a for a in self.accounts if not a.startswith("-")]
        return tuple(a for a in accounts if a in allowed)


def parse_reservations(output: str) -> dict[str, Reservation]:
    reservations = {}
    for line in output.splitlines():
        if not line.startswith("ReservationName="):
            continue
        v = parse_oneliner(line)
        reservations[v["ReservationName"]] = Reservation(
            name=v["ReservationName"],
            active=v.get("State", "").upper() == "ACTIVE",
            users=tuple(u for u in _null(v.get("Users", "")).split(",") if u),
            accounts=tuple(a for a in _null(v.get("Accounts", "")).split(",") if a),
            nodes=tuple(expand_hostlist(v.get("Nodes", ""))),
            partition=_null(v.get("PartitionName", "")),
            end_time=v.get("EndTime", ""),
        )
    return reservations


def _merge_counts(counts: list[dict[str, int]], how) -> tuple[tuple[str, int], ...]:
    merged: dict[str, int] = {}
    for c in counts:
        for k, n in c.items():
            merged[k] = how(merged.get(k, 0), n)
    return tuple(sorted(merged.items()))


def enrich(
    partitions: dict[str, Partition], nodes: dict[str, Node], limits: dict[str, dict]
) -> dict[str, Partition]:
    """Partitions from sinfo + what scontrol says about their nodes and limits."""
    enriched = {}
    for name, p in partitions.items():
        usable = [nodes[n] for n in p.usable_node_names if n in nodes]
        limit = limits.get(name, {})
        max_cores = p.max_cores
        if limit.get("max_cpus_per_node"):
            max_cores = min(max_cores, limit["max_cpus_per_node"])
        max_memory = p.max_memory_mb
        if limit.get("max_mem_per_node_mb"):
            max_memory = min(max_memory, limit["max_mem_per_node_mb"])
        enriched[name] = dataclasses.replace(
            p,
            max_cores=max_cores,
            max_memory_mb=max_memory,
            gpu_types=_merge_counts([n.gpus for n in usable], max),
            node_features=tuple(sorted({n.features for n in usable if n.features})),
            free_cores=sum(max(0, n.cpus - n.cpus_allocated) for n in usable),
            free_memory_mb=sum(max(0, n.memory_mb - n.memory_allocated_mb) for n in usable),
            free_gpus=_merge_counts([n.free_gpus for n in usable], lambda a, b: a + b),
        )
    return enriched


@dataclass(frozen=True)
class ClusterSnapshot:
    partitions: dict[str, Partition]
    reservations: dict[str, Reservation] = field(default_factory=dict)
    fetched_at: float = 0.0  # time.monotonic()


@dataclass(frozen=True)
class Associations:
    """One user's Slurm associations: accounts, each with the QOS it allows."""

    default_account: str
    qos: dict[str, tuple[str, ...]]  # account -> QOS names
    default_qos: dict[str, str]  # account -> default QOS ("" = Slurm's)

    @property
    def accounts(self) -> list[str]:
        return sorted(self.qos)


def parse_associations(output: str) -> Associations:
    """`hpchub-slurm assoc USER` output: DefaultAccount|Account|Partition|QOS|DefaultQOS lines."""
    default, qos, default_qos = "", {}, {}
    for line in output.splitlines():
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) != 5:
            raise ClusterQueryError(f"unexpected sacctmgr line: {line!r}")
        default_account, account, partition, names, dqos = fields
        default = default or default_account
        if partition:  # partition-specific associations are not offered
            continue
        qos[account] = tuple(sorted(q for q in names.split(",") if q))
        default_qos[account] = dqos
    return Associations(default_account=default, qos=qos, default_qos=default_qos)


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
    """Cached cluster snapshot and per-user associations from one Slurm installation.

    `snapshot()` and `associations()` serve what they have and refresh in the background
    when it is older than `ttl`; `max_age` asks for data at most that old (the caller then
    waits for one refresh, shared with every other caller).
    """

    def __init__(
        self, slurm_bin_dir: str = "/usr/bin", ttl: float = 60.0, helper: tuple[str, ...] = ()
    ):
        self.slurm_bin_dir = slurm_bin_dir.rstrip("/")
        self.ttl = ttl
        self.helper = tuple(helper)  # e.g. ("/usr/bin/sudo", "-n", ".../hpchub-slurm")
        self._snapshot: ClusterSnapshot | None = None
        self._refresh: asyncio.Task | None = None
        self._associations: dict[str, tuple[float, Associations]] = {}
        self._assoc_refresh: dict[str, asyncio.Task] = {}

    # --- the cluster ------------------------------------------------------------------
    async def _fetch_snapshot(self) -> ClusterSnapshot:
        bin_dir = self.slurm_bin_dir
        started = time.monotonic()
        sinfo, nodes, limits, reservations = await asyncio.gather(
            run([f"{bin_dir}/sinfo", "-h", "-N", "-o", SINFO_FORMAT]),
            run([f"{bin_dir}/scontrol", "show", "node", "--oneliner"]),
            run([f"{bin_dir}/scontrol", "show", "partition", "--oneliner"]),
            run([f"{bin_dir}/scontrol", "show", "reservation", "--oneliner"]),
        )
        partitions = enrich(parse_sinfo(sinfo), parse_nodes(nodes), parse_partition_limits(limits))
        snapshot = ClusterSnapshot(partitions, parse_reservations(reservations), time.monotonic())
        log.info(
            "Slurm snapshot in %.2f s: %s; reservations: %s",
            snapshot.fetched_at - started,
            ", ".join(
                f"{p.name}(cores<={p.max_cores}, mem<={p.max_memory_mb}MB, "
                f"time<={p.max_walltime_minutes}min, gpus={dict(p.gpu_types)}, "
                f"free cores={p.free_cores}, free gpus={dict(p.free_gpus)})"
                for p in partitions.values()
            ),
            ", ".join(snapshot.reservations) or "none",
        )
        self._snapshot = snapshot
        return snapshot

    def _start_refresh(self) -> asyncio.Task:
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.ensure_future(self._fetch_snapshot())
            self._refresh.add_done_callback(_log_failure)
        return self._refresh

    async def snapshot(self, max_age: float | None = None) -> ClusterSnapshot:
        """The cluster as last read. Older than the TTL: a refresh starts in the
        background; older than `max_age` (or none yet): wait for that refresh."""
        current = self._snapshot
        age = time.monotonic() - current.fetched_at if current else None
        if current is not None and age <= self.ttl:
            return current
        task = self._start_refresh()
        if current is not None and (max_age is None or age <= max_age):
            return current
        return await asyncio.shield(task)

    async def partitions(self, max_age: float | None = None) -> dict[str, Partition]:
        return (await self.snapshot(max_age)).partitions

    # --- one user's associations --------------------------------------------------------
    async def _fetch_associations(self, username: str) -> Associations:
        if not self.helper:
            raise ClusterQueryError("no Slurm helper is configured to read associations")
        associations = parse_associations(await run([*self.helper, "assoc", username]))
        self._associations[username] = (time.monotonic(), associations)
        log.info(
            "Slurm associations of %s: %s (default %s)",
            username,
            ", ".join(f"{a}[{','.join(q)}]" for a, q in associations.qos.items()) or "none",
            associations.default_account or "-",
        )
        return associations

    async def associations(self, username: str, max_age: float | None = None) -> Associations:
        cached = self._associations.get(username)
        age = time.monotonic() - cached[0] if cached else None
        if cached is not None and age <= self.ttl:
            return cached[1]
        task = self._assoc_refresh.get(username)
        if task is None or task.done():
            task = asyncio.ensure_future(self._fetch_associations(username))
            task.add_done_callback(_log_failure)
            self._assoc_refresh[username] = task
        if cached is not None and (max_age is None or age <= max_age):
            return cached[1]
        return await asyncio.shield(task)

    async def accounts(self, username: str) -> list[str]:
        return (await self.associations(username)).accounts


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("Background Slurm query failed: %s", task.exception())


_instances: dict[tuple, ClusterInfo] = {}


def cluster_info(slurm_bin_dir: str, ttl: float, helper: tuple[str, ...] = ()) -> ClusterInfo:
    """One shared cache per Slurm installation, whatever the number of spawners."""
    key = (slurm_bin_dir, ttl, tuple(helper))
    if key not in _instances:
        _instances[key] = ClusterInfo(slurm_bin_dir, ttl, helper)
    return _instances[key]
