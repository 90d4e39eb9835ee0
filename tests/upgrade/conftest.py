"""The scenario runs only under `make test-upgrade`, which gives it a fresh testbed.

It deploys an earlier hpchub over the testbed and rebuilds the login node: run by accident
against a testbed someone is using (a bare `pytest`), it would wreck it. So it refuses to run
without HPCHUB_UPGRADE_SCENARIO=1 (set by the make target), and says so: it does not skip.
"""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _only_under_make_test_upgrade():
    if os.environ.get("HPCHUB_UPGRADE_SCENARIO") != "1":
        pytest.fail(
            "the upgrade/restore scenario redeploys and rebuilds the testbed: run it with "
            "`make test-upgrade` (it sets HPCHUB_UPGRADE_SCENARIO=1 and brings up a fresh testbed)"
        )
