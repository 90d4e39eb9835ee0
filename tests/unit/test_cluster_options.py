"""gpu_type, constraint, account, QOS and reservation: checked against what Slurm says.

The same cases run against the testbed's real Slurm in tests/testbed/test_cluster_options.py.
"""

from __future__ import annotations

import pytest
from hpchub_config.cluster import (
    Associations,
    enrich,
    parse_nodes,
    parse_partition_limits,
    parse_reservations,
    parse_sinfo,
)
from hpchub_config.options import OptionsError, UserAccess, resolve_request
from hpchub_config.settings import Profile, SpawnerSettings
from test_cluster import SCONTROL_NODES, SCONTROL_PARTITIONS, SCONTROL_RESERVATIONS, SINFO_TESTBED

SETTINGS = SpawnerSettings(
    notebook_env="/opt/env",
    profiles=[Profile(key="small", display_name="Small", cores=1, memory_gb=2)],
)
PARTITIONS = enrich(
    parse_sinfo(SINFO_TESTBED),
    parse_nodes(SCONTROL_NODES),
    parse_partition_limits(SCONTROL_PARTITIONS),
)
ALICE = Associations(
    default_account="hpcusers",
    qos={"hpcusers": ("normal",), "physics": ("interactive", "normal")},
    default_qos={"hpcusers": "normal", "physics": "normal"},
)
BOB = Associations("hpcusers", {"hpcusers": ("normal",), "chemistry": ("long", "normal")}, {})
RESERVATIONS = parse_reservations(SCONTROL_RESERVATIONS)


def resolve(options, user="alice", associations=ALICE):
    access = UserAccess(user, associations, RESERVATIONS)
    return resolve_request(options, SETTINGS, PARTITIONS, access)


def refusal(options, **kwargs) -> str:
    with pytest.raises(OptionsError) as info:
        resolve(options, **kwargs)
    return str(info.value)


def test_a_typed_gpu_request_becomes_a_typed_gres():
    request = resolve({"partition": "gpu", "gpus": 2, "gpu_type": "a100"})
    assert request.gres == "gpu:a100:2"
    assert resolve({"partition": "gpu", "gpus": "1"}).gres == "gpu:1"
    assert resolve({}).gres == ""


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"partition": "gpu", "gpus": 1, "gpu_type": "v100"},
            "gpu_type 'v100' is not in partition gpu; GPU types there: a100",
        ),
        (
            {"partition": "gpu", "gpus": 3, "gpu_type": "a100"},
            "3 GPUs requested, but nodes in partition gpu have at most 2",
        ),
        ({"partition": "gpu", "gpu_type": "a100"}, "gpu_type 'a100' needs gpus of at least 1"),
        (
            {"partition": "gpu", "cores": 6},
            "6 cores requested, but nodes in partition gpu have at most 4",
        ),
        (
            {"constraint": "sse2"},
            "constraint: feature 'sse2' is not offered in partition batch; "
            "features there: avx2, avx512, gpu",
        ),
        ({"constraint": "avx512&gpu"}, "no node in partition batch has all of these features"),
        ({"constraint": "avx512|gpu"}, "is not a node feature or features joined by &"),
        ({"partition": "gpu", "constraint": "avx512"}, "features there: avx2, gpu"),
    ],
)
def test_gpu_type_and_constraint_refusals_name_the_field_and_the_choices(options, message):
    assert message in refusal(options)


def test_features_that_one_node_has_pass():
    assert resolve({"constraint": "avx2&gpu"}).constraint == "avx2&gpu"


def test_account_and_qos_come_from_the_users_associations():
    request = resolve({"account": "physics", "qos": "interactive"})
    assert (request.account, request.qos) == ("physics", "interactive")
    # No account: the QOS must be one of the default account's.
    assert resolve({"qos": "normal"}).qos == "normal"
    assert "allowed: normal" in refusal({"qos": "interactive"})
    message = refusal({"account": "chemistry"})
    assert message == (
        "account: you cannot use Slurm account 'chemistry'; your accounts: hpcusers, physics"
    )
    message = refusal({"account": "physics", "qos": "long"})
    assert (
        message
        == "qos: you cannot use QOS 'long' with account 'physics'; allowed: interactive, normal"
    )


def test_without_associations_only_the_profiles_account_and_qos_pass():
    assert "does not let you choose a Slurm account" in refusal({"account": "x"}, associations=None)
    assert "does not let you choose a QOS" in refusal({"qos": "normal"}, associations=None)


def test_reservations_the_user_may_use():
    assert resolve({"reservation": "alice-only"}).reservation == "alice-only"
    message = refusal({"reservation": "alice-only"}, user="bob", associations=BOB)
    assert (
        message == "reservation: 'alice-only' is not an active reservation you may use; yours: none"
    )
    # An account reservation: the job must be charged to that account.
    assert resolve({"reservation": "physics", "account": "physics"}).reservation == "physics"
    assert "choose one of those as account" in refusal({"reservation": "physics"})
    assert "not an active reservation" in refusal({"reservation": "later"})
    assert "holds no node of partition gpu" in refusal(
        {"reservation": "alice-only", "partition": "gpu"}
    )
