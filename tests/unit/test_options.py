"""User options (form and REST API) -> a validated Slurm request, or a clear refusal."""

import dataclasses
import re

import pytest
from hpchub_config.cluster import Associations
from hpchub_config.options import OptionsError, UserAccess, resolve_request
from hpchub_config.settings import Profile, SpawnerSettings

SETTINGS = SpawnerSettings(
    notebook_env="/opt/env",
    profiles=[
        Profile(
            key="small",
            display_name="Small",
            partition="batch",
            cores=1,
            memory_gb=2,
            walltime_hours=1.0,
        ),
        Profile(
            key="big",
            display_name="Big",
            partition="batch",
            cores=2,
            memory_gb=4,
            walltime_hours=4.0,
            sbatch_options=["--qos=interactive"],
        ),
    ],
)


def resolve(options, partitions, accounts=None, **settings):
    associations = None
    if accounts is not None:
        associations = Associations(
            accounts[0] if accounts else "", dict.fromkeys(accounts, ()), {}
        )
    access = UserAccess("alice", associations)
    return resolve_request(options, dataclasses.replace(SETTINGS, **settings), partitions, access)


def refusal(options, partitions, **kwargs):
    with pytest.raises(OptionsError) as info:
        resolve(options, partitions, **kwargs)
    return str(info.value)


def test_no_options_means_the_first_profile(partitions):
    request = resolve({}, partitions)
    assert (request.profile, request.partition, request.cores, request.memory_gb) == (
        "small",
        "batch",
        1,
        2,
    )
    assert request.walltime_minutes == 60


def test_profile_values_and_its_sbatch_options(partitions):
    request = resolve({"profile": "big"}, partitions)
    assert request.cores == 2 and request.memory_gb == 4 and request.walltime_minutes == 240
    assert request.sbatch_options == ("--qos=interactive",)


def test_form_strings_and_api_numbers_mean_the_same(partitions):
    from_form = resolve(
        {"profile": ["small"], "cores": ["3"], "memory_gb": ["6"], "walltime_hours": ["1.5"]},
        partitions,
    )
    from_api = resolve(
        {"profile": "small", "cores": 3, "memory_gb": 6, "walltime_hours": 1.5}, partitions
    )
    assert from_form == from_api
    assert from_api.walltime_minutes == 90


def test_empty_form_fields_fall_back_to_the_profile(partitions):
    assert resolve({"profile": "big", "cores": ""}, partitions).cores == 2


def test_unknown_profile_is_refused_with_the_choices(partitions):
    message = refusal({"profile": "local"}, partitions)
    assert "unknown profile 'local'" in message and "small, big" in message


def test_unknown_option_is_refused(partitions):
    message = refusal({"profile": "small", "runtime": "1:00:00"}, partitions)
    assert "unknown option 'runtime'" in message


@pytest.mark.parametrize(
    "options, expected",
    [
        ({"cores": 5}, "at most 4"),
        ({"cores": 0}, "at least 1"),
        ({"cores": True}, "whole number"),
        ({"cores": "2; rm -rf ~"}, "whole number"),
        ({"cores": 1.5}, "whole number"),
        ({"memory_gb": 9}, "at most 7 GB"),
        ({"walltime_hours": 9}, "at most 8 h"),
        ({"walltime_hours": "1\n#SBATCH --uid=0"}, "number of hours"),
        ({"walltime_hours": "nan"}, "number of hours"),
        ({"walltime_hours": 0}, "more than 0"),
        ({"gpus": 1}, "no GPUs"),
        ({"partition": "debug"}, "not available"),
        ({"partition": "batch --uid=0"}, "not a valid"),
        ({"account": "physics"}, "does not let you choose"),
        ({"profile": ["small", "big"]}, "one value"),
    ],
)
def test_invalid_values_are_refused_with_a_reason(partitions, options, expected):
    assert expected in refusal(options, partitions)


def test_options_must_be_an_object(partitions):
    assert "JSON object" in refusal(["small"], partitions)


def test_gpu_partition_limits_and_walltime_cap(partitions):
    request = resolve({"partition": "gpu", "gpus": 2, "cores": 8}, partitions)
    assert request.gpus == 2 and request.partition == "gpu"
    # gpu has no MaxTime in Slurm: the site cap applies.
    assert "at most 24 h" in refusal({"partition": "gpu", "walltime_hours": 30}, partitions)
    assert "at most 2" in refusal({"partition": "gpu", "gpus": 3}, partitions)


def test_custom_resources_can_be_switched_off(partitions):
    assert resolve({"profile": "big"}, partitions, allow_custom_resources=False).cores == 2
    message = refusal({"profile": "big", "cores": 1}, partitions, allow_custom_resources=False)
    assert "remove cores" in message


def test_accounts_are_checked_against_the_users_own(partitions):
    assert resolve({"account": "physics"}, partitions, accounts=["physics"]).account == "physics"
    message = refusal({"account": "chemistry"}, partitions, accounts=["physics"])
    assert "cannot use Slurm account 'chemistry'" in message and "physics" in message


def test_no_partition_available(partitions):
    assert "no Slurm partition" in refusal({}, {})


def test_api_docs_list_exactly_the_vocabulary():
    from pathlib import Path

    from hpchub_config.options import OPTION_NAMES

    docs = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    documented = re.findall(r"^\| `([a-z_]+)` \|", docs, flags=re.M)
    assert tuple(documented) == OPTION_NAMES


@pytest.mark.parametrize("falsy", [None, False, 0, {}, []])
@pytest.mark.parametrize("name", ["profile", "partition", "account"])
def test_null_false_zero_or_empty_objects_are_refused_never_dropped(partitions, name, falsy):
    # {"account": null} must not silently drop a profile's account (or partition).
    message = refusal({name: falsy}, partitions)
    assert name in message


@pytest.mark.parametrize("hours", [10**400, 1e308, float("inf"), "999999999", 2**63])
def test_enormous_walltimes_get_the_user_facing_message(partitions, hours):
    assert "allows at most 8 h" in refusal({"walltime_hours": hours}, partitions)
