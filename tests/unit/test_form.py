"""The spawn form offers what the cluster has, and escapes what it shows."""

from hpchub_config.form import render_form
from hpchub_config.options import ProfileSpec

PROFILES = [
    ProfileSpec(key="small", display_name="1 core <fast>", partition="batch"),
    ProfileSpec(key="big", display_name="Big", cores=2, memory_gb=4, walltime_hours=4),
]


def test_form_lists_profiles_partitions_and_limits(partitions):
    html = render_form(PROFILES, partitions, allow_custom_resources=True, max_walltime_hours=24)
    assert 'name="profile"' in html and 'value="small"' in html and 'value="big"' in html
    assert "1 core &lt;fast&gt;" in html  # escaped
    assert "batch: up to 4 cores, 7 GB, 8 h" in html
    assert "gpu: up to 8 cores, 62 GB, 24 h, 2 GPUs" in html
    for name in ("partition", "cores", "memory_gb", "walltime_hours", "gpus"):
        assert f'name="{name}"' in html
    assert 'name="account"' not in html


def test_no_gpu_field_without_gpus_and_no_resources_when_fixed(partitions):
    cpu_only = {"batch": partitions["batch"]}
    html = render_form(PROFILES, cpu_only, allow_custom_resources=True, max_walltime_hours=24)
    assert 'name="gpus"' not in html
    fixed = render_form(PROFILES, cpu_only, allow_custom_resources=False, max_walltime_hours=24)
    assert 'name="cores"' not in fixed and 'name="profile"' in fixed


def test_previous_choice_is_preselected_and_accounts_offered(partitions):
    html = render_form(
        PROFILES,
        partitions,
        allow_custom_resources=True,
        max_walltime_hours=24,
        accounts=["physics", "chem"],
        selected={"profile": "big"},
    )
    assert 'value="big" data-partition="batch"' in html
    assert 'data-gpus="0" selected>Big' in html
    assert 'name="account"' in html and 'value="chem"' in html
