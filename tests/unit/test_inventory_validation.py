"""Preflight (roles/preflight) rejects broken inventories before any host is touched.

Each test copies inventories/testbed, breaks it in one way, runs playbooks/site.yml with the repo's
ansible.cfg and checks that the run fails with a message naming the key and the host. Every copy
points ansible_host at containers that do not exist, so a run that got past preflight would fail
differently (unreachable) and could not pass these tests by accident. No testbed needed.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
TESTBED_INVENTORY = REPO / "inventories" / "testbed"
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    """A copy of the testbed inventory whose hosts point at containers that do not exist."""
    copy = tmp_path / "testbed"
    shutil.copytree(TESTBED_INVENTORY, copy, ignore=shutil.ignore_patterns("credentials"))
    hosts_file = copy / "hosts.yml"
    hosts = yaml.safe_load(hosts_file.read_text())
    for group in hosts["all"]["children"].values():
        for name in group["hosts"]:
            host_vars = group["hosts"][name] = group["hosts"][name] or {}
            host_vars["ansible_host"] = f"hpchub-preflight-test-nonexistent-{name}"
    hosts_file.write_text(yaml.safe_dump(hosts, sort_keys=False))
    return copy


def edit_hosts(inventory: Path, change) -> None:
    hosts_file = inventory / "hosts.yml"
    hosts = yaml.safe_load(hosts_file.read_text())
    change(hosts["all"]["children"])
    hosts_file.write_text(yaml.safe_dump(hosts, sort_keys=False))


def write_vars(inventory: Path, relative: str, values: dict) -> None:
    path = inventory / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("---\n" + yaml.safe_dump(values, sort_keys=False))


def run_playbook(inventory: Path, playbook: str, *args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
    }
    return subprocess.run(
        [
            str(ANSIBLE_PLAYBOOK),
            "-i",
            str(inventory / "hosts.yml"),
            str(REPO / "playbooks" / playbook),
            *args,
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def assert_preflight_failed(result: subprocess.CompletedProcess, *expected: str) -> str:
    output = " ".join((result.stdout + result.stderr).split())  # undo the YAML callback's wrapping
    assert result.returncode != 0, output[-3000:]
    assert "UNREACHABLE" not in output, "preflight let the run reach a host:\n" + output[-3000:]
    for text in expected:
        assert text in output, f"{text!r} not in the output:\n{output[-3000:]}"
    return output


# --- the unbroken inventory ----------------------------------------------------------------------


def test_testbed_inventory_passes_preflight_without_contacting_any_host(inventory):
    result = run_playbook(inventory, "preflight.yml")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "unreachable=0" in result.stdout
    assert "changed=0" in result.stdout
    assert "changed=1" not in result.stdout


# site.yml imports preflight.yml, cluster.yml and hub.yml, and each of them starts with the
# preflight play. The hosts do not exist, so the run fails at the first play that contacts them:
# the one after cluster.yml's preflight play, or, without the bootstrap (whose plays are then
# skipped), the one after hub.yml's.
@pytest.mark.parametrize(
    ("bootstrap", "preflight_plays", "first_contact"),
    [
        ("true", 2, "PLAY [Trust the site's CA and package mirrors]"),
        ("false", 3, "PLAY [Notebook environment for the compute nodes]"),
    ],
)
def test_preflight_checks_run_once_in_a_site_yml_run(
    inventory, bootstrap, preflight_plays, first_contact
):
    result = run_playbook(inventory, "site.yml", "-e", f"hpchub_bootstrap_cluster={bootstrap}")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    sections = output.split("PLAY [")[1:]
    plays = ["PLAY [" + section.split("\n", 1)[0].rstrip(" *") for section in sections]
    preflight = [i for i, title in enumerate(plays) if title.startswith("PLAY [Preflight checks")]
    assert len(preflight) == preflight_plays, plays
    assert plays[preflight[-1] + 1 :] == [first_contact], plays
    tasks = [re.findall(r"^TASK \[(.+?)\] \*", sections[i], re.M) for i in preflight]
    # The first preflight play runs every check, the slurm role's group checks with the bootstrap.
    assert "preflight : Every role variable in the inventory is known" in tasks[0]
    slurm_checks = "slurm : The controller group has exactly one host" in tasks[0]
    assert slurm_checks == (bootstrap == "true")
    # Later ones run only Ansible's own check of the preflight role's arguments, then end the role.
    for later in tasks[1:]:
        assert [t for t in later if not t.startswith("preflight : Validating arguments")] == []


# --- broken inventories --------------------------------------------------------------------------


def test_missing_controller_group_fails_naming_the_group(inventory):
    edit_hosts(inventory, lambda groups: groups.pop("slurm_controller"))
    assert_preflight_failed(
        run_playbook(inventory, "site.yml"), "'slurm_controller'", "has 0 hosts"
    )


def test_two_controllers_fail(inventory):
    edit_hosts(inventory, lambda groups: groups["slurm_controller"]["hosts"].update(login1=None))
    assert_preflight_failed(
        run_playbook(inventory, "site.yml"), "'slurm_controller'", "has 2 hosts"
    )


def test_host_in_both_controller_and_compute_groups_fails_naming_it(inventory):
    def node1_is_the_controller(groups):
        groups["slurm_controller"]["hosts"] = {"node1": None}

    edit_hosts(inventory, node1_is_the_controller)
    assert_preflight_failed(
        run_playbook(inventory, "site.yml"), "node1 is in both 'slurm_controller' and 'compute'"
    )


def test_empty_compute_group_fails(inventory):
    def no_compute_nodes(groups):
        groups["compute"]["hosts"] = {}

    edit_hosts(inventory, no_compute_nodes)
    assert_preflight_failed(run_playbook(inventory, "site.yml"), "'compute'", "has no hosts")


def test_non_numeric_cpu_count_fails_naming_key_and_host(inventory):
    write_vars(inventory, "host_vars/node1.yml", {"slurm_node_cpus": "four"})
    output = assert_preflight_failed(
        run_playbook(inventory, "site.yml"), "slurm_node_cpus is 'four' for host node1"
    )
    assert "for host node2" not in output


def test_misspelled_role_variable_fails_with_a_suggestion(inventory):
    write_vars(inventory, "group_vars/compute.yml", {"slurm_partitons": []})
    assert_preflight_failed(
        run_playbook(inventory, "site.yml"),
        "slurm_partitons is not a known variable (host node1). Did you mean slurm_partitions?",
    )


def test_value_of_the_wrong_type_fails_before_any_role_runs(inventory):
    write_vars(inventory, "host_vars/login1.yml", {"lmod_sample_modules": "perhaps"})
    assert_preflight_failed(
        run_playbook(inventory, "site.yml"), "Host login1: role lmod:", "'lmod_sample_modules'"
    )


def test_malformed_prometheus_duration_fails_naming_key_and_host(inventory):
    write_vars(inventory, "host_vars/mgmt1.yml", {"prometheus_scrape_interval": "5 seconds"})
    assert_preflight_failed(
        run_playbook(inventory, "site.yml"),
        "prometheus_scrape_interval is '5 seconds' for host mgmt1",
        "a Prometheus duration such as 15s",
    )


def test_unknown_partition_key_fails_naming_it(inventory):
    partitions = [{"name": "batch", "default": True, "maxtime": "1:00:00"}]
    write_vars(inventory, "group_vars/all/zz-typo.yml", {"slurm_partitions": partitions})
    assert_preflight_failed(run_playbook(inventory, "site.yml"), "slurm_partitions.maxtime")


def test_hub_setting_out_of_the_schemas_limits_fails_naming_variable_and_host(inventory):
    write_vars(
        inventory,
        "group_vars/all/zz-hub.yml",
        {
            "jupyterhub_poll_interval": 0,
            "jupyterhub_idle_culler_timeout": 30,
            "jupyterhub_profiles": [
                {"key": "small", "display_name": "A"},
                {"key": "small", "display_name": "B"},
            ],
        },
    )
    assert_preflight_failed(
        run_playbook(inventory, "hub.yml"),
        "jupyterhub_poll_interval: must be at least 1, got 0 (host login1).",
        "jupyterhub_idle_culler_timeout: must be at least 60, got 30 (host login1).",
        "jupyterhub_profiles[1].key: duplicate 'small' (host login1).",
    )


def test_hub_path_with_shell_characters_fails_in_preflight(inventory):
    write_vars(inventory, "host_vars/login1.yml", {"jupyterhub_slurm_bin_dir": "/usr/bin;id"})
    assert_preflight_failed(
        run_playbook(inventory, "site.yml"),
        "jupyterhub_slurm_bin_dir: must be an absolute path of letters, digits",
        "(host login1).",
    )


# --- the filter behind the name check (no ansible-playbook needed) --------------------------------


def _preflight_filters():
    path = REPO / "roles" / "preflight" / "filter_plugins" / "preflight.py"
    spec = importlib.util.spec_from_file_location("hpchub_preflight_filters", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_role_option_is_known_to_preflight():
    filters = _preflight_filters()
    options = filters.role_options(str(REPO / "roles"))
    assert {"slurm", "munge", "lmod", "accounts", "package_sources", "preflight"} <= set(options)
    assert "slurm_partitions" in options["slurm"]
    assert "hpchub_bootstrap_cluster" in options["preflight"]


def test_retired_variable_gets_its_own_message():
    filters = _preflight_filters()
    problems = filters.unknown_variables(
        ["slurm_old_name", "slurm_partitions", "ansible_host", "testbed_demo_users"],
        known=["slurm_partitions"],
        prefixes=["slurm_"],
        retired={"slurm_old_name": "renamed to slurm_partitions"},
        host="node1",
    )
    assert problems == [
        "slurm_old_name (host node1) is no longer supported: renamed to slurm_partitions."
    ]
