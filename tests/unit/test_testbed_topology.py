"""The testbed is described once, in its Ansible inventory: compose, Molecule and tests follow it.

tools/testbed_topology.py reads inventories/testbed and writes the compose file; these tests hold it
to what Ansible itself makes of the same inventory (ansible-inventory, and the account variables
templated by ansible-playbook). No testbed and no docker needed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
INVENTORY = REPO / "inventories" / "testbed"
ANSIBLE_BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO / "tools"))
import testbed_topology  # noqa: E402

TOPOLOGY = testbed_topology.load()
NODE_SETTINGS = yaml.safe_load(testbed_topology.COMPOSE_BASE.read_text())


def ansible_env(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        **extra,
    }


@pytest.fixture(scope="module")
def ansible_inventory() -> dict:
    """ansible-inventory --list of the testbed inventory: Ansible's view of hosts and groups."""
    result = subprocess.run(
        [str(ANSIBLE_BIN / "ansible-inventory"), "-i", str(INVENTORY / "hosts.yml"), "--list"],
        cwd=REPO,
        env=ansible_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def compose(tmp_path_factory) -> dict:
    path = tmp_path_factory.mktemp("testbed") / "compose.yml"
    testbed_topology.write_compose(path, TOPOLOGY)
    return yaml.safe_load(path.read_text())


# --- the compose file ------------------------------------------------------------------------


def test_one_service_per_inventory_host(compose, ansible_inventory):
    hosts = set(ansible_inventory["_meta"]["hostvars"])
    assert len(hosts) == 4
    assert set(compose["services"]) == hosts
    assert tuple(compose["services"]) == TOPOLOGY.nodes


def test_container_names_are_the_inventorys_ansible_host(compose, ansible_inventory):
    for name, host_vars in ansible_inventory["_meta"]["hostvars"].items():
        service = compose["services"][name]
        assert service["container_name"] == host_vars["ansible_host"] == TOPOLOGY.container(name)
        assert service["hostname"] == name


def test_ports_are_published_on_127_0_0_1_only(compose):
    published = {name: s.get("ports", []) for name, s in compose["services"].items()}
    assert published == {
        name: ["127.0.0.1:${HPCHUB_HTTPS_PORT:-8443}:443"] if name == TOPOLOGY.login else []
        for name in TOPOLOGY.nodes
    }


def test_no_service_has_a_restart_policy(compose):
    assert "restart" not in NODE_SETTINGS["x-node"]
    assert [name for name, s in compose["services"].items() if "restart" in s] == []


def test_every_node_gets_the_shared_settings_network_and_volumes(compose):
    for service in compose["services"].values():
        assert {key: service[key] for key in NODE_SETTINGS["x-node"]} == NODE_SETTINGS["x-node"]
    assert "x-node" not in compose
    assert compose["networks"] == NODE_SETTINGS["networks"]
    assert compose["volumes"] == NODE_SETTINGS["volumes"]


def test_published_ports_must_be_numbers(tmp_path):
    copy = tmp_path / "testbed"
    copy.mkdir()
    (copy / "group_vars").symlink_to(INVENTORY / "group_vars")
    hosts = yaml.safe_load((INVENTORY / "hosts.yml").read_text())
    login = hosts["all"]["children"]["login"]["hosts"][TOPOLOGY.login]
    login["testbed_published_ports"] = [{"container_port": 443, "host_port": "any"}]
    (copy / "hosts.yml").write_text(yaml.safe_dump(hosts))
    with pytest.raises(testbed_topology.TopologyError, match="host_port numbers"):
        testbed_topology.load(copy)


# --- nodes, groups and users ----------------------------------------------------------------------


def test_roles_of_the_nodes_are_the_inventorys_groups(ansible_inventory):
    def hosts_of(group: str) -> list[str]:
        return ansible_inventory[group]["hosts"]

    assert hosts_of("slurm_controller") == [TOPOLOGY.controller]
    assert hosts_of("login") == [TOPOLOGY.login]
    assert tuple(hosts_of("compute")) == TOPOLOGY.compute
    assert len(TOPOLOGY.compute) == 2  # the fault tests kill one and expect the other


def test_tools_print_the_nodes_and_containers_for_the_shell_scripts():
    def tool(*args: str) -> str:
        script = REPO / "tools" / "testbed_topology.py"
        return subprocess.run(
            [sys.executable, str(script), *args], capture_output=True, text=True, check=True
        ).stdout

    assert tool("hosts").splitlines() == [f"{h.name} {h.container}" for h in TOPOLOGY.hosts]
    assert tool("login").split() == [TOPOLOGY.login, TOPOLOGY.container(TOPOLOGY.login)]
    assert tool("volumes").split() == [v["name"] for v in NODE_SETTINGS["volumes"].values()]
    assert tool("networks").split() == [n["name"] for n in NODE_SETTINGS["networks"].values()]


def _testbed_test_names():
    """tests/testbed/topology.py, the names the testbed tests use."""
    path = REPO / "tests" / "testbed" / "topology.py"
    spec = importlib.util.spec_from_file_location("hpchub_testbed_topology_for_tests", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# What the playbooks make of the inventory's account and hub variables (templated by Ansible).
SHOW_ACCOUNTS = """
- name: Show the accounts and hub users the testbed inventory makes (no host is contacted)
  hosts: login
  gather_facts: false
  tasks:
    - name: Show them
      ansible.builtin.debug:
        msg:
          groups: "{{ accounts_groups }}"
          users: "{{ accounts_users }}"
          admins: "{{ jupyterhub_admin_users }}"
          allowed_groups: "{{ jupyterhub_allowed_groups }}"
          bench: "{{ testbed_bench_accounts }}"
"""


@pytest.fixture(scope="module")
def accounts(tmp_path_factory) -> dict:
    # The playbook's folder decides testbed_credentials_dir: the generated passwords land in tmp.
    playbooks = tmp_path_factory.mktemp("accounts") / "playbooks"
    playbooks.mkdir()
    (playbooks / "show.yml").write_text(SHOW_ACCOUNTS)
    result = subprocess.run(
        [
            str(ANSIBLE_BIN / "ansible-playbook"),
            "-i",
            str(INVENTORY / "hosts.yml"),
            str(playbooks / "show.yml"),
        ],
        cwd=REPO,
        env=ansible_env(ANSIBLE_STDOUT_CALLBACK="ansible.posix.json"),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return json.loads(result.stdout)["plays"][0]["tasks"][-1]["hosts"][TOPOLOGY.login]["msg"]


def test_demo_users_of_the_tests_are_the_accounts_ansible_creates(accounts):
    names = _testbed_test_names()
    group, gid = names.DEMO_GROUP
    # The demo group, then project groups (supplementary only: alice's gpu-project).
    assert accounts["groups"][0] == {"name": group, "gid": gid}
    projects = {g["name"] for g in accounts["groups"][1:]}
    assert projects == {"gpu-project"}
    created = {user["name"]: user for user in accounts["users"]}
    assert {n: u["groups"] for n, u in created.items() if u["groups"]} == {"alice": ["gpu-project"]}
    assert {name: created[name]["uid"] for name in names.DEMO_USERS} == names.DEMO_USERS
    assert names.DEMO_USERS == TOPOLOGY.demo_uids
    assert {"alice", "bob"} <= set(names.DEMO_USERS)  # the personas of tests/testbed
    assert {user["group"] for user in created.values()} == {group}
    assert accounts["admins"] == [u.name for u in TOPOLOGY.demo_users if u.admin]
    assert accounts["allowed_groups"] == [group]


def test_bench_accounts_follow_the_demo_users_without_sharing_a_uid(accounts):
    variables = yaml.safe_load((INVENTORY / "group_vars" / "all" / "cluster.yml").read_text())
    base, count = variables["testbed_bench_uid_base"], variables["testbed_bench_users"]
    assert [(a["name"], a["uid"]) for a in accounts["bench"]] == [
        (f"bench{i:02d}", base + i) for i in range(1, count + 1)
    ]
    uids = [user["uid"] for user in accounts["users"]]
    assert len(uids) == len(set(uids)) == len(TOPOLOGY.demo_users) + count


def test_the_tests_nodes_are_the_topologys():
    names = _testbed_test_names()
    assert (names.CONTROLLER, names.LOGIN, names.COMPUTE_NODES) == (
        TOPOLOGY.controller,
        TOPOLOGY.login,
        TOPOLOGY.compute,
    )
    assert names.ALL_NODES == TOPOLOGY.nodes
    assert [names.container(n) for n in names.ALL_NODES] == [h.container for h in TOPOLOGY.hosts]


# --- Molecule -----------------------------------------------------------------------------------


def test_molecule_takes_its_hosts_from_the_testbed_inventory():
    scenario = REPO / "molecule" / "default"
    config = yaml.safe_load((scenario / "molecule.yml").read_text())
    # No platforms (see the comment there): a platform would be an extra host in every play.
    assert "platforms" not in config
    links = config["provisioner"]["inventory"]["links"]
    assert (scenario / links["hosts"]).resolve() == INVENTORY / "hosts.yml"
    assert (scenario / links["group_vars"]).resolve() == INVENTORY / "group_vars"
