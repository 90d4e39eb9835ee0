#!/usr/bin/env python3
"""Time to open the spawn form while slurmctld is idle, flooded, and not answering at all.

The form shows live cluster data (partitions, free resources, reservations, the user's
accounts). A page that waits for Slurm is as slow as the slowest `sinfo`; at a real site
slurmctld is shared with thousands of batch users and sometimes takes seconds to answer
("Socket timed out on send/recv operation"). hpchub serves the last snapshot and refreshes
it in the background (hub_config/hpchub_config/cluster.py); the form hpchub had before
(commit BEFORE_COMMIT) cached `sinfo` for the TTL, and the first visitor after each expiry
waited for a fresh `sinfo`.

For each phase, one user (alice, logged in through the public URL) opens /hub/spawn every
`--every` seconds for `--seconds`; the page time is the full HTTPS request through the proxy.
In the same phase, on the login node as the hub's account, the script times what a page
waited for on a cache miss:

- **before**: the old `ClusterInfo.partitions()` with an empty cache (the code of
  BEFORE_COMMIT, read from git: one `sinfo`);
- **after, cold**: the new `ClusterInfo.snapshot()` with an empty cache (`sinfo` and three
  `scontrol show` in parallel); only a hub's very first page after its start waits for it.

Phases: `idle`; `flooded` (`--flood` shell loops on the compute nodes and the controller
querying slurmctld as fast as it answers: squeue, sinfo, scontrol show job); `stalled`
(slurmctld stopped with SIGSTOP for the phase, continued afterwards, whatever happens).

Run on the docker host against the running testbed (`make testbed`): `make bench-form`.
Results: benchmarks/results/form-open-*.json; `--record` appends the table to
docs/performance.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import steady_state  # noqa: E402

from tests.testbed.hubclient import HubUser, load_access, node_exec  # noqa: E402
from tests.testbed.topology import COMPUTE_NODES, CONTROLLER, LOGIN, container  # noqa: E402

BEFORE_COMMIT = "cbdc533915bac21a730df5a61805e64c6e199cc2"
NEW_MODULE = HERE.parent / "hub_config" / "hpchub_config" / "cluster.py"
HUB_ACCOUNT = "jupyterhub"
PROBE_DIR = "/tmp/hpchub-form-bench"  # noqa: S108 - inside the testbed's login container

# Prints the seconds one cold query took, or "error <message>" (as the page would have).
PROBE = """
import asyncio, sys, time
sys.path.insert(0, {dir!r})
import {module} as cluster
async def main():
    info = cluster.ClusterInfo("/usr/bin", 60.0)
    started = time.monotonic()
    try:
        await info.{call}
    except cluster.ClusterQueryError as e:
        print("error %.3f %s" % (time.monotonic() - started, e))
        return
    print("ok %.3f" % (time.monotonic() - started))
asyncio.run(main())
"""

FLOOD_LOOP = (
    "while :; do squeue -a -h >/dev/null 2>&1; sinfo -h >/dev/null 2>&1; "
    "scontrol show job >/dev/null 2>&1; done"
)


def install_probes() -> bool:
    """Copy the old and the new cluster module onto the login node; False without git history."""
    try:
        old = subprocess.run(
            ["git", "show", f"{BEFORE_COMMIT}:hub_config/hpchub_config/cluster.py"],
            cwd=HERE.parent,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (subprocess.CalledProcessError, FileNotFoundError):
        print(f"  (no git history with {BEFORE_COMMIT[:7]}: the 'before' column stays empty)")
        old = None
    node_exec(LOGIN, f"install -d -m 0755 {PROBE_DIR}")
    for name, text in (("cluster_before", old), ("cluster_after", NEW_MODULE.read_text())):
        if text is None:
            continue
        subprocess.run(
            [
                "docker",
                "exec",
                "-i",
                container(LOGIN),
                "bash",
                "-c",
                f"cat > {PROBE_DIR}/{name}.py && chmod 0644 {PROBE_DIR}/{name}.py",
            ],
            input=text,
            text=True,
            check=True,
        )
    return old is not None


def parse_probe(out: str) -> dict:
    """The probe's line: `ok SECONDS` or `error SECONDS MESSAGE`."""
    kind, _, rest = out.strip().partition(" ")
    seconds, _, message = rest.partition(" ")
    try:
        value = float(seconds)
    except ValueError:
        return {"ok": False, "seconds": None, "error": out.strip() or "no output"}
    return {"ok": kind == "ok", "seconds": round(value, 3), "error": message or None}


def probe(module: str, call: str) -> dict:
    code = PROBE.format(dir=PROBE_DIR, module=module, call=call)
    return parse_probe(
        node_exec(LOGIN, f"python3 -c {shlex.quote(code)}", user=HUB_ACCOUNT, check=False)
    )


def open_form(user: HubUser) -> tuple[float, bool, str]:
    """(seconds, page ok, what went wrong). ok = 200 and the partition choices are in it."""
    started = time.monotonic()
    try:
        response = user.session.get(f"{user.base}/hub/spawn", timeout=60)
    except Exception as e:  # noqa: BLE001 - a benchmark reports every failure
        return time.monotonic() - started, False, type(e).__name__
    seconds = time.monotonic() - started
    if response.status_code != 200:
        return seconds, False, f"HTTP {response.status_code}"
    if 'name="partition"' not in response.text:
        return seconds, False, "no partition field"
    return seconds, True, ""


def phase(user: HubUser, seconds: float, every: float, probes: list[tuple[str, str, str]]) -> dict:
    """Open the form every `every` s for `seconds`; run the cold probes once, mid-phase."""
    times: list[float] = []
    failures: list[str] = []
    probe_results: dict = {}

    def run_probes():
        time.sleep(min(5.0, seconds / 4))
        for key, module, call in probes:
            probe_results[key] = probe(module, call)

    prober = threading.Thread(target=run_probes, daemon=True)
    prober.start()
    stop_at = time.monotonic() + seconds
    while time.monotonic() < stop_at:
        started = time.monotonic()
        took, ok, why = open_form(user)
        times.append(took)
        if not ok:
            failures.append(why)
        time.sleep(max(0.0, every - (time.monotonic() - started)))
    prober.join(timeout=120)
    return {
        "pages": len(times),
        "failures": len(failures),
        "failure_kinds": sorted(set(failures)),
        "page_median_ms": round(statistics.median(times) * 1000, 1),
        "page_p99_ms": round(steady_state.percentile(times, 99) * 1000, 1),
        "page_max_ms": round(max(times) * 1000, 1),
        "probes": probe_results,
    }


def start_flood(loops: int) -> list[subprocess.Popen]:
    nodes = [*COMPUTE_NODES, CONTROLLER]
    procs = []
    for i in range(loops):
        node = nodes[i % len(nodes)]
        procs.append(
            subprocess.Popen(
                [
                    "docker",
                    "exec",
                    container(node),
                    "bash",
                    "-c",
                    f"exec timeout 600 bash -c {shlex.quote(FLOOD_LOOP)}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    return procs


def stop_flood(procs: list[subprocess.Popen]) -> None:
    for node in {*COMPUTE_NODES, CONTROLLER}:
        node_exec(node, "pkill -f 'while :; do squeue' || true", check=False)
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=30)


def slurmctld(signal: str) -> None:
    node_exec(CONTROLLER, f"pkill -{signal} -x slurmctld")


def _cell(result: dict | None) -> str:
    if not result:
        return "—"
    if result["ok"]:
        return f"{result['seconds']:.2f} s"
    return f"{result['seconds']:.1f} s, then an error" if result["seconds"] else "error"


def table(report: dict) -> str:
    lines = [
        "| slurmctld | form page, median / p99 / max (hpchub now) | failed pages | "
        "before: a page on a cache miss | now: a hub's first page after its start |",
        "|---|---|---|---|---|",
    ]
    for name, result in report["phases"].items():
        probes = result["probes"]
        lines.append(
            f"| {name} | {result['page_median_ms']:.0f} / {result['page_p99_ms']:.0f} / "
            f"{result['page_max_ms']:.0f} ms ({result['pages']} pages) | "
            f"{result['failures']} {', '.join(result['failure_kinds'])} | "
            f"{_cell(probes.get('before'))} | {_cell(probes.get('after_cold'))} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=40, help="length of each phase")
    parser.add_argument("--every", type=float, default=0.5, help="seconds between page loads")
    parser.add_argument("--flood", type=int, default=12, help="query loops in the flooded phase")
    parser.add_argument("--phases", nargs="+", default=["idle", "flooded", "stalled"])
    parser.add_argument("--record", action="store_true", help="append the table to performance.md")
    args = parser.parse_args()

    access = load_access()
    first = access["users"][0]
    user = HubUser(access, first["name"], first["password"])
    user.login()
    have_before = install_probes()
    probes = [("after_cold", "cluster_after", "snapshot()")]
    if have_before:
        probes.insert(0, ("before", "cluster_before", "partitions()"))
    open_form(user)  # the hub's cache is warm from here on

    report: dict = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "before_commit": BEFORE_COMMIT,
        "seconds_per_phase": args.seconds,
        "flood_loops": args.flood,
        "phases": {},
    }
    for name in args.phases:
        print(
            f"==> phase {name}: the form every {args.every} s for {args.seconds:.0f} s", flush=True
        )
        if name == "idle":
            report["phases"][name] = phase(user, args.seconds, args.every, probes)
        elif name == "flooded":
            procs = start_flood(args.flood)
            try:
                time.sleep(3)
                report["phases"][name] = phase(user, args.seconds, args.every, probes)
            finally:
                stop_flood(procs)
        elif name == "stalled":
            slurmctld("STOP")
            try:
                report["phases"][name] = phase(user, args.seconds, args.every, probes)
            finally:
                slurmctld("CONT")
        else:
            parser.error(f"unknown phase {name!r} (idle, flooded, stalled)")
        print(json.dumps(report["phases"][name]), flush=True)

    text = table(report)
    print(text)
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    stamp = report["date"].replace(":", "")
    (results / f"form-open-{stamp}.json").write_text(json.dumps(report, indent=2) + "\n")
    if args.record:
        doc = HERE.parent / "docs" / "performance.md"
        with doc.open("a") as f:
            f.write(
                f"\n### Opening the spawn form, {report['date']} (`make bench-form`)\n\n"
                f"{args.seconds:.0f} s per phase, a page every {args.every} s, "
                f"{args.flood} flood loops.\n\n{text}\n"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
