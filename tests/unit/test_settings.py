"""The settings file: what it accepts, and the errors it gives for what it does not."""

import subprocess
import sys

import pytest
import yaml
from hpchub_config.settings import SettingsError, load_settings, settings_from_dict


def problems_of(data):
    with pytest.raises(SettingsError) as info:
        settings_from_dict(data)
    return dict(info.value.problems)


def test_valid_settings_load_with_defaults(settings_data):
    settings = settings_from_dict(settings_data)
    assert settings.hub.name == "testhub"
    assert settings.hub.min_uid == 1000
    assert [p.key for p in settings.spawner.profiles] == ["small", "medium"]
    assert settings.spawner.profiles[0].walltime_hours == 1.0
    assert settings.proxy.api_url == "https://127.0.0.1:801"
    assert settings.announcement.seed[0].message == "Maintenance on Monday"


def test_misspelled_key_is_named_with_a_suggestion(settings_data):
    settings_data["spawner"]["profiles"][1]["memroy_gb"] = 4
    problems = problems_of(settings_data)
    assert problems == {
        "spawner.profiles[1].memroy_gb": "unknown key (did you mean spawner.profiles[1].memory_gb?)"
    }


def test_unknown_section_is_an_error(settings_data):
    settings_data["culler"] = {"timeout": 10}
    assert "culler" in problems_of(settings_data)


def test_wrong_types_are_named(settings_data):
    settings_data["spawner"]["profiles"][0]["cores"] = "two"
    settings_data["hub"]["min_uid"] = True
    problems = problems_of(settings_data)
    assert "spawner.profiles[0].cores" in problems
    assert "integer" in problems["spawner.profiles[0].cores"]
    assert "hub.min_uid" in problems


def test_missing_required_keys(settings_data):
    del settings_data["hub"]["connect_url"]
    del settings_data["spawner"]["notebook_env"]
    problems = problems_of(settings_data)
    assert problems["hub.connect_url"] == "is required"
    assert problems["spawner.notebook_env"] == "is required"


def test_profiles_default_to_the_schema_menu_but_may_not_be_empty(settings_data):
    del settings_data["spawner"]["profiles"]
    assert [p.key for p in settings_from_dict(settings_data).spawner.profiles] == [
        "small",
        "medium",
    ]
    settings_data["spawner"]["profiles"] = []
    assert problems_of(settings_data) == {"spawner.profiles": "at least one entry is required"}


def test_duplicate_profile_keys_and_bad_values(settings_data):
    settings_data["spawner"]["profiles"][1]["key"] = "small"
    settings_data["spawner"]["profiles"][0]["cores"] = 0
    settings_data["spawner"]["profiles"][0]["sbatch_options"] = ["--qos=x\n#SBATCH --uid=0"]
    problems = problems_of(settings_data)
    assert "duplicate" in problems["spawner.profiles[1].key"]
    assert "at least 1" in problems["spawner.profiles[0].cores"]
    assert "spawner.profiles[0].sbatch_options[0]" in problems


def test_proxy_api_must_stay_on_localhost(settings_data):
    settings_data["proxy"]["api_url"] = "https://0.0.0.0:801"
    assert "localhost" in problems_of(settings_data)["proxy.api_url"]


def test_job_log_dir_must_stay_in_home(settings_data):
    settings_data["spawner"]["job_log_dir"] = "../../etc"
    assert "spawner.job_log_dir" in problems_of(settings_data)


def test_fragments_add_sections_and_may_not_redefine_them(tmp_path, settings_data):
    announcement = settings_data.pop("announcement")
    main = tmp_path / "hpchub.yaml"
    main.write_text(yaml.safe_dump(settings_data))
    (tmp_path / "hpchub.d").mkdir()
    (tmp_path / "hpchub.d" / "announcement.yaml").write_text(
        yaml.safe_dump({"announcement": announcement})
    )
    assert load_settings(main).announcement.enabled is True

    (tmp_path / "hpchub.d" / "culler.yaml").write_text(yaml.safe_dump({"hub": {}}))
    with pytest.raises(SettingsError) as info:
        load_settings(main)
    assert "already defined in" in str(info.value)
    assert "culler.yaml" in str(info.value)


def test_unreadable_or_invalid_yaml_names_the_file(tmp_path):
    bad = tmp_path / "hpchub.yaml"
    bad.write_text("hub: [unclosed\n")
    with pytest.raises(SettingsError) as info:
        load_settings(bad)
    assert str(bad) in str(info.value)
    with pytest.raises(SettingsError):
        load_settings(tmp_path / "missing.yaml")


def test_check_command_exit_codes(tmp_path, settings_data):
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(settings_data))
    settings_data["idle_culler"]["timout"] = 5
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(settings_data))
    fragment = tmp_path / "fragment.yaml"
    fragment.write_text(yaml.safe_dump({"announcement": settings_data["announcement"]}))
    cmd = [sys.executable, "-m", "hpchub_config.settings"]
    assert subprocess.run([*cmd, str(good)], capture_output=True).returncode == 0
    result = subprocess.run([*cmd, str(bad)], capture_output=True, text=True)
    assert result.returncode == 1
    assert "idle_culler.timout: unknown key (did you mean idle_culler.timeout?)" in result.stderr
    assert subprocess.run([*cmd, "--fragment", str(fragment)]).returncode == 0
    assert subprocess.run([*cmd, str(fragment)], capture_output=True).returncode == 1
