"""The testbed's nodes and demo users, from its one description (the Ansible inventory).

tools/testbed_topology.py reads inventories/testbed/hosts.yml and group_vars/all/cluster.yml; the
tests use these names wherever they mean "the login node", "a compute node" or "alice's uid".
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
import testbed_topology  # noqa: E402

TESTBED = testbed_topology.load()

CONTROLLER = TESTBED.controller
LOGIN = TESTBED.login
COMPUTE_NODES = TESTBED.compute
ALL_NODES = TESTBED.nodes
DEMO_USERS = TESTBED.demo_uids  # name -> uid
DEMO_GROUP = TESTBED.group  # (name, gid)
container = TESTBED.container  # node -> the container docker exec uses
