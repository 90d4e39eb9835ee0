#!/usr/bin/env python3
"""Spawn latency on the running testbed: REST request -> JupyterLab answering through the proxy.

    make bench                      # 10 sequential spawns as alice, then 16 users at once
    python benchmarks/spawn_latency.py --spawns 20 --users 0
    python benchmarks/spawn_latency.py --users 16 50 --cpu   # two bursts, CPU by service

Measured from the POST (not from its answer: the REST call itself waits up to 10 s) to the
first 200 from /user/<name>/api/status behind the proxy. Results are printed and written
to benchmarks/results/spawn-latency-<date>.json; docs/benchmarks.md records the numbers.
In a burst every user asks for its server model once a second (`--poll`), as a script
would. `--cpu` samples the testbed's per-service CPU counters before each burst and when
all its servers are ready (benchmarks/cpu_profile.py, docs/performance.md); `--py-spy`
also samples the hub process during the burst.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import cpu_profile  # noqa: E402

from tests.testbed.hubclient import HubUser, load_access  # noqa: E402


def login(access: dict, name: str, password: str) -> HubUser:
    user = HubUser(access, name, password)
    user.login()
    user.create_token(note="hpchub benchmark")
    if user.server_model() is not None:
        user.stop_server()
    return user


def sequential(user: HubUser, spawns: int, profile: str) -> list[float]:
    results = []
    for i in range(spawns):
        seconds = user.start_server({"profile": profile})
        results.append(seconds)
        print(f"  spawn {i + 1:2d}/{spawns}: {seconds:5.2f} s", flush=True)
        user.stop_server()
    return results


def concurrent(
    users: list[HubUser],
    options: dict,
    timeout: float,
    poll: float = 1.0,
    when_ready=None,
) -> dict[str, float | str]:
    """Start every user's server at the same moment; seconds to ready, or the error.

    `when_ready()` runs once every user is done, before any server is stopped.
    """
    results: dict[str, float | str] = {}
    barrier = threading.Barrier(len(users))

    def run(user: HubUser) -> None:
        barrier.wait()
        try:
            results[user.name] = user.start_server(options, timeout=timeout, poll=poll)
        except Exception as e:  # noqa: BLE001 - reported per user
            results[user.name] = f"failed: {e}"

    threads = [threading.Thread(target=run, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if when_ready is not None:
        when_ready()
    for user in users:
        if user.server_model() is not None:
            user.stop_server()
    return results


def burst(
    access: dict,
    count: int,
    profile: str,
    timeout: float,
    poll: float,
    cpu: bool,
    py_spy: bool,
) -> dict:
    """`count` bench users start at once; with `cpu`, where the CPU went until all were ready."""
    accounts = access.get("bench_users", [])[:count]
    if len(accounts) < count:
        print(f"only {len(accounts)} bench accounts on the testbed (testbed_bench_users)")
    users = [login(access, a["name"], a["password"]) for a in accounts]
    # Every request the clients make goes through the proxy (TLS): count the answers.
    answered = [0]
    for user in users:
        user.session.hooks["response"].append(
            lambda r, *a, **k: answered.__setitem__(0, answered[0] + 1)
        )
    options = {"profile": profile, "memory_gb": 1}
    print(f"{len(users)} users spawning at once ({options}), polling every {poll} s:", flush=True)
    testbed = cpu_profile.Testbed.find() if cpu else None
    samples: dict = {}
    spy = None
    spy_file = HERE / "results" / f"py-spy-hub-{len(users)}.txt"
    if testbed is not None:
        if py_spy and (pid := testbed.hub_pid()):
            spy_file.unlink(missing_ok=True)
            spy = cpu_profile.start_py_spy(pid, timeout, spy_file)
        samples["before"] = testbed.sample()
    wall_started = time.time()
    started = time.monotonic()

    def ready() -> None:
        if testbed is not None:
            samples["after"] = testbed.sample()
        samples["wall_ready"] = time.time()
        samples["client_requests"] = answered[0]

    results = concurrent(users, options, timeout, poll=poll, when_ready=ready)
    ready_times = sorted(v for v in results.values() if isinstance(v, float))
    failed = {k: v for k, v in results.items() if not isinstance(v, float)}
    report = {
        "users": len(users),
        "poll_seconds": poll,
        "ready": len(ready_times),
        "failed": failed,
        "median_seconds": round(statistics.median(ready_times), 3) if ready_times else None,
        "all_ready_seconds": round(max(ready_times), 3) if ready_times and not failed else None,
        "wall_seconds": round(time.monotonic() - started, 3),
    }
    print(
        f"{report['ready']}/{report['users']} ready, median {report['median_seconds']} s, "
        f"all ready in {report['all_ready_seconds']} s; failed: {len(failed)}"
    )
    if testbed is not None:
        breakdown = cpu_profile.compare(samples["before"], samples["after"])
        cpu_profile.print_breakdown(breakdown, servers=len(ready_times))
        counts = cpu_profile.sudo_counts(wall_started, samples["wall_ready"])
        print(f"\nhelper runs through sudo until all were ready: {sum(counts.values())} {counts}")
        hub_requests = cpu_profile.hub_requests(wall_started, samples["wall_ready"])
        clients = samples["client_requests"]
        proxy = breakdown.units[cpu_profile.LOGIN].get("jupyterhub-proxy.service", 0.0)
        print(
            f"requests: {clients} from the clients (all through the proxy: "
            f"{1e3 * proxy / max(clients, 1):.1f} ms of proxy CPU each), "
            f"{hub_requests} answered by the hub"
        )
        report["cpu"] = {
            **breakdown.to_json(),
            "sudo": counts,
            "client_requests": clients,
            "hub_requests": hub_requests,
        }
        if spy is not None:
            spy.terminate()
            spy.wait()
            report["py_spy"] = cpu_profile.summarise_py_spy(spy_file)
            cpu_profile.print_py_spy(report["py_spy"])
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spawns", type=int, default=10)
    parser.add_argument(
        "--users",
        type=int,
        nargs="+",
        default=[16],
        help="bench accounts spawning at once, one burst per value (0: none)",
    )
    parser.add_argument(
        "--poll", type=float, default=1.0, help="seconds between a user's status requests"
    )
    parser.add_argument(
        "--cpu", action="store_true", help="CPU seconds by service during each burst"
    )
    parser.add_argument(
        "--py-spy", action="store_true", help="sample the hub process with py-spy (with --cpu)"
    )
    parser.add_argument("--label", default="", help="a name for this run in the results file")
    parser.add_argument("--timeout", type=float, default=300, help="per-user start timeout")
    parser.add_argument("--profile", default="small")
    parser.add_argument(
        "--fail-on-regression",
        action="store_true",
        help="exit 1 when the median is slower than baseline.json allows",
    )
    args = parser.parse_args()

    access = load_access()
    report: dict = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "profile": args.profile,
    }
    if args.spawns:
        alice = login(access, access["users"][0]["name"], access["users"][0]["password"])
        print(f"{args.spawns} sequential spawns of profile {args.profile!r} as {alice.name}:")
        times = sequential(alice, args.spawns, args.profile)
        report |= {
            "sequential_seconds": [round(t, 3) for t in times],
            "median_seconds": round(statistics.median(times), 3),
            "min_seconds": round(min(times), 3),
            "max_seconds": round(max(times), 3),
        }
        print(
            f"median {report['median_seconds']:.2f} s, min {report['min_seconds']:.2f} s, "
            f"max {report['max_seconds']:.2f} s"
        )
    report["label"] = args.label
    report["bursts"] = [
        burst(access, n, args.profile, args.timeout, args.poll, args.cpu, args.py_spy)
        for n in args.users
        if n
    ]

    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H%M")
    out = HERE / "results" / f"spawn-latency-{stamp}{'-' + args.label if args.label else ''}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {out.relative_to(HERE.parent)}")

    if "median_seconds" not in report:
        return 0
    baseline = json.loads((HERE / "baseline.json").read_text())
    reference = baseline["spawn_median_seconds"]
    change = report["median_seconds"] / reference - 1
    print(f"median vs baseline {reference:.2f} s: {change:+.0%}")
    if report["median_seconds"] > reference * baseline["allowed_slowdown"]:
        print(f"REGRESSION: more than {baseline['allowed_slowdown']:.1f}x the baseline median")
        return 1 if args.fail_on_regression else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
