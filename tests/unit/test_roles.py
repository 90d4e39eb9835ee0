"""Every role follows the house layout, and the example inventory is one preflight accepts.

The layout checks read roles/*/ as files (prometheus-community style): a README, defaults and
argument specs that declare the same variables, role-prefixed names, FQCN modules. The inventory
checks run ansible-playbook on inventories/example, whose hosts do not resolve: preflight must
pass (or fail, for a misspelled variable) without contacting any of them. No testbed needed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ansible.playbook.block import Block
from ansible.playbook.handler import Handler
from hpchub_config.settings import settings_from_dict
from test_inventory_validation import assert_preflight_failed, write_vars

REPO = Path(__file__).resolve().parents[2]
ROLES_DIR = REPO / "roles"
ROLES = sorted(p.name for p in ROLES_DIR.iterdir() if (p / "tasks" / "main.yml").is_file())
EXAMPLE_INVENTORY = REPO / "inventories" / "example"
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"

# The preflight role declares the project-wide hpchub_* variables (roles/preflight/README.md).
PUBLIC_PREFIX = {role: f"{role}_" for role in ROLES} | {"preflight": "hpchub_"}
FQCN_PREFIXES = ("ansible.builtin.", "ansible.posix.", "community.")
# Everything a task, handler or block may hold besides its module, as Ansible itself defines it.
TASK_KEYWORDS = set(Handler.fattributes) | set(Block.fattributes) | {"local_action"}


def load_yaml(path: Path):
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def defaults_of(role: str) -> dict:
    return load_yaml(ROLES_DIR / role / "defaults" / "main.yml") or {}


def options_of(role: str) -> dict:
    specs = load_yaml(ROLES_DIR / role / "meta" / "argument_specs.yml") or {}
    return ((specs.get("argument_specs") or {}).get("main") or {}).get("options") or {}


# --- role layout -------------------------------------------------------------------------------


def test_every_role_is_checked():
    assert {"jupyterhub", "jupyter_env", "jupyterhub_announcement", "slurm", "preflight"} <= set(
        ROLES
    )


@pytest.mark.parametrize("role", ROLES)
def test_role_has_readme_defaults_and_argument_specs(role):
    missing = [
        relative
        for relative in ("README.md", "defaults/main.yml", "meta/argument_specs.yml")
        if not (ROLES_DIR / role / relative).is_file()
    ]
    assert not missing, f"roles/{role} lacks {', '.join(missing)}"


@pytest.mark.parametrize("role", ROLES)
def test_defaults_and_argument_specs_declare_the_same_variables(role):
    defaults, options = set(defaults_of(role)), set(options_of(role))
    assert defaults, f"roles/{role}/defaults/main.yml declares no variable"
    assert not defaults - options, (
        f"roles/{role}: in defaults/main.yml but not in meta/argument_specs.yml: "
        f"{sorted(defaults - options)}"
    )
    assert not options - defaults, (
        f"roles/{role}: in meta/argument_specs.yml but not in defaults/main.yml: "
        f"{sorted(options - defaults)}"
    )


@pytest.mark.parametrize("role", ROLES)
def test_public_variables_carry_the_role_prefix(role):
    prefix = PUBLIC_PREFIX[role]
    names = set(defaults_of(role)) | set(options_of(role))
    wrong = sorted(name for name in names if not name.startswith(prefix))
    assert not wrong, f"roles/{role}: variables without the prefix {prefix!r}: {wrong}"


@pytest.mark.parametrize("role", ROLES)
def test_internal_variables_carry_the_double_underscore_role_prefix(role):
    internal = load_yaml(ROLES_DIR / role / "vars" / "main.yml") or {}
    wrong = sorted(name for name in internal if not name.startswith(f"__{role}_"))
    assert not wrong, f"roles/{role}/vars/main.yml: names without the prefix '__{role}_': {wrong}"


def test_no_variable_is_declared_by_two_roles():
    owners: dict[str, list[str]] = {}
    for role in ROLES:
        for name in options_of(role):
            owners.setdefault(name, []).append(role)
    shared = {name: roles for name, roles in owners.items() if len(roles) > 1}
    assert not shared, f"declared by more than one role: {shared}"


def module_names(tasks) -> list[str]:
    """The module of every task in a task list, blocks included."""
    names = []
    for task in tasks or []:
        for section in ("block", "rescue", "always"):
            if section in task:
                names += module_names(task[section])
        if any(section in task for section in ("block", "rescue", "always")):
            continue
        for key, value in task.items():
            if key in ("action", "local_action"):
                names.append(value["module"] if isinstance(value, dict) else value.split()[0])
            elif key not in TASK_KEYWORDS and not key.startswith("with_"):
                names.append(key)
    return names


def task_files(role: str) -> list[Path]:
    return sorted((ROLES_DIR / role / "tasks").glob("*.yml")) + sorted(
        (ROLES_DIR / role / "handlers").glob("*.yml")
    )


def own_module(role: str, name: str) -> bool:
    """A module the role ships in its library/ folder (roles/census): ansible-lint wants its
    plain name (fqcn[canonical])."""
    return "." not in name and (ROLES_DIR / role / "library" / f"{name}.py").is_file()


@pytest.mark.parametrize("role", ROLES)
def test_tasks_and_handlers_use_fully_qualified_module_names(role):
    short = [
        f"{path.relative_to(REPO)}: {name}"
        for path in task_files(role)
        for name in module_names(load_yaml(path))
        if not name.startswith(FQCN_PREFIXES) and not own_module(role, name)
    ]
    assert not short, "modules without a fully qualified collection name:\n" + "\n".join(short)


def test_module_walk_finds_modules_in_blocks_and_actions():
    tasks = [
        {"name": "a", "ansible.builtin.copy": {}, "notify": "x", "with_items": []},
        {"block": [{"name": "b", "shell": "true"}], "rescue": [{"action": "debug msg=hi"}]},
    ]
    assert module_names(tasks) == ["ansible.builtin.copy", "shell", "debug"]


# --- the example inventory ---------------------------------------------------------------------


def ansible_playbook(inventory: Path, playbook: Path, *args: str, **env: str):
    return subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "-i", str(inventory / "hosts.yml"), str(playbook), *args],
        cwd=REPO,
        env={
            **os.environ,
            "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture
def example_inventory(tmp_path: Path) -> Path:
    copy = tmp_path / "example"
    shutil.copytree(EXAMPLE_INVENTORY, copy, ignore=shutil.ignore_patterns("credentials"))
    return copy


def test_example_inventory_is_for_an_existing_cluster():
    hosts = load_yaml(EXAMPLE_INVENTORY / "hosts.yml")["all"]["children"]
    hub_vars = load_yaml(EXAMPLE_INVENTORY / "group_vars" / "all" / "hub.yml")
    assert hub_vars["hpchub_bootstrap_cluster"] is False
    assert hosts["login"]["hosts"] and hosts["compute"]["hosts"]
    assert not (hosts.get("slurm_controller") or {}).get("hosts")


def test_example_inventory_passes_preflight_without_contacting_any_host():
    result = ansible_playbook(EXAMPLE_INVENTORY, REPO / "playbooks" / "preflight.yml")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "UNREACHABLE" not in output
    for host in ("login1.example.org", "sw1.example.org"):
        assert host in result.stdout
    assert "unreachable=0" in result.stdout
    assert "failed=0" in result.stdout
    assert "changed=0" in result.stdout and "changed=1" not in result.stdout


def test_example_inventory_with_a_misspelled_hub_variable_fails_naming_it(example_inventory):
    write_vars(example_inventory, "group_vars/all/zz-typo.yml", {"jupyterhub_profles": []})
    result = ansible_playbook(example_inventory, REPO / "playbooks" / "hub.yml")
    assert_preflight_failed(
        result,
        "jupyterhub_profles is not a known variable (host login1.example.org). "
        "Did you mean jupyterhub_profiles?",
    )


# Renders the settings files the roles would write on the login node from the example inventory
# (the generated templates, with the roles' own defaults and vars; their tasks are skipped), and
# prints them for the test to read.
RENDER_SETTINGS = """
- name: Render the hub's settings from the inventory (no host is contacted)
  hosts: login
  gather_facts: false
  tasks:
    - name: Load the jupyterhub role's defaults and vars
      ansible.builtin.import_role:
        name: jupyterhub
      when: false
    - name: Load the jupyterhub_announcement role's defaults and vars
      ansible.builtin.import_role:
        name: jupyterhub_announcement
      when: false
    - name: Show the settings
      ansible.builtin.debug:
        msg: >-
          {{ lookup('ansible.builtin.template', '@ROLES@/jupyterhub/templates/hpchub.yaml.j2')
             | from_yaml
             | combine(lookup('ansible.builtin.template',
                              '@ROLES@/jupyterhub_announcement/templates/announcement.yaml.j2')
                       | from_yaml) }}
"""


def rendered_for_login1(tmp_path, render_playbook: str):
    """Run a render playbook against the example inventory; its last task's message on login1."""
    playbook = tmp_path / "render.yml"
    playbook.write_text(render_playbook.replace("@ROLES@", str(ROLES_DIR)))
    result = ansible_playbook(
        EXAMPLE_INVENTORY, playbook, ANSIBLE_STDOUT_CALLBACK="ansible.posix.json"
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return json.loads(result.stdout)["plays"][0]["tasks"][-1]["hosts"]["login1.example.org"]["msg"]


def test_example_inventory_renders_settings_that_hub_config_accepts(tmp_path):
    data = rendered_for_login1(tmp_path, RENDER_SETTINGS)

    settings = settings_from_dict(data, "inventories/example")  # raises, naming the key

    assert settings.hub.connect_url == "https://login1.example.org:881"
    assert settings.hub.public_url == "https://jupyter.example.org/"
    assert settings.spawner.notebook_env == "/sw/jupyter/hpchub"
    assert [p.key for p in settings.spawner.profiles] == ["interactive", "interactive-large", "gpu"]
    assert settings.spawner.profile("gpu").gpus == 1
    assert settings.announcement.enabled and len(settings.announcement.seed) == 1


# The login node's PostgreSQL (jupyterhub_database: postgresql): pg_hba.conf as the role renders it.
RENDER_PG_HBA = """
- name: Render pg_hba.conf (no host is contacted)
  hosts: login
  gather_facts: false
  tasks:
    - name: Load the jupyterhub role's defaults and vars
      ansible.builtin.import_role:
        name: jupyterhub
      when: false
    - name: Show pg_hba.conf
      ansible.builtin.debug:
        msg: >-
          {{ lookup('ansible.builtin.template', '@ROLES@/jupyterhub/templates/pg_hba.conf.j2') }}
      vars:
        jupyterhub_database: postgresql
"""


def test_pg_hba_lets_only_the_hub_account_into_its_own_database_over_the_socket(tmp_path):
    text = rendered_for_login1(tmp_path, RENDER_PG_HBA)
    rules = [line.split() for line in text.splitlines() if line and not line.startswith("#")]
    # First match wins: postgres administers, the hub account reaches its database by peer
    # authentication, everyone and everything else (any TCP connection too) is rejected.
    assert rules == [
        ["local", "all", "postgres", "peer"],
        ["local", "jupyterhub", "jupyterhub", "peer"],
        ["local", "all", "all", "reject"],
        ["host", "all", "all", "0.0.0.0/0", "reject"],
        ["host", "all", "all", "::/0", "reject"],
    ]
