#!/usr/bin/env python3
"""Print one line per JUnit XML file and a closing total ("total: N passed, N failed").

`make test` runs pytest twice (unit tests, then the testbed tests inside Molecule's verify,
whose output is followed by Molecule's own). This puts the counts of both at the end.
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
        grand["passed"] += passed
        grand["failed"] += failed
        grand["skipped"] += c["skipped"]
    print(f"total: {grand['passed']} passed, {grand['failed']} failed, {grand['skipped']} skipped")
    return 0 if ok and grand["failed"] == 0 and grand["passed"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
