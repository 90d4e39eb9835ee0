"""Sessions users can see and control (issue 9), through the public URL and a real browser.

- a queued server: the pending page and the REST progress stream show the job id, Slurm's
  reason in plain words and, when Slurm has one, the expected start; Cancel leaves no job;
- two named servers: two Slurm jobs, a card each on the home page with job id, node and
  remaining walltime; Stop on a card cancels its job;
- a job that reaches its walltime: the server shows stopped, with the reason (TIMEOUT).

Screenshots land in .testbed/screenshots/ (copies in docs/images/).
"""

from __future__ import annotations

import json
import re
import time

import pytest

from .browser_fixtures import browser_login, shot
from .hubclient import REPO, node_exec, slurm_jobs
from .topology import COMPUTE_NODES, LOGIN

pytestmark = pytest.mark.testbed

# Plain words the hub uses for the reasons a full cluster gives (sessions.REASONS).
QUEUE_WORDS = ("nodes it needs are busy", "higher priority are ahead")


TIMINGS = REPO / ".testbed" / "sessions-timings.jsonl"


def record(what: str, seconds: float) -> None:
    """Keep a measured latency for docs/benchmarks.md (not an assertion)."""
    with TIMINGS.open("a") as out:
        out.write(
            json.dumps({"what": what, "seconds": round(seconds, 2), "at": time.time()}) + "\n"
        )


def wait_for(check, timeout: float, what: str, poll: float = 1.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(poll)


def sessions_of(user) -> dict:
    response = user.api("GET", f"/hpchub/sessions/{user.name}")
    assert response.status_code == 200, response.text
    return {s["name"]: s for s in response.json()["sessions"]}


def progress_events(user, server: str = "", limit: int = 8) -> list[dict]:
    """The first `limit` events of a starting server's progress stream (REST API)."""
    path = (
        f"/users/{user.name}/servers/{server}/progress"
        if server
        else (f"/users/{user.name}/server/progress")
    )
    response = user.api("GET", path, stream=True, timeout=60)
    assert response.status_code == 200, response.text
    events = []
    for line in response.iter_lines(decode_unicode=True):
        if line and line.startswith("data:"):
            events.append(json.loads(line[5:]))
            if len(events) >= limit or events[-1].get("failed") or events[-1].get("ready"):
                break
    response.close()
    return events


@pytest.fixture
def full_cluster(bob):
    """Every compute node taken by one of bob's exclusive (non-notebook) jobs, 5 min each."""
    ids = []
    for _ in COMPUTE_NODES:
        out = node_exec(
            LOGIN,
            "sbatch --parsable --exclusive -N1 --time=5 -J fill-the-cluster -o /dev/null "
            "--wrap 'sleep 300'",
            user="bob",
        )
        ids.append(out.strip().split(";")[0])
    try:
        wait_for(
            lambda: (
                all(j.state == "RUNNING" for j in slurm_jobs("bob") if j.job_id in ids)
                and len([j for j in slurm_jobs("bob") if j.job_id in ids]) == len(ids)
            ),
            60,
            "bob's jobs to fill the cluster",
        )
        yield ids
    finally:
        node_exec(LOGIN, f"scancel {' '.join(ids)}", user="bob", check=False)


def test_a_queued_server_shows_its_job_reason_and_expected_start_and_cancel_leaves_no_job(
    page, access, alice, no_server, full_cluster
):
    response = alice.request_server({"profile": "small"})
    assert response.status_code == 202, response.text

    # The REST progress stream: the job id and Slurm's reason, in words and as the code.
    events = progress_events(alice)
    queued = [e for e in events if e.get("hpchub", {}).get("job_id")]
    assert queued, events
    job_id = queued[-1]["hpchub"]["job_id"]
    (job,) = [j for j in slurm_jobs("alice") if j.job_id == job_id]
    assert job.state == "PENDING"
    event = queued[-1]
    assert event["hpchub"]["job_state"] == "PENDING"
    assert event["hpchub"]["reason"] in ("Resources", "Priority"), event
    assert any(words in event["hpchub"]["reason_text"] for words in QUEUE_WORDS), event
    assert f"Job {job_id} is waiting in the queue" in event["message"]
    assert event["hpchub"]["reason_text"] in event["message"]

    # Slurm's expected start (its backfill scheduler sets one within bf_interval, 30 s):
    # no later than the end of bob's 5-minute jobs.
    def expected_start():
        return sessions_of(alice)[""]["expected_start"]

    start = wait_for(expected_start, 90, "an expected start from Slurm", poll=2)
    assert time.time() - 5 < start < time.time() + 6 * 60
    later = progress_events(alice, limit=2)
    assert any(
        "Expected start:" in e["message"] and e["hpchub"]["expected_start"] for e in later
    ), later

    # The pending page (server-rendered card, live fields from sessions.js).
    browser_login(page, access, "alice")
    page.goto(f"{access['hub_url']}/hub/spawn-pending/alice")
    card = page.locator("#hpchub-session-default")
    card.wait_for(timeout=30_000)
    text = card.inner_text()
    assert job_id in text and "queued" in text
    assert any(words in text for words in QUEUE_WORDS), text
    assert "Expected start" in text and "Slurm gives none yet" not in text, text
    page.wait_for_function(
        "document.getElementById('progress-message').textContent.includes('Expected start')",
        timeout=30_000,
    )
    shot(page, "pending-page")

    # Cancel: back home, no server, no job of alice's left in the queue.
    clicked = time.monotonic()
    page.click("#hpchub-session-default .hpchub-stop")
    wait_for(lambda: alice.server_model() is None, 30, "alice's server to be gone")
    wait_for(lambda: not slurm_jobs("alice"), 15, "alice's job to leave the queue", poll=0.2)
    record("cancel click -> job gone from squeue", time.monotonic() - clicked)
    home = alice.session.get(f"{alice.base}/hub/home", timeout=30).text
    assert f"Job {job_id} was cancelled while queued" in home


def test_two_named_servers_run_as_two_jobs_each_with_its_card(page, access, alice, no_server):
    names = ("one", "two")
    try:
        for name in names:
            response = alice.api("POST", f"/users/alice/servers/{name}", json={"profile": "small"})
            assert response.status_code in (201, 202), response.text
        for name in names:
            wait_for(
                lambda n=name: (
                    alice.api("GET", "/users/alice").json()["servers"].get(n, {}).get("ready")
                ),
                180,
                f"named server {name}",
            )
        jobs = {j.job_id: j for j in slurm_jobs("alice") if j.state == "RUNNING"}
        assert len(jobs) == 2, jobs
        sessions = sessions_of(alice)
        assert {sessions[n]["job_id"] for n in names} == set(jobs)
        for name in names:
            s = sessions[name]
            assert s["node"] == jobs[s["job_id"]].node, s
            assert 0 < s["remaining_seconds"] <= 3600, s

        # The home page: a card per server with its job, node and remaining walltime.
        browser_login(page, access, "alice")
        page.goto(f"{access['hub_url']}/hub/home")
        for name in names:
            card = page.locator(f"#hpchub-session-{name}")
            text = card.inner_text()
            job = jobs[sessions[name]["job_id"]]
            assert job.job_id in text and job.node in text, text
            assert re.search(r"Walltime left\s+\d+ min", text), text
            assert card.locator("a.hpchub-open").count() == 1
        # JavaScript counts the remaining time down (the API refreshes the fields).
        page.wait_for_function(
            "document.querySelector('#hpchub-session-one [data-field=remaining_text]')"
            ".textContent.match(/^\\d+ min$/)",
            timeout=15_000,
        )
        shot(page, "home-sessions")

        # Stop on one card cancels that job only.
        stopped = sessions["one"]["job_id"]
        page.click("#hpchub-session-one .hpchub-stop")
        page.wait_for_url("**/hub/home", timeout=30_000)
        wait_for(
            lambda: stopped not in {j.job_id for j in slurm_jobs("alice")},
            30,
            f"job {stopped} to leave the queue",
        )
        left = {j.job_id for j in slurm_jobs("alice")}
        assert left == {sessions["two"]["job_id"]}
    finally:
        for name in names:
            alice.api("DELETE", f"/users/alice/servers/{name}", json={"remove": True})
        wait_for(lambda: not slurm_jobs("alice"), 60, "alice's named servers to stop")


def test_jupyterlab_shows_the_walltime_left_warns_and_the_ended_job_shows_stopped(
    page, access, alice, no_server
):
    """Two minutes of walltime (the REST API takes fractions of an hour; the form's minimum
    is 15 min): JupyterLab's clock and its warning (10 min before the end by default, so at
    once), then the job's end: the hub shows the server stopped, with the reason."""
    alice.start_server({"profile": "small", "walltime_hours": 2 / 60})
    (job,) = slurm_jobs("alice")
    running = sessions_of(alice)[""]
    assert running["status"] == "running" and 0 < running["remaining_seconds"] <= 120

    browser_login(page, access, "alice")
    page.goto(f"{alice.server_base}/user/alice/lab")
    clock = page.locator("#hpchub-walltime")
    clock.wait_for(timeout=90_000)
    assert re.fullmatch(r"Walltime left: [01] min \d\d s", clock.inner_text()), clock.inner_text()
    warning = page.get_by_text("Your notebook job ends in")
    warning.first.wait_for(timeout=15_000)
    shot(page, "jupyterlab-walltime")

    wait_for(lambda: alice.server_model() is None, 240, "the hub to see the job end", poll=1)
    record("walltime end (Slurm EndTime) -> hub shows stopped", time.time() - running["ends_at"])
    assert not [j for j in slurm_jobs("alice") if j.job_id == job.job_id]
    last = sessions_of(alice)[""]
    assert last["status"] == "stopped"
    assert last["last_end"]["job_id"] == job.job_id
    assert last["last_end"]["state"] == "TIMEOUT", last
    page.goto(f"{access['hub_url']}/hub/home")
    card = page.locator("#hpchub-session-default")
    assert f"Job {job.job_id} reached its walltime (Slurm: TIMEOUT" in card.inner_text()
    shot(page, "home-walltime-ended")


def test_bob_can_neither_read_nor_stop_alices_sessions(alice, bob, alice_server):
    """The sessions API, the home page and the Stop form are alice's alone: bob (a logged-in
    cluster user with his own token) learns nothing about her job and cannot end it."""
    job = alice_server["job"]
    mine = sessions_of(alice)[""]
    assert mine["job_id"] == job.job_id and mine["node"] == job.node

    # Her sessions through the API, with bob's token and with bob's browser cookie.
    for how, response in (
        ("token", bob.api("GET", "/hpchub/sessions/alice")),
        (
            "cookie",
            bob.session.get(
                f"{bob.base}/hub/api/hpchub/sessions/alice",
                headers=bob.xsrf_headers(),
                timeout=30,
            ),
        ),
    ):
        assert response.status_code in (403, 404), (how, response.status_code, response.text)
        assert job.job_id not in response.text and job.node not in response.text, how
    # Nobody logged in: no data either.
    anonymous = alice.session.__class__()
    anonymous.trust_env = False
    response = anonymous.get(
        f"{alice.base}/hub/api/hpchub/sessions/alice", verify=alice.ca, timeout=30
    )
    assert response.status_code in (401, 403), response.status_code
    assert job.job_id not in response.text

    # His home page shows his own (no) sessions, never hers.
    home = bob.session.get(f"{bob.base}/hub/home", timeout=30)
    assert home.status_code == 200 and "hpchub-session" in home.text
    assert f"Job {job.job_id}" not in home.text and job.node not in home.text

    # Stopping: the page form acts on the logged-in user's own servers only (bob has none,
    # so he gets a 404), and JupyterHub's API refuses him alice's server.
    stop = bob.session.post(
        f"{bob.base}/hub/hpchub/stop",
        data={"server": "", "_xsrf": bob.session.cookies.get("_xsrf", path="/hub/")},
        allow_redirects=False,
        timeout=30,
    )
    assert stop.status_code == 404, (stop.status_code, stop.text[:300])
    assert bob.api("DELETE", "/users/alice/server").status_code in (403, 404)
    # A cross-site form post in alice's own browser (her cookie, no xsrf token) is refused.
    forged = alice.session.post(
        f"{alice.base}/hub/hpchub/stop", data={"server": ""}, allow_redirects=False, timeout=30
    )
    assert forged.status_code == 403, (forged.status_code, forged.text[:300])

    time.sleep(2)  # a stop would have scancel'ed the job by now
    assert job.job_id in {j.job_id for j in slurm_jobs("alice") if j.state == "RUNNING"}
    assert alice.server_model() and alice.server_model().get("ready")
