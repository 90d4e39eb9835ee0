"""The slurm role's accounting pieces: the sacctmgr module's plan and the declaration checks.

The module is proven against real slurmdbd on the testbed (converge, then the idempotence run
and tests/testbed/test_accounting.py); here its decisions are checked against sacctmgr output
captured from Slurm 22.05.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


assoc = load("slurm_associations", REPO / "roles/slurm/library/slurm_associations.py")
checks = load("slurm_accounting", REPO / "roles/slurm/filter_plugins/slurm_accounting.py")

QOS = [
    {"name": "normal"},
    {"name": "interactive", "max_wall": "4:00:00", "max_tres_per_user": "cpu=4"},
]
ACCOUNTS = [
    {"name": "hpcusers", "qos": ["normal"], "default_qos": "normal"},
    {"name": "physics", "qos": ["normal", "interactive"]},
]
USERS = [
    {"name": "alice", "accounts": ["hpcusers", "physics"]},
    {"name": "bob", "accounts": ["hpcusers"]},
]

# What sacctmgr -nP shows once the declaration above is applied (Slurm 22.05 formats).
APPLIED = {
    "cluster": "hpchub\n",
    "qos": "normal|Normal QOS default|0||||||\ninteractive||0|04:00:00|cpu=4||||\n",
    "account": (
        "hpcusers|hpcusers|hpcusers\nphysics|physics|physics\nroot|default root account|root\n"
    ),
    "association": (
        "root||||normal|\n"
        "root|root|||normal|\n"
        "hpcusers|||root|normal|normal\n"
        "hpcusers|alice|||normal|normal\n"
        "hpcusers|bob|||normal|normal\n"
        "physics|||root|interactive,normal|\n"
        "physics|alice|||interactive,normal|\n"
    ),
    "user": "alice|hpcusers\nbob|hpcusers\nroot|root\n",
}


def fake(outputs: dict):
    calls = []

    def run(args):
        calls.append(args)
        return outputs[args[1]]

    run.calls = calls
    return run


def test_nothing_to_do_when_slurmdbd_holds_the_declaration():
    state = assoc.Associations(fake(APPLIED), "hpchub")
    assert state.plan(QOS, ACCOUNTS, USERS) == []


def test_only_the_differences_become_sacctmgr_commands():
    outputs = dict(APPLIED)
    outputs["qos"] = "normal|Normal QOS default|0||||||\ninteractive||0|02:00:00|cpu=4||||\n"
    outputs["association"] = APPLIED["association"].replace(
        "physics|alice|||interactive,normal|\n", ""
    )
    outputs["user"] = "alice|physics\nbob|hpcusers\n"
    commands = assoc.Associations(fake(outputs), "hpchub").plan(QOS, ACCOUNTS, USERS)
    assert commands == [
        ["modify", "qos", "where", "name=interactive", "set", "MaxWall=4:00:00"],
        ["add", "user", "alice", "account=physics", "cluster=hpchub"],
        ["modify", "user", "where", "name=alice", "set", "defaultaccount=hpcusers"],
    ]


def test_a_fresh_database_gets_everything_parents_first():
    outputs = {
        "cluster": "",
        "qos": "normal|Normal QOS default|0||||||\n",
        "account": "root|default root account|root\n",
        "association": "",
        "user": "root|root\n",
    }
    accounts = [{"name": "theory", "parent": "physics"}, *ACCOUNTS]
    commands = assoc.Associations(fake(outputs), "hpchub").plan(QOS, accounts, USERS[:1])
    assert commands[0] == ["add", "cluster", "hpchub"]
    assert ["add", "qos", "interactive"] in commands
    added = [c[2] for c in commands if c[:2] == ["add", "account"]]
    assert added.index("physics") < added.index("theory")
    assert [
        "add",
        "user",
        "alice",
        "account=hpcusers",
        "cluster=hpchub",
        "defaultaccount=hpcusers",
    ] in commands
    assert ["add", "user", "alice", "account=physics", "cluster=hpchub"] in commands


@pytest.mark.parametrize(
    ("kind", "declared", "shown", "same"),
    [
        ("time", "4:00:00", "04:00:00", True),
        ("time", "1-00:00:00", "1-00:00:00", True),
        ("time", "04:00:00", "", False),
        ("tres", "mem=8G,cpu=4", "cpu=4,mem=8G", True),
        ("int", 2, "2", True),
        ("int", 2, "", False),
    ],
)
def test_values_compare_as_slurm_means_them(kind, declared, shown, same):
    assert (assoc.normalise(kind, declared) == assoc.normalise(kind, shown)) is same


def test_an_unexpected_sacctmgr_line_is_an_error_not_a_guess():
    with pytest.raises(assoc.SacctmgrError, match="unexpected sacctmgr line"):
        assoc.parse_rows("a|b|c\n", 2)


# --------------------------------------------------------------------------- declaration checks


def declaration(**changes):
    values = {
        "accounting": True,
        "enforce": "associations,limits,qos",
        "qos": QOS,
        "accounts": ACCOUNTS,
        "users": USERS,
        "gres": {
            "node2": [{"name": "gpu", "type": "a100", "count": 2, "file": "/dev/null,/dev/zero"}]
        },
        "extra": {},
    }
    values.update(changes)
    return checks.slurm_accounting_problems(values)


def test_the_testbed_like_declaration_passes():
    assert declaration() == []


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"users": [{"name": "alice", "accounts": ["nope"]}]},
            "slurm_accounting_users (alice): account 'nope' is not declared",
        ),
        (
            {"users": [{"name": "alice", "accounts": ["physics"], "default_account": "hpcusers"}]},
            "default_account 'hpcusers' is not one of its accounts",
        ),
        (
            {
                "accounts": [{"name": "physics", "qos": ["gold"]}],
                "users": [{"name": "a", "accounts": ["physics"]}],
            },
            "QOS 'gold' is not declared",
        ),
        (
            {
                "accounts": [{"name": "physics", "qos": ["normal"], "default_qos": "interactive"}],
                "users": [{"name": "a", "accounts": ["physics"]}],
            },
            "default_qos 'interactive' is not one",
        ),
        (
            {
                "accounts": [{"name": "a", "parent": "b"}, {"name": "b", "parent": "a"}],
                "users": [{"name": "x", "accounts": ["a"]}],
            },
            "parent cycle",
        ),
        ({"accounts": [{"name": "Physics"}], "users": []}, "slurm_accounting_accounts[0].name"),
        ({"users": []}, "nobody could submit a job"),
        ({"accounting": False}, "slurm_accounting is false"),
        ({"enforce": "associations,everything"}, "slurm_accounting_enforce: unknown everything"),
        ({"qos": [{"name": "q", "max_wall": "4h"}]}, "slurm_accounting_qos[0].max_wall"),
        ({"gres": {"node2": [{"name": "gpu", "count": 0}]}}, "slurm_node_gres[0] of host node2"),
        ({"extra": {"node2": {"Gres": "gpu:2"}}}, "sets both slurm_node_gres and Gres"),
        (
            {"gres": {"node2": [{"name": "gpu", "type": "a100", "count": 2}]}},
            "slurm_node_gres[0] of host node2: a gpu needs file",
        ),
    ],
)
def test_a_wrong_declaration_is_refused_naming_the_key(changes, message):
    problems = declaration(**changes)
    assert any(message in p for p in problems), problems
