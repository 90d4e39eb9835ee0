#!/usr/bin/env python3
"""Print one line per JUnit XML file, each failed test with the first lines of its message,
and a closing total ("total: N passed, N failed").

`make test` runs pytest twice (unit tests, then the testbed tests inside Molecule's verify,
whose output is followed by Molecule's teardown). This puts the counts of both, and the names
of the tests that failed, at the end of the output, where a CI log's tail shows them; it runs
whether or not an earlier step failed.
Exits non-zero when a file is missing, a test failed, or no test ran.
"""

import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def counts(path: Path) -> dict[str, int]:
    root = ET.parse(path).getroot()  # noqa: S314 - our own pytest output
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    total = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for suite in suites:
        for key in total:
            total[key] += int(suite.get(key, 0))
    return total


def failures(path: Path, lines: int = 3) -> list[str]:
    """`file::test: first lines of the message` for each failed or erroring test case."""
    out = []
    root = ET.parse(path).getroot()  # noqa: S314 - our own pytest output
    for case in root.iter("testcase"):
        for tag in ("failure", "error"):
            node = case.find(tag)
            if node is None:
                continue
            name = f"{case.get('classname', '')}::{case.get('name', '')}"
            text = (node.get("message") or node.text or "").strip().splitlines()[:lines]
            out.append(f"  FAILED {name}" + "".join(f"\n      {line[:200]}" for line in text))
    return out


def main(paths: list[str]) -> int:
    grand = {"passed": 0, "failed": 0, "skipped": 0}
    ok = True
    for name in paths:
        path = Path(name)
        if not path.exists():
            print(f"{path.stem}: no results ({path} missing)")
            ok = False
            continue
        c = counts(path)
        failed = c["failures"] + c["errors"]
        passed = c["tests"] - failed - c["skipped"]
        print(f"{path.stem}: {passed} passed, {failed} failed, {c['skipped']} skipped")
        for line in failures(path):
            print(line)
        grand["passed"] += passed
        grand["failed"] += failed
        grand["skipped"] += c["skipped"]
    print(f"total: {grand['passed']} passed, {grand['failed']} failed, {grand['skipped']} skipped")
    return 0 if ok and grand["failed"] == 0 and grand["passed"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
