"""tools/test-summary.py: the counts and the failed tests' names that end `make test`'s output."""

import importlib.util
import subprocess
import sys
from pathlib import Path

TOOL = Path(__file__).resolve().parents[2] / "tools" / "test-summary.py"

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="1" failures="1" skipped="0" tests="4">
<testcase classname="tests.testbed.test_tls" name="test_ok"/>
<testcase classname="tests.testbed.test_tls" name="test_cert">
<failure message="AssertionError: the hub's expired&#10;assert 1 == 0&#10;third&#10;fourth"
>tb</failure></testcase>
<testcase classname="tests.testbed.test_form" name="test_gpu">
<error message="fixture 'hub' failed">tb</error></testcase>
<testcase classname="tests.testbed.test_form" name="test_fine"/>
</testsuite></testsuites>
"""


def load():
    spec = importlib.util.spec_from_file_location("test_summary_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_failures_name_each_failed_test_with_the_first_lines_of_its_message(tmp_path):
    path = tmp_path / "testbed.xml"
    path.write_text(JUNIT)
    lines = load().failures(path)
    assert len(lines) == 2
    assert lines[0].startswith("  FAILED tests.testbed.test_tls::test_cert")
    assert "AssertionError: the hub's expired" in lines[0]
    assert "assert 1 == 0" in lines[0] and "fourth" not in lines[0]
    assert lines[1].startswith("  FAILED tests.testbed.test_form::test_gpu")


def test_the_tool_exits_non_zero_and_prints_the_failures_and_a_missing_file(tmp_path):
    path = tmp_path / "testbed.xml"
    path.write_text(JUNIT)
    run = subprocess.run(
        [sys.executable, str(TOOL), str(path), str(tmp_path / "unit.xml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 1
    assert "testbed: 2 passed, 2 failed, 0 skipped" in run.stdout
    assert "FAILED tests.testbed.test_tls::test_cert" in run.stdout
    assert "unit: no results" in run.stdout


def test_all_passed_exits_zero(tmp_path):
    path = tmp_path / "unit.xml"
    path.write_text(
        '<testsuites><testsuite errors="0" failures="0" skipped="0" tests="1">'
        '<testcase classname="a" name="b"/></testsuite></testsuites>'
    )
    run = subprocess.run(
        [sys.executable, str(TOOL), str(path)], capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stdout
    assert "total: 1 passed, 0 failed, 0 skipped" in run.stdout
