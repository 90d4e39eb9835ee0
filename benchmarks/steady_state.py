"""The hub with N servers running: Slurm's load, the hub's CPU and its API latency.

Measured while every server of a burst runs (spawn_latency.py calls `measure` before it
stops them), over `seconds` of wall time:

- **slurmctld RPCs per minute**: two `sdiag` readings (as root on the login node), the
  difference of the per-message-type counters, in total and for the accounts that ran them
  (the hub's `sudo hpchub-slurm` helper queries as root; users' own commands as themselves).
  One-query-per-server polling would grow with N; the hub's one view of its jobs keeps it
  flat.
- **hub CPU per minute**: the jupyterhub.service cgroup's usage_usec (cpu_profile.Testbed).
- **hub API latency**: every one of the N users asks for its own user model once a second
  through the public URL (the proxy, TLS), as a dashboard or a script would; p50/p95/p99 of
  the answers, and the failures.

Needs root on the docker host, like cpu_profile.py.
"""

from __future__ import annotations

import re
import statistics
import threading
import time

import cpu_profile

from tests.testbed.hubclient import HubUser, node_exec
from tests.testbed.topology import CONTROLLER, LOGIN

_RPC_LINE = re.compile(r"^\s*(\S+)\s*\(\s*(\d+)\)\s*count:(\d+)", re.M)


def parse_sdiag(text: str) -> dict[str, dict[str, int]]:
    """sdiag's RPC counters: {'types': {REQUEST_...: count}, 'users': {name: count}}."""
    sections = {"types": {}, "users": {}}
    current = None
    for line in text.splitlines():
        if line.startswith("Remote Procedure Call statistics by message type"):
            current = "types"
        elif line.startswith("Remote Procedure Call statistics by user"):
            current = "users"
        elif line and not line[0].isspace():
            current = None
        elif current and (m := _RPC_LINE.match(line)):
            sections[current][m[1]] = int(m[3])
    return sections


def sdiag() -> dict[str, dict[str, int]]:
    return parse_sdiag(node_exec(CONTROLLER, "sdiag"))


def rpc_difference(before: dict, after: dict, minutes: float) -> dict:
    """RPCs per minute between two sdiag readings (counters only grow until slurmctld restarts)."""

    def per_minute(kind: str) -> dict[str, float]:
        rates = {
            k: (v - before[kind].get(k, 0)) / minutes
            for k, v in after[kind].items()
            if v > before[kind].get(k, 0)
        }
        return {k: round(v, 1) for k, v in sorted(rates.items(), key=lambda kv: -kv[1])}

    types, users = per_minute("types"), per_minute("users")
    return {"total": round(sum(types.values()), 1), "by_type": types, "by_user": users}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
    return ordered[index]


def poll_api(users: list[HubUser], seconds: float, every: float = 1.0) -> dict:
    """Each user GETs its own model every `every` s for `seconds`; latencies in ms."""
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def run(user: HubUser) -> None:
        while (started := time.monotonic()) < stop_at:
            try:
                status = user.api("GET", f"/users/{user.name}", timeout=30).status_code
                outcome = None if status == 200 else f"HTTP {status}"
            except Exception as e:  # noqa: BLE001 - counted, not fatal
                outcome = type(e).__name__
            took = time.monotonic() - started
            with lock:
                if outcome:
                    failures.append(outcome)
                else:
                    latencies.append(took * 1e3)
            time.sleep(max(0.0, every - took))

    threads = [threading.Thread(target=run, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if not latencies:
        return {"requests": 0, "failures": len(failures)}
    return {
        "requests": len(latencies) + len(failures),
        "failures": len(failures),
        "p50_ms": round(statistics.median(latencies), 1),
        "p95_ms": round(percentile(latencies, 95), 1),
        "p99_ms": round(percentile(latencies, 99), 1),
        "max_ms": round(max(latencies), 1),
    }


def measure(users: list[HubUser], seconds: float, testbed: cpu_profile.Testbed | None) -> dict:
    """The steady state with every user's server running (see the module's docstring)."""
    print(f"steady state: {len(users)} servers running, {seconds:.0f} s ...", flush=True)
    rpc_before = sdiag()
    cpu_before = testbed.sample() if testbed else None
    started = time.monotonic()
    api = poll_api(users, seconds)
    minutes = (time.monotonic() - started) / 60
    rpc_after = sdiag()
    report = {
        "servers": len(users),
        "seconds": round(minutes * 60, 1),
        "slurmctld_rpcs_per_minute": rpc_difference(rpc_before, rpc_after, minutes),
        "hub_api": api,
    }
    if testbed and cpu_before:
        breakdown = cpu_profile.compare(cpu_before, testbed.sample())
        hub = breakdown.units[LOGIN].get("jupyterhub.service", 0.0)
        proxy = breakdown.units[LOGIN].get("jupyterhub-proxy.service", 0.0)
        report["hub_cpu_seconds_per_minute"] = round(hub / minutes, 2)
        report["proxy_cpu_seconds_per_minute"] = round(proxy / minutes, 2)
    rpcs = report["slurmctld_rpcs_per_minute"]
    print(
        f"  slurmctld: {rpcs['total']} RPCs/min (by user: {rpcs['by_user']}); "
        f"hub CPU {report.get('hub_cpu_seconds_per_minute', '?')} s/min; "
        f"API p50/p99 {api.get('p50_ms')}/{api.get('p99_ms')} ms, "
        f"{api['failures']} failed of {api['requests']}",
        flush=True,
    )
    return report
