"""What the testbed inventory declares about Slurm accounting, GPUs and features.

Read as plain YAML (like tools/testbed_topology.py): the tests name the GPU node, the
features and each user's accounts from the inventory, never from a copy of it.
"""

from __future__ import annotations

import yaml

from .topology import REPO

INVENTORY = REPO / "inventories" / "testbed"
_HOSTS = yaml.safe_load((INVENTORY / "hosts.yml").read_text())["all"]["children"]
_CLUSTER = yaml.safe_load((INVENTORY / "group_vars" / "all" / "cluster.yml").read_text())

COMPUTE = _HOSTS["compute"]["hosts"]
# The node with GPUs, its GPU type and count (slurm_node_gres).
GPU_NODE, GPU = next(
    (name, gres)
    for name, host in COMPUTE.items()
    for gres in (host or {}).get("slurm_node_gres", [])
    if gres["name"] == "gpu"
)
GPU_PARTITION = next(
    p["name"] for p in _CLUSTER["slurm_partitions"] if p.get("nodes") == [GPU_NODE]
)
# Node -> its features.
FEATURES = {
    name: (host or {}).get("slurm_node_extra", {}).get("Features", "").split(",")
    for name, host in COMPUTE.items()
}
USER_GROUP_ACCOUNT = _CLUSTER["testbed_group"]["name"]  # every user's default account
EXTRA_ACCOUNTS = _CLUSTER["testbed_extra_slurm_accounts"]  # user -> further accounts
ACCOUNT_QOS = {a["name"]: a["qos"] for a in _CLUSTER["slurm_accounting_accounts"]}
QOS = {q["name"]: q for q in _CLUSTER["slurm_accounting_qos"]}


def accounts_of(user: str) -> list[str]:
    return [USER_GROUP_ACCOUNT, *EXTRA_ACCOUNTS.get(user, [])]


def foreign_account(user: str) -> str:
    """An account that exists but is not the user's."""
    return next(a for a in ACCOUNT_QOS if a not in accounts_of(user))


def foreign_qos(user: str) -> str:
    """A QOS that exists but none of the user's accounts allows."""
    own = {q for a in accounts_of(user) for q in ACCOUNT_QOS[a]}
    return next(q for q in QOS if q not in own)
