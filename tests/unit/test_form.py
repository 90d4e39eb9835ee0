"""The spawn form offers what the cluster has, and escapes what it shows."""

import dataclasses
import json
import re

from hpchub_config.form import FORM_SCRIPT_PATH, STATIC_DIR, render_form
from hpchub_config.options import RESOURCE_OPTIONS
from hpchub_config.settings import Profile, SpawnerSettings

SETTINGS = SpawnerSettings(
    notebook_env="/opt/env",
    profiles=[
        Profile(key="small", display_name="1 core <fast>", partition="batch"),
        Profile(key="big", display_name="Big", cores=2, memory_gb=4, walltime_hours=4),
    ],
)


def render(partitions, **kwargs):
    custom = kwargs.pop("allow_custom_resources", True)
    settings = dataclasses.replace(SETTINGS, allow_custom_resources=custom)
    return render_form(settings, partitions, **kwargs)


def test_form_lists_profiles_partitions_and_limits(partitions):
    html = render(partitions)
    assert 'name="profile"' in html and 'value="small"' in html and 'value="big"' in html
    assert "1 core &lt;fast&gt;" in html  # escaped
    assert "batch: up to 4 cores, 7 GB, 8 h" in html
    assert "gpu: up to 8 cores, 62 GB, 24 h, 2 GPUs" in html
    for name in ("partition", "cores", "memory_gb", "walltime_hours", "gpus"):
        assert f'name="{name}"' in html
    assert 'name="account"' not in html


def test_partitions_show_what_is_free_now(partitions):
    busy = {
        "gpu": dataclasses.replace(
            partitions["gpu"], free_cores=5, free_memory_mb=20480, free_gpus=(("a100", 1),)
        )
    }
    assert "gpu: up to 8 cores, 62 GB, 24 h, 2 GPUs; free now: 5 cores, 20 GB, 1 a100" in render(
        busy
    )


def test_no_gpu_field_without_gpus_and_no_resources_when_fixed(partitions):
    cpu_only = {"batch": partitions["batch"]}
    html = render(cpu_only)
    assert 'name="gpus"' not in html
    fixed = render(cpu_only, allow_custom_resources=False)
    assert 'name="cores"' not in fixed and 'name="profile"' in fixed


def test_previous_choice_is_preselected_and_accounts_offered(partitions):
    html = render(partitions, accounts=["physics", "chem"], selected={"profile": "big"})
    big = re.search(r'<option value="big" data-preset="([^"]*)" selected>Big</option>', html)
    assert big, html
    preset = json.loads(big.group(1).replace("&quot;", '"'))
    # The default partition fills in for a profile without one.
    assert preset == {
        "partition": "batch",
        "cores": 2,
        "memory_gb": 4,
        "walltime_hours": 4.0,
        "gpus": 0,
        "gpu_type": "",
        "qos": "",
        "reservation": "",
        "constraint": "",
    }
    assert 'name="account"' in html and 'value="chem"' in html


def test_script_is_a_static_file_that_reads_the_option_names_from_the_page(partitions):
    html = render(partitions, hub_base_url="/prefix/hub/")
    assert f'<script src="/prefix/hub/{FORM_SCRIPT_PATH}"></script>' in html
    assert "<script>" not in html  # no inline code
    names = re.search(r'data-options="([^"]*)"', html).group(1).replace("&quot;", '"')
    assert tuple(json.loads(names)) == RESOURCE_OPTIONS
    script = (STATIC_DIR / "form.js").read_text()
    assert "dataset.options" in script and "dataset.preset" in script
    # The script knows no option name of its own: they all come from the page.
    assert not any(f'"{name}"' in script for name in RESOURCE_OPTIONS)
