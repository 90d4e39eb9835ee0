"""One schema for the hub settings: the roles, the settings template and the docs follow it."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hpchub_config import settings as schema

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / "tools" / "settings_schema.py"
sys.path.insert(0, str(TOOL.parent))
import settings_schema  # noqa: E402


def test_generated_role_files_and_docs_are_up_to_date():
    result = subprocess.run(
        [sys.executable, str(TOOL), "--check"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("role", ["jupyterhub", "jupyterhub_announcement"])
def test_role_defaults_are_the_schema_defaults(role):
    defaults = yaml.safe_load((REPO / "roles" / role / "defaults" / "main.yml").read_text())
    specs = yaml.safe_load((REPO / "roles" / role / "meta" / "argument_specs.yml").read_text())
    options = specs["argument_specs"]["main"]["options"]
    checked = 0
    for _section, field, _tp, var in settings_schema.role_variables(role):
        assert var in options, f"{var} has no argument spec"
        assert field.metadata["doc"] in options[var]["description"]
        if field.metadata.get("role_default"):
            assert defaults[var] == field.metadata["role_default"]
        else:
            assert defaults[var] == settings_schema.plain(settings_schema.default_of(field))
        checked += 1
    assert checked >= 5


def test_every_setting_is_documented_once_in_the_reference():
    reference = (REPO / "docs" / "configuration.md").read_text()
    for section in schema.SECTIONS:
        for field in schema.dataclasses.fields(section.cls):
            assert reference.count(f"| `{section.name}.{field.name}` |") == 1


def test_every_field_has_documentation():
    for cls in (*(s.cls for s in schema.SECTIONS), schema.Profile, schema.SeededAnnouncement):
        for field in schema.dataclasses.fields(cls):
            assert field.metadata.get("doc"), f"{cls.__name__}.{field.name} has no doc"


def test_inventory_values_are_checked_with_the_schema_rules_naming_the_variable():
    problems = schema.check_ansible_values(
        {
            "jupyterhub_poll_interval": 0,
            "jupyterhub_log_level": "LOUD",
            "jupyterhub_profiles": [
                {"key": "a", "display_name": "A"},
                {"key": "a", "display_name": "B", "cores": "two"},
            ],
            "jupyterhub_announcement_port": 70000,
            "jupyterhub_slurm_bin_dir": "/usr/bin\n",
            "unrelated_variable": "ignored",
        }
    )
    text = "\n".join(problems)
    assert "jupyterhub_poll_interval: must be at least 1, got 0" in text
    assert "jupyterhub_log_level: must be one of DEBUG" in text
    assert "jupyterhub_profiles[1].cores: must be an integer, got 'two'" in text
    assert "jupyterhub_announcement_port: must be at most 1023" in text
    assert "jupyterhub_slurm_bin_dir: must be an absolute path of letters" in text
    assert len(problems) == 5


def test_command_line_strings_are_read_like_the_template_reads_them():
    # `-e jupyterhub_poll_interval=10` arrives as a string; the template's `| int` makes it 10.
    assert (
        schema.check_ansible_values(
            {"jupyterhub_poll_interval": "10", "jupyterhub_allow_custom_resources": "false"}
        )
        == []
    )


def test_a_wrong_database_kind_fails_preflight_naming_the_variable():
    problems = schema.check_ansible_values(
        {"jupyterhub_database": "mysql", "jupyterhub_postgresql_database": "Hub-DB"}
    )
    text = "\n".join(problems)
    assert "jupyterhub_database: must be one of sqlite, postgresql, got 'mysql'" in text
    assert "jupyterhub_postgresql_database: must be lower-case letters" in text
    assert schema.check_ansible_values({"jupyterhub_database": "postgresql"}) == []


def test_placeholders_in_the_reference_are_shown_not_read_as_html():
    # jupyter-<name>-<profile> outside a code span would be two unknown HTML tags: hidden text.
    assert settings_schema._markdown_text("job name jupyter-<name>-<profile>, `a <b>` | c") == (
        "job name jupyter-&lt;name>-&lt;profile>, `a <b>` \\| c"
    )
    # A | inside code: HTML with an entity, shown as | by GitHub and by the site alike.
    assert settings_schema._markdown_text("`{{ x | default(1) }}`") == (
        "<code>{{ x &#124; default(1) }}</code>"
    )
    reference = (REPO / "docs" / "configuration.md").read_text()
    assert "jupyter-&lt;name>-&lt;profile>" in reference


def test_every_role_variable_is_in_the_reference():
    reference = (REPO / "docs" / "configuration.md").read_text()
    checked = 0
    for specs_file in sorted(REPO.glob("roles/*/meta/argument_specs.yml")):
        options = yaml.safe_load(specs_file.read_text())["argument_specs"]["main"]["options"]
        for name in options:
            assert reference.count(f" `{name}` |") == 1, f"{name} ({specs_file}) in the reference"
            checked += 1
    assert checked >= 100
