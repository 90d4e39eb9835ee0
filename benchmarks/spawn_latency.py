#!/usr/bin/env python3
"""Spawn latency on the running testbed: REST request -> JupyterLab answering through the proxy.

    make bench                      # 10 sequential spawns as alice, then 16 users at once
    python benchmarks/spawn_latency.py --spawns 20 --users 0

Measured from the POST (not from its answer: the REST call itself waits up to 10 s) to the
first 200 from /user/<name>/api/status behind the proxy. Results are printed and written
to benchmarks/results/spawn-latency-<date>.json; docs/benchmarks.md records the numbers.
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


def concurrent(users: list[HubUser], options: dict, timeout: float) -> dict[str, float | str]:
    """Start every user's server at the same moment; seconds to ready, or the error."""
    results: dict[str, float | str] = {}
    barrier = threading.Barrier(len(users))

    def run(user: HubUser) -> None:
        barrier.wait()
        try:
            results[user.name] = user.start_server(options, timeout=timeout)
        except Exception as e:  # noqa: BLE001 - reported per user
            results[user.name] = f"failed: {e}"

    threads = [threading.Thread(target=run, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for user in users:
        if user.server_model() is not None:
            user.stop_server()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spawns", type=int, default=10)
    parser.add_argument(
        "--users", type=int, default=16, help="bench accounts spawning at once (0: skip)"
    )
    parser.add_argument("--timeout", type=float, default=300, help="per-user start timeout")
    parser.add_argument("--profile", default="small")
    parser.add_argument(
        "--fail-on-regression",
        action="store_true",
        help="exit 1 when the median is slower than baseline.json allows",
    )
    args = parser.parse_args()

    access = load_access()
    alice = login(access, access["users"][0]["name"], access["users"][0]["password"])
    print(f"{args.spawns} sequential spawns of profile {args.profile!r} as {alice.name}:")
    times = sequential(alice, args.spawns, args.profile)
    report = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "profile": args.profile,
        "sequential_seconds": [round(t, 3) for t in times],
        "median_seconds": round(statistics.median(times), 3),
        "min_seconds": round(min(times), 3),
        "max_seconds": round(max(times), 3),
    }
    print(
        f"median {report['median_seconds']:.2f} s, min {report['min_seconds']:.2f} s, "
        f"max {report['max_seconds']:.2f} s"
    )
    if args.users:
        accounts = access.get("bench_users", [])[: args.users]
        if len(accounts) < args.users:
            print(f"only {len(accounts)} bench accounts on the testbed (testbed_bench_users)")
        users = [login(access, a["name"], a["password"]) for a in accounts]
        options = {"profile": args.profile, "memory_gb": 1}
        print(f"{len(users)} users spawning at once ({options}):", flush=True)
        started = time.monotonic()
        results = concurrent(users, options, args.timeout)
        ready = sorted(v for v in results.values() if isinstance(v, float))
        failed = {k: v for k, v in results.items() if not isinstance(v, float)}
        report["concurrent"] = {
            "users": len(users),
            "ready": len(ready),
            "failed": failed,
            "median_seconds": round(statistics.median(ready), 3) if ready else None,
            "all_ready_seconds": round(max(ready), 3) if ready and not failed else None,
            "wall_seconds": round(time.monotonic() - started, 3),
        }
        c = report["concurrent"]
        print(
            f"{c['ready']}/{c['users']} ready, median {c['median_seconds']} s, "
            f"all ready in {c['all_ready_seconds']} s; failed: {len(failed)}"
        )

    out = HERE / "results" / f"spawn-latency-{datetime.date.today().isoformat()}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {out.relative_to(HERE.parent)}")

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
