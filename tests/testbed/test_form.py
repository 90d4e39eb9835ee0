"""The spawn form that knows the cluster (issue 8), in a real browser (Debian's Chromium)
through the public URL, against the testbed's real Slurm: partitions with what is free now,
GPU types, alice's accounts and the QOS of each, her reservation, a profile that locks
fields; a launch link fills the form and starts the server it describes only after Start;
the form comes back with the last choices; a group-only profile is invisible and refused
for bob (not in gpu-project).

Screenshots land in .testbed/screenshots/form-*.png (copies in docs/images/).
"""

from __future__ import annotations

import time
import uuid

import pytest

from .browser_fixtures import browser_login, shot
from .hubclient import node_exec, slurm_jobs
from .slurm_inventory import GPU, GPU_NODE, GPU_PARTITION
from .topology import CONTROLLER, LOGIN

pytestmark = pytest.mark.testbed

GROUP_PROFILE = "gpu-a100"  # for gpu-project (alice), inventories/testbed/group_vars/all/hub.yml


def log_in(page, access, name: str) -> None:
    browser_login(page, access, name)
    page.wait_for_selector("select[name=profile]", timeout=30_000)


def options_of(page, name: str) -> list[str]:
    return page.eval_on_selector_all(f"select[name={name}] option", "os => os.map(o => o.value)")


@pytest.fixture
def alice_reservation(alice, no_server):
    """A reservation alice may use (by name), on the node that is not the GPU node."""
    name = f"hpchub-form-{uuid.uuid4().hex[:6]}"
    node = "node1" if GPU_NODE != "node1" else "node2"
    node_exec(
        CONTROLLER,
        f"scontrol create reservation ReservationName={name} Users=alice Nodes={node} "
        "StartTime=now Duration=10 Flags=IGNORE_JOBS",
    )
    try:
        yield name
    finally:
        # Slurm refuses to delete a reservation with a job in it: servers stop first.
        if alice.server_model() is not None:
            alice.stop_server()
        deadline = time.monotonic() + 60
        while name in node_exec(CONTROLLER, "scontrol show reservation -o"):
            node_exec(CONTROLLER, f"scontrol delete Reservation={name}", check=False)
            assert time.monotonic() < deadline, f"reservation {name} could not be deleted"
            time.sleep(2)


def test_the_form_shows_the_cluster_as_alice_may_use_it(page, access, alice_reservation):
    log_in(page, access, "alice")
    # The hub's cluster data is at most jupyterhub_cluster_info_ttl (10 s) old: reload
    # until the new reservation shows (the page itself never waits for slurmctld).
    deadline = time.monotonic() + 40
    while alice_reservation not in options_of(page, "reservation"):
        assert time.monotonic() < deadline, options_of(page, "reservation")
        page.wait_for_timeout(3000)
        page.reload()
        page.wait_for_selector("select[name=profile]", timeout=30_000)
    table = page.inner_text("#hpchub-partitions")
    assert "batch" in table and GPU_PARTITION in table
    # Free now: idle cores and memory per partition, GPUs by type.
    gpu_row = page.inner_text(f"#hpchub-partitions tr[data-partition={GPU_PARTITION}]")
    assert f"{GPU['count']} {GPU['type']}" in gpu_row, gpu_row
    assert "cores" in gpu_row and "GB" in gpu_row
    assert GPU["type"] in options_of(page, "gpu_type")
    assert "avx512" in options_of(page, "constraint")
    # alice's accounts, and the QOS each allows (physics: interactive).
    assert set(options_of(page, "account")) >= {"", "hpcusers", "physics"}
    assert "chemistry" not in options_of(page, "account")
    page.select_option("select[name=account]", "physics")
    visible_qos = page.eval_on_selector_all(
        "select[name=qos] option", "os => os.filter(o => !o.hidden).map(o => o.value)"
    )
    assert "interactive" in visible_qos and "long" not in visible_qos
    # Every field has a label; the group profile is offered to alice (gpu-project).
    for name in ("profile", "partition", "cores", "memory_gb", "account", "qos", "reservation"):
        assert page.locator(f"label[for=hpchub-{name}]").count() == 1
    assert GROUP_PROFILE in options_of(page, "profile")
    shot(page, "form-cluster")
    # A profile that locks its partition and GPU type: read-only in the form.
    page.select_option("select[name=profile]", GROUP_PROFILE)
    assert page.is_disabled("select[name=partition]")
    assert page.input_value("select[name=partition]") == GPU_PARTITION
    assert page.input_value("input[name=gpus]") == "1"
    shot(page, "form-locked")
    # Keyboard: Tab moves from the profile menu to the next field.
    page.focus("select[name=profile]")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.name") != "profile"


def test_a_launch_link_fills_the_form_starts_after_start_and_is_remembered(
    page, access, alice, no_server
):
    log_in(page, access, "alice")
    link = (
        f"{access['hub_url']}/hub/spawn?profile=small&cores=2&walltime_hours=0.5"
        "&account=physics&qos=interactive"
    )
    page.goto(link)
    page.wait_for_selector("select[name=profile]", timeout=30_000)
    assert page.input_value("input[name=cores]") == "2"
    assert page.input_value("select[name=account]") == "physics"
    assert page.input_value("select[name=qos]") == "interactive"
    assert page.locator("#hpchub-errors").count() == 0
    shot(page, "form-link")
    # Nothing starts before the user confirms.
    page.wait_for_timeout(2000)
    assert alice.server_model() is None and slurm_jobs("alice") == []
    page.click("input[type=submit], button[type=submit]")
    alice.wait_ready(timeout=180)
    (job,) = slurm_jobs("alice")
    info = node_exec(LOGIN, f"scontrol show job {job.job_id}")
    assert "NumCPUs=2" in info and "Account=physics" in info and "QOS=interactive" in info
    assert "TimeLimit=00:30:00" in info
    alice.stop_server()

    # The form comes back with the last choices.
    page.goto(f"{access['hub_url']}/hub/spawn")
    page.wait_for_selector("select[name=profile]", timeout=30_000)
    assert page.input_value("input[name=cores]") == "2"
    assert page.input_value("input[name=walltime_hours]") == "0.5"
    assert page.input_value("select[name=account]") == "physics"
    assert page.input_value("select[name=qos]") == "interactive"
    shot(page, "form-remembered")

    # A link with invalid values: the form names each field; nothing is submitted.
    page.goto(f"{access['hub_url']}/hub/spawn?profile=small&cores=999&account=chemistry")
    page.wait_for_selector("#hpchub-errors", timeout=30_000)
    errors = page.inner_text("#hpchub-errors")
    assert "999 cores requested" in errors
    assert "account: you cannot use Slurm account 'chemistry'" in errors
    assert page.get_attribute("input[name=cores]", "aria-invalid") == "true"
    shot(page, "form-link-errors")
    page.wait_for_timeout(2000)
    assert alice.server_model() is None and slurm_jobs("alice") == []


def test_a_group_only_profile_is_invisible_and_refused_for_bob(page, access, bob, no_server):
    log_in(page, access, "bob")
    assert GROUP_PROFILE not in options_of(page, "profile")
    assert "small" in options_of(page, "profile")
    response = bob.request_server({"profile": GROUP_PROFILE})
    assert response.status_code == 400, response.text
    assert f"profile '{GROUP_PROFILE}' is not available to you" in response.json()["message"]
    page.goto(f"{access['hub_url']}/hub/spawn?profile={GROUP_PROFILE}")
    page.wait_for_selector("#hpchub-errors", timeout=30_000)
    assert f"profile '{GROUP_PROFILE}' is not available to you" in page.inner_text("#hpchub-errors")
    assert bob.server_model() is None and slurm_jobs("bob") == []
