"""`make bench`'s steady-state readings and its summary table (benchmarks/)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import spawn_latency  # noqa: E402
import steady_state  # noqa: E402

# Slurm 22.05's sdiag, abridged (as root on the testbed).
SDIAG = """\
*******************************************************
sdiag output at Sat Nov 28 10:40:01 2026 (1795862401)
Data since      Sat Nov 28 10:20:12 2026 (1795861212)
*******************************************************
Server thread count:  1
Jobs submitted: 12

Main schedule statistics (microseconds):
	Last cycle:   71
Remote Procedure Call statistics by message type
	REQUEST_JOB_INFO                        ( 2003) count:{job_info:<6} ave_time:331    total_time:3
	REQUEST_PARTITION_INFO                  ( 2009) count:40     ave_time:104    total_time:4160
	MESSAGE_NODE_REGISTRATION_STATUS        ( 1002) count:4      ave_time:233    total_time:932

Remote Procedure Call statistics by user
	root            (       0) count:{root:<6} ave_time:300    total_time:42000
	jupyterhub      (     999) count:40     ave_time:104    total_time:4160
	alice           (    2002) count:4      ave_time:233    total_time:932

Pending RPC statistics
	No pending RPCs
"""


def test_sdiag_counters_are_read_per_message_type_and_per_user():
    parsed = steady_state.parse_sdiag(SDIAG.format(job_info=120, root=124))
    assert parsed["types"] == {
        "REQUEST_JOB_INFO": 120,
        "REQUEST_PARTITION_INFO": 40,
        "MESSAGE_NODE_REGISTRATION_STATUS": 4,
    }
    assert parsed["users"] == {"root": 124, "jupyterhub": 40, "alice": 4}


def test_rpc_rates_are_differences_per_minute_of_what_grew():
    before = steady_state.parse_sdiag(SDIAG.format(job_info=120, root=124))
    after = steady_state.parse_sdiag(SDIAG.format(job_info=180, root=184))
    rates = steady_state.rpc_difference(before, after, minutes=2)
    assert rates == {
        "total": 30.0,
        "by_type": {"REQUEST_JOB_INFO": 30.0},
        "by_user": {"root": 30.0},
    }


@pytest.mark.parametrize(("q", "expected"), [(50, 50), (95, 95), (99, 99), (100, 100), (0, 1)])
def test_percentile_of_one_to_a_hundred(q, expected):
    assert steady_state.percentile(list(range(100, 0, -1)), q) == expected


def test_the_summary_table_has_a_row_per_run_with_the_steady_state_numbers():
    report = {
        "sequential_seconds": [2.0, 3.0, 2.5],
        "median_seconds": 2.5,
        "bursts": [
            {
                "users": 10,
                "median_seconds": 9.1,
                "p95_seconds": 12.0,
                "all_ready_seconds": 12.5,
                "failed": {},
                "steady": {
                    "slurmctld_rpcs_per_minute": {"total": 61.0},
                    "hub_cpu_seconds_per_minute": 1.4,
                    "hub_api": {"p50_ms": 20.0, "p99_ms": 80.5, "failures": 0},
                },
            },
            {
                "users": 50,
                "median_seconds": None,
                "all_ready_seconds": None,
                "failed": {"bench03": "failed: timeout"},
            },
        ],
    }
    lines = spawn_latency.summary_table(report).splitlines()
    assert lines[0].startswith("| run | spawn median / p95 | all ready | failed |")
    assert lines[2] == "| 3 sequential | 2.50 s / 3.00 s | - | 0 | - | - | - |"
    assert (
        lines[3] == "| 10 at once | 9.1 s / 12.0 s | 12.5 s | 0 | 61.0 | 1.4 | 20.0 ms / 80.5 ms |"
    )
    assert lines[4] == "| 50 at once | - / - | - | 1 | - | - | - / - |"


# --- benchmarks/form_open.py ---------------------------------------------------------------
import form_open  # noqa: E402


def test_form_probe_lines_are_parsed_into_seconds_and_errors():
    assert form_open.parse_probe("ok 0.123\n") == {"ok": True, "seconds": 0.123, "error": None}
    stalled = form_open.parse_probe("error 15.004 /usr/bin/sinfo -h did not answer within 15 s")
    assert stalled["ok"] is False and stalled["seconds"] == 15.004
    assert "did not answer" in stalled["error"]
    broken = form_open.parse_probe("Traceback (most recent call last):")
    assert broken["ok"] is False and broken["seconds"] is None


def test_form_table_has_a_row_per_phase_with_the_before_and_after_cells():
    phase = {
        "pages": 80,
        "failures": 0,
        "failure_kinds": [],
        "page_median_ms": 41.2,
        "page_p99_ms": 95.0,
        "page_max_ms": 120.3,
    }
    report = {
        "phases": {
            "idle": phase | {"probes": {"before": {"ok": True, "seconds": 0.05}}},
            "stalled": phase
            | {
                "failures": 2,
                "failure_kinds": ["HTTP 500"],
                "probes": {
                    "before": {"ok": False, "seconds": 15.0},
                    "after_cold": {"ok": False, "seconds": None},
                },
            },
        }
    }
    lines = form_open.table(report).splitlines()
    assert len(lines) == 4
    assert lines[2].startswith("| idle | 41 / 95 / 120 ms (80 pages) | 0  | 0.05 s | — |")
    assert "| stalled |" in lines[3] and "2 HTTP 500" in lines[3]
    assert "15.0 s, then an error" in lines[3] and lines[3].endswith("| error |")
