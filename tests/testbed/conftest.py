"""Shared fixtures for the tests that run against the testbed (`make testbed`, Molecule).

Hosts are reached with testinfra's docker backend (`docker exec <container>`), so the same tests
work under Molecule's verifier and under plain `pytest tests/testbed` after `make testbed`.
Without running containers every test here fails with a message saying how to bring the
testbed up: a skipped end-to-end test proves nothing.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
import testinfra

from .topology import ALL_NODES, COMPUTE_NODES, CONTROLLER, LOGIN, REPO, container

CREDENTIALS_DIR = REPO / ".testbed" / "credentials"  # testbed_credentials_dir


def _running_containers() -> set[str]:
    if shutil.which("docker") is None:
        return set()
    result = subprocess.run(
        ["docker", "ps", "--format", "{{.Names}}"], capture_output=True, text=True, check=False
    )
    return set(result.stdout.split()) if result.returncode == 0 else set()


@pytest.fixture(scope="session")
def testbed_nodes() -> dict[str, testinfra.host.Host]:
    """testinfra hosts of all the nodes, by inventory name."""
    missing = [container(n) for n in ALL_NODES if container(n) not in _running_containers()]
    if missing:
        pytest.fail(f"testbed containers not running: {', '.join(missing)} (run `make testbed`)")
    return {node: testinfra.get_host(f"docker://{container(node)}") for node in ALL_NODES}


@pytest.fixture(scope="session")
def controller(testbed_nodes):
    return testbed_nodes[CONTROLLER]


@pytest.fixture(scope="session")
def login(testbed_nodes):
    return testbed_nodes[LOGIN]


@pytest.fixture(scope="session")
def compute(testbed_nodes):
    return [testbed_nodes[n] for n in COMPUTE_NODES]


@pytest.fixture(scope="session")
def as_user(login) -> Callable[..., testinfra.backend.base.CommandResult]:
    """Run a shell command on the login node as a user, in a login shell (like an ssh session)."""

    def run(user: str, command: str, host=None):
        return (host or login).run("runuser -l %s -c %s", user, command)

    return run


@pytest.fixture(scope="session")
def wait_for_idle_nodes(login) -> Callable[[float], dict[str, str]]:
    """Wait until sinfo on the login node shows every compute node idle; return the node states."""

    def wait(timeout: float = 60.0) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        states: dict[str, str] = {}
        while True:
            result = login.run("sinfo --noheader --Node --format='%N %t'")
            states = dict(line.split() for line in result.stdout.splitlines() if line.strip())
            if all(states.get(n) == "idle" for n in COMPUTE_NODES) or time.monotonic() > deadline:
                return states
            time.sleep(1)

    return wait


@pytest.fixture
def job_dir(as_user) -> Iterator[str]:
    """A fresh directory in alice's home for one test's jobs and their output; removed after."""
    path = f"/home/alice/hpchub-tests/{uuid.uuid4().hex[:12]}"
    created = as_user("alice", f"mkdir -p {path}")
    assert created.rc == 0, created.stderr
    yield path
    as_user("alice", f"rm -rf {path}")


# The end-to-end hub fixtures (logged-in demo users, a running server).
# A real browser (Chromium through Playwright) for the UI tests.
from .browser_fixtures import browser, page  # noqa: E402, F401
from .hub_fixtures import access, admin, alice, alice_server, bob, no_server  # noqa: E402, F401
