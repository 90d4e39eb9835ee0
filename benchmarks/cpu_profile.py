#!/usr/bin/env python3
"""Where the CPU goes on the testbed: per-service cgroup counters and per-process times.

The testbed's containers run systemd with the host's cgroup namespace, so every unit inside
them (jupyterhub.service, jupyterhub-proxy.service, slurmctld.service, slurmd.service, ...)
is a cgroup the host can read: its `cpu.stat` `usage_usec` counts every CPU microsecond
spent in it, short-lived processes included. Within a unit, /proc/<pid>/stat tells the
processes apart (utime+stime of the process, cutime+cstime of the children it reaped: the
hub's `sudo` helpers end up in the hub's children, a job's login-shell commands in the
batch script's). Whatever a unit spent that no live process accounts for is shown as
"other" (processes that ended together with their parent, e.g. a stopped job).

`spawn_latency.py --cpu` takes a sample before a burst and one when every server is ready
(before any is stopped) and prints the breakdown; docs/performance.md explains the method.
As a tool of its own it profiles the testbed as it is, e.g. N servers running:

    python benchmarks/cpu_profile.py --seconds 60

Needs root on the docker host (it reads the containers' /proc and cgroups from the host).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tests.testbed.topology import ALL_NODES, LOGIN, container  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Proc:
    """One process as /proc/<pid>/stat saw it (times in clock ticks)."""

    pid: int
    ppid: int
    start: int  # start time since boot (ticks): tells a reused pid apart
    comm: str
    args: str
    unit: str  # the systemd unit (cgroup) inside its container, e.g. jupyterhub.service
    own: int  # utime + stime
    reaped: int  # cutime + cstime: children it has waited for


@dataclass
class Sample:
    at: float  # time.monotonic()
    units: dict[str, dict[str, int]]  # node -> cgroup path inside the container -> usec
    procs: dict[str, dict[tuple[int, int], Proc]]  # node -> (pid, start) -> Proc
    machine: tuple[int, int]  # /proc/stat: busy ticks, all ticks (all CPUs)
    bench: float  # CPU seconds of this process (the benchmark's own clients)


def _cgroup2_mount() -> Path:
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) > 2 and fields[2] == "cgroup2":
            return Path(fields[1])
    raise RuntimeError("no cgroup2 hierarchy mounted on this host (needed for cpu.stat)")


def _cgroup2_path(pid: int) -> str:
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return line[3:]
    return ""


@dataclass
class Testbed:
    """The containers' cgroup roots and init pids on the host."""

    roots: dict[str, Path] = field(default_factory=dict)  # node -> cgroup directory

    @classmethod
    def find(cls) -> Testbed:
        mount = _cgroup2_mount()
        roots = {}
        for node in ALL_NODES:
            pid = subprocess.run(
                ["docker", "inspect", "-f", "{{.State.Pid}}", container(node)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            # PID 1 of the container is in <root>/init.scope (systemd's own unit).
            path = _cgroup2_path(int(pid)).removesuffix("/init.scope")
            roots[node] = mount / path.lstrip("/")
        return cls(roots)

    def sample(self) -> Sample:
        units, procs = {}, {}
        for node, root in self.roots.items():
            units[node] = _unit_usage(root)
            procs[node] = _processes(root)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return Sample(
            time.monotonic(), units, procs, _machine_ticks(), usage.ru_utime + usage.ru_stime
        )

    def hub_pid(self) -> int | None:
        """The host pid of the JupyterHub process (for py-spy)."""
        for proc in _processes(self.roots[LOGIN]).values():
            if proc.unit == "jupyterhub.service" and "bin/jupyterhub" in proc.args:
                return proc.pid
        return None


def _unit_usage(root: Path) -> dict[str, int]:
    """usage_usec of the container and every cgroup below it (relative paths)."""
    usage = {}
    for directory, _dirs, files in os.walk(root):
        if "cpu.stat" not in files:
            continue
        try:
            text = (Path(directory) / "cpu.stat").read_text()
        except OSError:
            continue  # removed meanwhile (a scope that ended)
        match = re.search(r"^usage_usec (\d+)$", text, re.M)
        if match:
            usage[os.path.relpath(directory, root)] = int(match.group(1))
    return usage


def _processes(root: Path) -> dict[tuple[int, int], Proc]:
    procs = {}
    for directory, _dirs, files in os.walk(root):
        if "cgroup.procs" not in files:
            continue
        unit = os.path.relpath(directory, root).split("/")[-1]
        try:
            pids = (Path(directory) / "cgroup.procs").read_text().split()
        except OSError:
            continue
        for pid in pids:
            proc = _read_proc(int(pid), unit)
            if proc is not None:
                procs[(proc.pid, proc.start)] = proc
    return procs


def _read_proc(pid: int, unit: str) -> Proc | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        args = (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return None  # it ended
    # comm is in parentheses and may contain spaces: split after the last ")".
    comm = stat[stat.index("(") + 1 : stat.rindex(")")]
    rest = stat[stat.rindex(")") + 2 :].split()
    # Fields from 3 (state): ppid=4, utime=14, stime=15, cutime=16, cstime=17, starttime=22.
    ppid = int(rest[1])
    utime, stime, cutime, cstime = (int(rest[i]) for i in (11, 12, 13, 14))
    start = int(rest[19])
    return Proc(pid, ppid, start, comm, args.strip()[:300], unit, utime + stime, cutime + cstime)


def _machine_ticks() -> tuple[int, int]:
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # without guest times (already in user)
    return total - idle, total


# --------------------------------------------------------------------------- attribution

# What each process is, by its unit and command line: (label of its own CPU, label of the
# CPU of the children it reaped). Checked in order; the first match wins.
RULES: list[tuple[str, str, str, str]] = [
    # unit, command-line pattern, own, reaped children
    (
        "jupyterhub.service",
        r"bin/jupyterhub\b",
        "hub: JupyterHub process (Python)",
        "hub: sudo + helpers + Slurm commands",
    ),
    (
        "jupyterhub.service",
        r"announcements|idle_culler",
        "hub: services (announcement, culler)",
        "hub: services (announcement, culler)",
    ),
    ("jupyterhub-proxy.service", r"", "proxy: configurable-http-proxy", "proxy: other"),
    ("slurmctld.service", r"", "slurmctld", "slurmctld"),
    ("slurmd.service", r"^\S*slurmd\b", "slurmd daemon", "slurmd: its children (get-user-env)"),
    ("slurmd.service", r"^slurmstepd", "slurmstepd", "slurmstepd"),
    (
        "slurmd.service",
        r"slurm_script|job\d+/",
        "job: batch script shell",
        "job: shell commands (login env, mkdir, ...)",
    ),
    (
        "slurmd.service",
        r"jupyterhub-singleuser|batchspawner-singleuser|jupyter",
        "job: JupyterLab server",
        "job: JupyterLab children",
    ),
    ("munge.service", r"", "munged", "munged"),
    # slurmd double-forks slurmstepd: when a job ends (cancelled, timed out), the container's
    # PID 1 reaps it, with the CPU of everything the job ran.
    ("init.scope", r"", "systemd (PID 1)", "ended jobs (reaped by PID 1)"),
    ("systemd-journald.service", r"", "journald", "journald"),
]


def classify(proc: Proc) -> tuple[str, str]:
    for unit, pattern, own, reaped in RULES:
        if proc.unit == unit and re.search(pattern, proc.args or proc.comm):
            return own, reaped
    return f"other: {proc.unit}", f"other: {proc.unit}"


def unit_of(path: str) -> str:
    """A cgroup path inside a container -> the unit we report (top-level services)."""
    parts = path.split("/")
    if path == ".":
        return "(container total)"
    if parts[0] == "system.slice" and len(parts) >= 2:
        return parts[1]
    return parts[0]


@dataclass
class Breakdown:
    seconds: float
    units: dict[str, dict[str, float]]  # node -> unit -> CPU seconds
    processes: dict[str, dict[str, float]]  # node -> label -> CPU seconds
    processes_count: dict[str, dict[str, int]]  # node -> label -> processes seen
    containers: float  # CPU seconds of all testbed containers
    machine: float  # CPU seconds of the whole machine (all CPUs)
    bench: float  # CPU seconds of the benchmark's own clients

    def to_json(self) -> dict:
        return {
            "seconds": round(self.seconds, 2),
            "cpu_seconds": {
                "machine": round(self.machine, 2),
                "testbed_containers": round(self.containers, 2),
                "benchmark_clients": round(self.bench, 2),
            },
            "units": {
                n: {u: round(v, 2) for u, v in sorted(us.items())} for n, us in self.units.items()
            },
            "processes": {
                n: {k: round(v, 2) for k, v in sorted(ps.items())}
                for n, ps in self.processes.items()
            },
        }


def compare(before: Sample, after: Sample) -> Breakdown:
    units: dict[str, dict[str, float]] = {}
    processes: dict[str, dict[str, float]] = {}
    counts: dict[str, dict[str, int]] = {}
    containers = 0.0
    for node in after.units:
        old, new = before.units.get(node, {}), after.units[node]
        per_unit: dict[str, float] = collections.defaultdict(float)
        for path, usec in new.items():
            if path != "." and path.count("/") > (1 if path.startswith("system.slice") else 0):
                continue  # only the top-level units (their counters include what is below)
            per_unit[unit_of(path)] += (usec - old.get(path, 0)) / 1e6
        containers += per_unit.get("(container total)", 0.0)
        units[node] = dict(per_unit)
        labels: dict[str, float] = collections.defaultdict(float)
        seen: dict[str, int] = collections.defaultdict(int)
        olds = before.procs.get(node, {})
        for key, proc in after.procs[node].items():
            own, reaped = classify(proc)
            previous = olds.get(key)
            base_own = previous.own if previous else 0
            base_reaped = previous.reaped if previous else 0
            labels[own] += (proc.own - base_own) / TICKS
            labels[reaped] += (proc.reaped - base_reaped) / TICKS
            seen[own] += 1
        processes[node] = {k: v for k, v in labels.items() if v > 0}
        counts[node] = dict(seen)
    busy = (after.machine[0] - before.machine[0]) / TICKS
    return Breakdown(
        seconds=after.at - before.at,
        units=units,
        processes=processes,
        processes_count=counts,
        containers=containers,
        machine=busy,
        bench=after.bench - before.bench,
    )


def print_breakdown(b: Breakdown, servers: int = 0) -> None:
    per = f" | per server (of {servers})" if servers else ""
    print(f"\nCPU seconds over {b.seconds:.1f} s (2 cores = {2 * b.seconds:.0f} CPU-s available)")
    print(f"  {'where':58s} CPU-s{per}")

    def row(name: str, value: float) -> None:
        extra = f" | {value / servers:6.2f}" if servers else ""
        print(f"  {name:58s} {value:6.1f}{extra}")

    for node, per_unit in b.units.items():
        total = per_unit.get("(container total)", 0.0)
        row(f"{node} (all of it)", total)
        for unit, value in sorted(per_unit.items(), key=lambda kv: -kv[1]):
            if unit == "(container total)" or value < 0.05:
                continue
            row(f"  {unit}", value)
        for label, value in sorted(b.processes[node].items(), key=lambda kv: -kv[1]):
            if value >= 0.05 and not label.startswith("other"):
                row(f"    process: {label}", value)
    row("all testbed containers", b.containers)
    row("the benchmark's clients (this process)", b.bench)
    row("rest of the machine (dockerd, other work)", b.machine - b.containers - b.bench)
    row("whole machine", b.machine)


# --------------------------------------------------------------------------- sudo counts


def sudo_counts(since: float, until: float) -> dict[str, int]:
    """Helper runs through sudo on the login node between two epoch times, by verb."""
    out = subprocess.run(
        [
            "docker",
            "exec",
            container(LOGIN),
            "journalctl",
            "-q",
            "_COMM=sudo",
            f"--since=@{since:.0f}",
            f"--until=@{until + 1:.0f}",
            "-o",
            "cat",
        ],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    counts: dict[str, int] = collections.Counter()
    for line in out.splitlines():
        match = re.search(r"COMMAND=\S*/(hpchub-\w+)(?: (\w+))?", line)
        if match:
            counts[" ".join(filter(None, match.groups()))] += 1
    return dict(counts)


def hub_requests(since: float, until: float) -> int:
    """Requests the hub answered between two epoch times (its access log, one line each)."""
    out = subprocess.run(
        [
            "docker",
            "exec",
            container(LOGIN),
            "journalctl",
            "-q",
            "-u",
            "jupyterhub",
            f"--since=@{since:.0f}",
            f"--until=@{until + 1:.0f}",
            "-o",
            "cat",
        ],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return sum(1 for line in out.splitlines() if re.search(r" log:\d+\] \d{3} [A-Z]+ ", line))


# --------------------------------------------------------------------------- py-spy


def py_spy_binary() -> str | None:
    candidate = Path(sys.executable).parent / "py-spy"
    if candidate.exists():
        return str(candidate)
    from shutil import which

    return which("py-spy")


def start_py_spy(pid: int, seconds: float, out: Path) -> subprocess.Popen | None:
    """Sample the hub (no pauses: --nonblocking) for `seconds`, raw folded stacks to `out`.

    Only samples in which a thread holds the GIL are kept (--gil): at 50 samples a second,
    N samples are about N/50 CPU-seconds of Python.
    """
    binary = py_spy_binary()
    if binary is None:
        print("py-spy not found (pip install py-spy into the venv): no hub profile")
        return None
    return subprocess.Popen(
        [
            binary,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(int(seconds)),
            "--rate",
            "50",
            "--nonblocking",
            "--gil",  # only the thread holding the GIL: Python's CPU, not idle waits
            "--format",
            "raw",
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def summarise_py_spy(path: Path, top: int = 15) -> dict:
    """Folded stacks -> the functions with the most samples, by self and by package."""
    if not path.exists():
        return {}
    own: dict[str, int] = collections.Counter()
    packages: dict[str, int] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        leaf = frames[-1]
        own[leaf] += n
        # The innermost frame of a package (py-spy names files relative to site-packages).
        for frame in reversed(frames):
            match = re.search(r"\(([^()]+?):\d+\)$", frame)
            if not match or match.group(1).startswith("<"):
                continue
            path = match.group(1)
            package = path.split("/")[0].removesuffix(".py")
            if "/lib/python3" in path:
                package = "stdlib " + path.split("/lib/python3")[1].split("/")[1]
            packages[package] += n
            break
        else:
            packages["(interpreter: imports, idle)"] += n
    return {
        "samples": total,
        "top_functions": [[f, n] for f, n in own.most_common(top)],
        "top_packages": [[p, n] for p, n in packages.most_common(top)],
    }


def print_py_spy(summary: dict) -> None:
    if not summary.get("samples"):
        return
    total = summary["samples"]
    print(f"\npy-spy: {total} samples of the hub holding the GIL (~{total / 50:.0f} CPU-s)")
    print("  by package (innermost frame of a known package):")
    for name, n in summary["top_packages"]:
        print(f"    {100 * n / total:5.1f} %  {name}")
    print("  by function (self):")
    for name, n in summary["top_functions"]:
        print(f"    {100 * n / total:5.1f} %  {name[:110]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60, help="how long to watch")
    parser.add_argument("--json", type=Path, help="write the breakdown here too")
    args = parser.parse_args()
    testbed = Testbed.find()
    before = testbed.sample()
    wall = time.time()
    time.sleep(args.seconds)
    breakdown = compare(before, testbed.sample())
    print_breakdown(breakdown)
    counts = sudo_counts(wall, time.time())
    print(f"\nhelper runs through sudo: {sum(counts.values())} {counts}")
    if args.json:
        args.json.write_text(json.dumps({**breakdown.to_json(), "sudo": counts}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
