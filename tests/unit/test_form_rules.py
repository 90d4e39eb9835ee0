"""Issue 8's rules for the form, the REST API and launch links alike (options.py): locked
profile fields, profiles per Unix group, every error by field, remembered choices reconciled
with what the cluster offers now. Against the testbed's Slurm output (test_cluster.py)."""

from __future__ import annotations

import dataclasses

import pytest
from hpchub_config.options import (
    OptionsError,
    UserAccess,
    option_errors,
    reconcile,
    resolve_request,
)
from hpchub_config.settings import Profile, SpawnerSettings, settings_from_dict
from test_cluster_options import ALICE, PARTITIONS, RESERVATIONS

SETTINGS = SpawnerSettings(
    notebook_env="/opt/env",
    profiles=[
        Profile(key="small", display_name="Small", cores=1, memory_gb=2),
        Profile(
            key="a100",
            display_name="One A100",
            partition="gpu",
            gpus=1,
            gpu_type="a100",
            locked=["partition", "gpus"],
            groups=["gpu-project"],
        ),
    ],
)
ALICE_ACCESS = UserAccess("alice", ALICE, RESERVATIONS, ("hpcusers", "gpu-project"))
BOB_ACCESS = UserAccess("bob", ALICE, RESERVATIONS, ("hpcusers",))


def refusal(options, access=ALICE_ACCESS) -> OptionsError:
    with pytest.raises(OptionsError) as info:
        resolve_request(options, SETTINGS, PARTITIONS, access)
    return info.value


def test_a_locked_field_keeps_the_profile_value_and_another_is_refused_naming_it():
    request = resolve_request({"profile": "a100"}, SETTINGS, PARTITIONS, ALICE_ACCESS)
    assert (request.partition, request.gpus, request.gres) == ("gpu", 1, "gpu:a100:1")
    # The same value is accepted (a read-only field is sent unchanged).
    same = {"profile": "a100", "partition": "gpu", "gpus": "1", "cores": "2"}
    assert resolve_request(same, SETTINGS, PARTITIONS, ALICE_ACCESS).cores == 2
    error = refusal({"profile": "a100", "gpus": 2})
    assert error.field == "gpus"
    assert str(error) == (
        "gpus is locked to 1 by profile 'a100'; remove it or choose another profile"
    )
    assert refusal({"profile": "a100", "partition": "batch"}).field == "partition"


def test_a_group_profile_is_refused_to_others_and_not_their_default():
    assert resolve_request({"profile": "a100"}, SETTINGS, PARTITIONS, ALICE_ACCESS)
    error = refusal({"profile": "a100"}, BOB_ACCESS)
    assert error.field == "profile"
    assert str(error) == "profile 'a100' is not available to you; choose one of: small"
    # Not listed among the choices of an unknown profile either.
    assert "a100" not in str(refusal({"profile": "nope"}, BOB_ACCESS))
    # The first profile a user may see is their default.
    gpu_first = dataclasses.replace(SETTINGS, profiles=SETTINGS.profiles[::-1])
    assert resolve_request({}, gpu_first, PARTITIONS, BOB_ACCESS).profile == "small"
    assert resolve_request({}, gpu_first, PARTITIONS, ALICE_ACCESS).profile == "a100"
    # No groups known (the default access): only profiles for everyone.
    assert refusal({"profile": "a100"}, UserAccess("alice")).field == "profile"


def test_each_error_names_its_field_and_every_field_is_checked():
    errors = option_errors(
        {
            "profile": "small",
            "cores": "99",
            "memory_gb": "lots",
            "account": "chemistry",
            "reservation": "nope",
            "colour": "red",
        },
        SETTINGS,
        PARTITIONS,
        ALICE_ACCESS,
    )
    assert sorted(errors) == ["account", "colour", "cores", "memory_gb", "reservation"]
    assert errors["memory_gb"] == "memory_gb must be a whole number, got 'lots'"
    assert errors["cores"].startswith("99 cores requested, but nodes in partition batch")
    assert errors["account"].startswith("account: you cannot use Slurm account 'chemistry'")
    assert errors["reservation"].startswith("reservation: 'nope' is not an active reservation")
    assert "unknown option 'colour'" in errors["colour"]
    assert option_errors({"profile": "small", "cores": "2"}, SETTINGS, PARTITIONS) == {}
    assert option_errors(["x"], SETTINGS, PARTITIONS) == {
        "": 'options must be a JSON object such as {"profile": "..."}'
    }


def test_remembered_choices_the_cluster_no_longer_offers_are_dropped_with_a_note():
    remembered = {
        "profile": "small",
        "partition": "gone",
        "cores": "2",
        "account": "physics",
        "reservation": "ended",
    }
    values, notes = reconcile(remembered, SETTINGS, PARTITIONS, ALICE_ACCESS)
    assert values == {"profile": "small", "cores": "2", "account": "physics"}
    assert len(notes) == 2
    assert notes[0].startswith("Your last partition 'gone' was dropped: partition 'gone' is not")
    assert notes[1].startswith("Your last reservation 'ended' was dropped: reservation:")
    # Still valid: kept as they are, no note.
    assert reconcile(values, SETTINGS, PARTITIONS, ALICE_ACCESS) == (values, [])
    # An account removed from the user, a profile no longer visible: dropped too.
    values, notes = reconcile(
        {"profile": "a100", "account": "physics"},
        SETTINGS,
        PARTITIONS,
        dataclasses.replace(BOB_ACCESS, associations=dataclasses.replace(ALICE, qos={})),
    )
    assert values == {} and [n.split(" was")[0] for n in notes] == [
        "Your last profile 'a100'",
        "Your last account 'physics'",
    ]
    assert reconcile(None, SETTINGS, PARTITIONS) == ({}, [])


def test_locked_and_groups_are_checked_settings():
    data = {
        "notebook_env": "/opt/env",
        "profiles": [
            {"key": "p", "display_name": "P", "locked": ["colour"], "groups": ["bad group"]}
        ],
    }
    with pytest.raises(ValueError) as info:
        settings_from_dict(
            {
                "hub": {},
                "proxy": {},
                "spawner": data,
            }
        )
    text = str(info.value)
    assert "spawner.profiles[0].locked[0]: must be one of partition, cores" in text
    assert "spawner.profiles[0].groups[0]: must be a Unix group name" in text
