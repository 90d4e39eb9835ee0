"""The spawn form offers what the cluster has, and escapes what it shows."""

import dataclasses
import json
import re

from hpchub_config.form import FORM_SCRIPT_PATH, STATIC_DIR, render_form
from hpchub_config.options import RESOURCE_OPTIONS, UserAccess
from hpchub_config.settings import Profile, SpawnerSettings
from test_cluster_options import ALICE, RESERVATIONS

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


def test_form_lists_profiles_and_a_table_of_partitions_with_free_resources(partitions):
    html = render(partitions)
    assert 'name="profile"' in html and 'value="small"' in html and 'value="big"' in html
    assert "1 core &lt;fast&gt;" in html  # escaped
    table = re.search(r'<table id="hpchub-partitions".*?</table>', html).group(0)
    assert '<th scope="row">batch</th><td>4 cores, 7 GB, 8 h</td>' in table
    assert '<th scope="row">gpu</th><td>8 cores, 62 GB, 24 h, 2 GPUs</td>' in table
    for name in ("partition", "cores", "memory_gb", "walltime_hours", "gpus"):
        assert f'name="{name}"' in html
        # Every field has a label and a description.
        assert f'<label for="hpchub-{name}"' in html
        assert f'id="hpchub-{name}-help"' in html
    assert 'name="account"' not in html and 'name="reservation"' not in html


def test_partitions_show_what_is_free_now_with_gpu_types_and_features(partitions):
    busy = {
        "gpu": dataclasses.replace(
            partitions["gpu"],
            free_cores=5,
            free_memory_mb=20480,
            gpu_types=(("a100", 2),),
            free_gpus=(("a100", 1),),
            node_features=(("avx512", "nvlink"),),
        )
    }
    html = render(busy)
    assert "<td>5 cores, 20 GB</td><td>1 a100</td><td>avx512, nvlink</td>" in html
    assert '<option value="a100" data-partitions="[&quot;gpu&quot;]">a100</option>' in html
    assert 'name="constraint"' in html and '<option value="nvlink"' in html


def test_no_gpu_field_without_gpus_and_no_resources_when_fixed(partitions):
    cpu_only = {"batch": partitions["batch"]}
    html = render(cpu_only)
    assert 'name="gpus"' not in html and 'name="gpu_type"' not in html
    fixed = render(cpu_only, allow_custom_resources=False)
    assert 'name="cores"' not in fixed and 'name="profile"' in fixed


def test_values_are_shown_and_the_preset_fills_the_rest(partitions):
    html = render(partitions, values={"profile": "big", "cores": "3"})
    big = re.search(r'<option value="big" data-preset="([^"]*)" data-locked="\[\]" selected>', html)
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
        "account": "",
        "qos": "",
        "reservation": "",
        "constraint": "",
    }
    assert re.search(r'name="cores"[^>]*value="3"', html)
    assert re.search(r'name="memory_gb"[^>]*value="4"', html)
    assert re.search(r'name="walltime_hours"[^>]*value="4"', html)


def test_accounts_their_qos_and_usable_reservations_are_offered(partitions):
    access = UserAccess("alice", ALICE, RESERVATIONS, ("hpcusers",))
    html = render(partitions, access=access, values={"account": "physics"})
    assert '<option value="">Default account (hpcusers)</option>' in html
    assert '<option value="physics" selected>physics</option>' in html
    assert (
        '<option value="interactive" data-account="physics">interactive (physics)</option>' in html
    )
    assert (
        '<option value="normal" data-account="hpcusers" data-default-account="true">'
        "normal (hpcusers)</option>" in html
    )
    assert "hpcusers: normal; physics: interactive, normal." in html
    # alice's reservations (by name, through physics); not the inactive one.
    assert '<option value="alice-only">' in html and '<option value="physics">' in html
    assert 'value="later"' not in html


def test_locked_fields_are_read_only_and_group_profiles_hidden(partitions):
    settings = dataclasses.replace(
        SETTINGS,
        profiles=[
            Profile(
                key="gpu1",
                display_name="GPU",
                partition="gpu",
                gpus=1,
                locked=["partition", "gpus"],
                groups=["gpu-project"],
            ),
            Profile(key="small", display_name="Small"),
        ],
    )
    member = UserAccess("alice", groups=("gpu-project",))
    html = render_form(settings, partitions, access=member)
    assert re.search(r'<select class="form-select" id="hpchub-partition"[^>]* disabled>', html)
    assert re.search(r'name="gpus"[^>]*value="1" required readonly>', html)
    assert 'data-locked="[&quot;partition&quot;, &quot;gpus&quot;]"' in html
    assert "fields it locks are read-only" in html
    other = render_form(settings, partitions, access=UserAccess("bob", groups=("hpcusers",)))
    assert 'value="gpu1"' not in other and "readonly" not in other


def test_notes_and_errors_by_field_are_shown_accessibly(partitions):
    html = render(
        partitions,
        values={"cores": "99"},
        notes=["Your last partition 'old' was dropped: <gone>."],
        errors={"cores": "99 cores requested, but at most 4", "colour": "unknown option 'colour'"},
    )
    assert '<div id="hpchub-notes" class="alert alert-info" role="status">' in html
    assert "<li>Your last partition &#x27;old&#x27; was dropped: &lt;gone&gt;.</li>" in html
    assert 'id="hpchub-errors" class="alert alert-danger" role="alert"' in html
    assert "Nothing was submitted" in html and "<li>unknown option &#x27;colour&#x27;</li>" in html
    assert re.search(
        r'id="hpchub-cores" name="cores" aria-invalid="true" '
        r'aria-describedby="hpchub-cores-help hpchub-cores-error"',
        html,
    )
    assert '<div id="hpchub-cores-error" class="invalid-feedback d-block">99 cores' in html


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


def test_a_qos_of_two_accounts_is_selected_under_the_chosen_account(partitions):
    both = dataclasses.replace(ALICE, qos={"hpcusers": ("normal",), "physics": ("normal",)})
    access = UserAccess("alice", both, {}, ())
    html = render(partitions, access=access, values={"account": "physics", "qos": "normal"})
    assert '<option value="normal" data-account="physics" selected>' in html
    assert len(re.findall(r'<option value="normal"[^>]* selected>', html)) == 1
    html = render(partitions, access=access, values={"qos": "normal"})
    assert (
        '<option value="normal" data-account="hpcusers" data-default-account="true" selected>'
        in html
    )
