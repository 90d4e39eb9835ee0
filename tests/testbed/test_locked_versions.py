"""The venvs on the nodes hold exactly the locked versions: every package, dependencies included.

The roles install the requirements files under their locks (tools/lock_requirements.py), so a node
deployed today and one rebuilt next month run the same versions (docs/operations.md). A venv
upgraded from an earlier release may also hold packages nothing needs any more (pip never removes
them): those are not checked; on a fresh testbed (make test) there are none.
"""

from __future__ import annotations

import re

import pytest

from .topology import REPO

pytestmark = pytest.mark.testbed

# The venv's own tools and the hub's configuration package (installed from the checkout).
NOT_LOCKED = {"pip", "setuptools", "hpchub-config"}


def normalised(lines) -> dict[str, str]:
    pins = {}
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name = re.split(r"==| @ ", line, maxsplit=1)[0]
        pins[re.sub(r"[-_.]+", "-", name).lower()] = line.split("==", 1)[-1]
    return {name: version for name, version in pins.items() if name not in NOT_LOCKED}


def lock(relative: str) -> dict[str, str]:
    return normalised((REPO / relative).read_text().splitlines())


def assert_holds(frozen: str, relative: str) -> None:
    installed, locked = normalised(frozen.splitlines()), lock(relative)
    wrong = {
        name: (version, installed.get(name))
        for name, version in locked.items()
        if installed.get(name) != version
    }
    assert not wrong, f"not as locked in {relative} (locked, installed): {wrong}"


def test_the_hubs_venv_holds_its_lock(login):
    frozen = login.check_output("/opt/jupyterhub/venv/bin/python -m pip freeze --all")
    assert_holds(frozen, "roles/jupyterhub/files/constraints.txt")


def test_the_notebook_environment_holds_its_lock(compute):
    frozen = compute[0].check_output("/opt/software/hpchub/jupyter/bin/python -m pip freeze --all")
    assert_holds(frozen, "roles/jupyter_env/files/constraints.txt")
