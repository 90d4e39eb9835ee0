"""Fixtures for the end-to-end hub tests: logged-in demo users and a running server.

Everything goes through the hub's public URL (.testbed/access.json, written by
`make testbed` and by Molecule's converge), as the users would.
"""

from __future__ import annotations

import pytest

from .hubclient import HubUser, load_access, slurm_jobs


@pytest.fixture(scope="session")
def access(testbed_nodes) -> dict:
    return load_access()


def _logged_in(access: dict, name: str, password: str) -> HubUser:
    user = HubUser(access, name, password)
    response = user.login()
    assert response.status_code == 200, f"login of {name} failed: {response.status_code}"
    assert "/hub/login" not in response.url, f"{name} is still on the login page"
    user.create_token()
    return user


def _stop_if_running(user: HubUser) -> None:
    if user.server_model() is not None:
        user.stop_server()


def _demo_user(access: dict, name: str):
    entry = next(u for u in access["users"] if u["name"] == name)
    user = _logged_in(access, name, entry["password"])
    yield user
    _stop_if_running(user)


@pytest.fixture(scope="session")
def alice(access) -> HubUser:
    yield from _demo_user(access, "alice")


@pytest.fixture(scope="session")
def bob(access) -> HubUser:
    yield from _demo_user(access, "bob")


@pytest.fixture(scope="session")
def admin(access) -> HubUser:
    return _logged_in(access, access["admin"]["name"], access["admin"]["password"])


@pytest.fixture
def alice_server(alice) -> dict:
    """alice's server, started through the REST API ('small' profile) unless it runs already.

    Tests share it (one spawn for many checks); a test that stops it just makes the next
    one start a new server.
    """
    model = alice.server_model()
    seconds = None
    if not (model and model.get("ready")):
        if model:
            alice.stop_server()
        seconds = alice.start_server({"profile": "small"})
        model = alice.server_model()
    alice.wait_reachable()
    (job,) = [j for j in slurm_jobs("alice") if j.state == "RUNNING"]
    return {"seconds": seconds, "job": job, "model": model}


@pytest.fixture
def no_server(alice, bob):
    """Tests that start their own servers begin and end with none running."""
    for user in (alice, bob):
        _stop_if_running(user)
    yield
    for user in (alice, bob):
        _stop_if_running(user)
