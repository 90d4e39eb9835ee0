"""A real browser (Debian's Chromium, driven by Playwright) walks the researcher's path:
login form -> announcement banner -> spawn form -> JupyterLab, with no news prompt.

Screenshots land in .testbed/screenshots/ for people to look at.
"""

from __future__ import annotations

import json
import shlex
import uuid

import pytest

from .browser_fixtures import shot
from .hubclient import node_exec, slurm_jobs
from .test_announcements import post_announcement
from .topology import COMPUTE_NODES, LOGIN

pytestmark = pytest.mark.testbed


def test_researcher_logs_in_sees_the_banner_and_starts_jupyterlab(
    page, access, admin, bob, no_server
):
    notice = f"Scheduled maintenance on Friday ({uuid.uuid4().hex[:6]})"
    assert post_announcement(admin, notice).status_code == 200
    password = next(u["password"] for u in access["users"] if u["name"] == "bob")

    page.goto(f"{access['hub_url']}/hub/login")
    page.fill("#username_input", "bob")
    page.fill("#password_input", password)
    page.click("#login_submit")

    # The spawn form, with the announcement banner on top.
    page.wait_for_selector("select[name=profile]", timeout=30_000)
    banner = page.locator("#hpchub-announcement")
    banner.wait_for(state="visible", timeout=15_000)
    assert notice in banner.inner_text()
    assert page.locator("#hpchub-partition option").count() >= 1
    shot(page, "spawn-form")

    page.select_option("select[name=profile]", "small")
    # The profile fills in the resources (JavaScript of the form).
    assert page.input_value("input[name=cores]") == "1"
    page.click("input[type=submit], button[type=submit]")

    page.wait_for_url("**/user/bob/lab**", timeout=180_000)
    page.wait_for_selector(".jp-LabShell", timeout=120_000)
    page.wait_for_timeout(3000)  # give JupyterLab time to show any start-up prompts
    shot(page, "jupyterlab")
    assert page.get_by_text("official Jupyter news").count() == 0

    (job,) = slurm_jobs("bob")
    assert job.name == "jupyter-testbed-small" and job.node in COMPUTE_NODES


# alice's page: as whoever opens it, try to act on the hub (create a token, read the token
# page with its xsrf token, see the hub's cookies). The outcome goes into the page title.
EVIL_PAGE = """<!doctype html><html><head><title>loading</title></head><body><script>
(async () => {
  const hub = HUB, out = {};
  try {
    const r = await fetch(hub + "/hub/api/users/" + VICTIM + "/tokens", {
      method: "POST", credentials: "include",
      headers: {"Content-Type": "application/json"}, body: JSON.stringify({note: "stolen"})});
    out.create = r.status + " " + (await r.text()).slice(0, 80);
  } catch (e) { out.create = "blocked: " + e.name; }
  try {
    const r = await fetch(hub + "/hub/token", {credentials: "include"});
    out.read = r.status + " " + (await r.text()).slice(0, 2000);
  } catch (e) { out.read = "blocked: " + e.name; }
  out.cookies = document.cookie;
  out.origin = location.origin;
  document.title = "DONE " + JSON.stringify(out);
})();
</script></body></html>"""


def test_a_users_page_cannot_act_on_the_hub_as_the_admin_who_opens_it(
    page, access, admin, alice, no_server
):
    """alice controls her own server: here through her jupyter_server config, which serves a
    page of hers as a static file (no sandbox, no login needed to open it)."""
    hub = access["hub_url"].rstrip("/")
    html = EVIL_PAGE.replace("HUB", json.dumps(hub)).replace("VICTIM", json.dumps(admin.name))
    config = "c.ServerApp.extra_static_paths = ['/home/alice/.hpchub-evil']\n"
    node_exec(
        LOGIN,
        "mkdir -p ~/.jupyter ~/.hpchub-evil && "
        f"printf %s {shlex.quote(config)} > ~/.jupyter/jupyter_server_config.py && "
        f"printf %s {shlex.quote(html)} > ~/.hpchub-evil/hpchub-evil.html",
        user="alice",
    )
    try:
        alice.start_server({"profile": "small"})
        tokens = admin.api("GET", f"/users/{admin.name}/tokens").json()["api_tokens"]
        before = {t["id"] for t in tokens}

        page.goto(f"{hub}/hub/login")
        page.fill("#username_input", admin.name)
        page.fill("#password_input", access["admin"]["password"])
        page.click("#login_submit")
        page.wait_for_url("**/hub/**", timeout=30_000)
        page.goto(f"{alice.server_base}/user/alice/static/hpchub-evil.html")
        shot(page, "user-page-attack")
        page.wait_for_function("document.title.startsWith('DONE ')", timeout=60_000)
        outcome = json.loads(page.title()[len("DONE ") :])
    finally:
        node_exec(LOGIN, "rm -rf ~/.hpchub-evil ~/.jupyter/jupyter_server_config.py", user="alice")

    # The page ran, at alice's own origin, not the hub's ...
    assert outcome["origin"] == alice.server_base, outcome
    # ... and could not act on the hub as the admin: no token, no token page, no cookies.
    assert not outcome["create"].startswith(("200", "201")), outcome
    assert outcome["read"].startswith("blocked"), outcome
    assert "jupyterhub" not in outcome["cookies"], outcome
    tokens = admin.api("GET", f"/users/{admin.name}/tokens").json()["api_tokens"]
    assert {t["id"] for t in tokens} == before
