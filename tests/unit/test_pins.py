"""Pins move only when the repository (a new hpchub release) or the inventory says so.

Every Python package the roles install by name is pinned to one version in one requirements file,
every package of each venv (dependencies too) in its lock (tools/lock_requirements.py), and no
task can move a version by itself: no `state: latest`, no apt upgrade, no `pip --upgrade`. So a
converge installs what is missing and never upgrades what is there (the upgrade scenario's second
converge, `make test-upgrade`, proves changed=0 on a live testbed). Debian packages are pinned by
the distribution release (bookworm): `state: present` installs once and leaves them alone; the
site's own `apt upgrade` policy moves them (docs/operations.md).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
REQUIREMENTS = sorted(REPO.glob("roles/*/files/requirements.txt"))
sys.path.insert(0, str(REPO / "tools"))
import lock_requirements  # noqa: E402

LOCKS = lock_requirements.LOCKS
TASK_FILES = sorted(REPO.glob("roles/*/tasks/*.yml")) + sorted(REPO.glob("roles/*/handlers/*.yml"))
PACKAGE_MODULES = {"ansible.builtin.apt", "ansible.builtin.pip", "ansible.builtin.package"}
EXACT_PIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*==[0-9][A-Za-z0-9.+!-]*$")


def requirement_lines(path: Path) -> list[str]:
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def tasks_in(node):
    """Every task of a task file, blocks included."""
    for task in node or []:
        for key in ("block", "rescue", "always"):
            yield from tasks_in(task.get(key))
        yield task


def package_tasks():
    for path in TASK_FILES:
        for task in tasks_in(yaml.safe_load(path.read_text())):
            for module in PACKAGE_MODULES & set(task):
                yield path.relative_to(REPO), task.get("name"), module, task[module]


def test_the_roles_have_requirements_files():
    assert {p.parent.parent.name for p in REQUIREMENTS} >= {
        "jupyterhub",
        "jupyter_env",
        "jupyterhub_announcement",
    }


@pytest.mark.parametrize("path", REQUIREMENTS, ids=lambda p: p.parent.parent.name)
def test_every_requirement_is_pinned_to_one_version(path):
    loose = [line for line in requirement_lines(path) if not EXACT_PIN.match(line)]
    assert not loose, f"{path.relative_to(REPO)}: not pinned with ==: {loose}"


def test_the_hub_and_the_notebooks_run_the_same_jupyterhub():
    versions = {
        p.parent.parent.name: line
        for p in REQUIREMENTS
        for line in requirement_lines(p)
        if line.startswith("jupyterhub==")
    }
    assert versions["jupyterhub"] == versions["jupyter_env"], versions


def test_no_task_upgrades_a_package_by_itself():
    found = list(package_tasks())
    assert len(found) >= 5, "the package tasks were not found"
    moving = []
    for path, name, module, args in found:
        args = args if isinstance(args, dict) else {}
        if args.get("state") == "latest":
            moving.append((str(path), name, "state: latest"))
        if module == "ansible.builtin.apt" and args.get("upgrade") not in (None, False, "no"):
            moving.append((str(path), name, "apt upgrade"))
        extra = str(args.get("extra_args", ""))
        if re.search(r"(^|\s)(-U|--upgrade)(\s|$)", extra):
            moving.append((str(path), name, f"pip {extra}"))
    assert not moving, f"tasks that would move a version: {moving}"


def test_pip_tasks_install_the_pinned_lists_or_the_sites_own_packages():
    for path, name, module, args in package_tasks():
        if module != "ansible.builtin.pip":
            continue
        names = str(args.get("name", ""))
        assert re.search(r"__\w+_pinned_packages|\w+_pip_extra_packages", names), (
            f"{path}: task {name!r} installs {names}, not a pinned list"
        )


def pins(path: Path) -> dict[str, str]:
    return {
        re.sub(r"[-_.]+", "-", name).lower(): version
        for name, version in (line.split("==", 1) for line in requirement_lines(path))
    }


@pytest.mark.parametrize("venv", sorted(LOCKS))
def test_each_lock_pins_every_package_and_agrees_with_the_requirements(venv):
    lock, requirements = LOCKS[venv]
    lock_path = REPO / lock
    loose = [line for line in requirement_lines(lock_path) if not EXACT_PIN.match(line)]
    assert not loose, f"{lock}: not pinned with ==: {loose}"
    locked = pins(lock_path)
    for requirement in requirements:
        stale = {
            name: (version, locked.get(name))
            for name, version in pins(REPO / requirement).items()
            if locked.get(name) != version
        }
        assert not stale, (
            f"{lock} disagrees with {requirement} (wanted, locked): {stale}; "
            "run tools/lock_requirements.py"
        )


def test_every_pip_task_installs_under_the_lock():
    pip_tasks = [t for t in package_tasks() if t[2] == "ansible.builtin.pip"]
    assert len(pip_tasks) >= 4
    unlocked = [
        (str(path), name)
        for path, name, _, args in pip_tasks
        if "--constraint" not in str(args.get("extra_args", ""))
    ]
    assert not unlocked, f"pip tasks without the lock (--constraint): {unlocked}"
