"""A real browser (Debian's Chromium, driven by Playwright) walks the researcher's path:
login form -> announcement banner -> spawn form -> JupyterLab, with no news prompt.

Screenshots land in .testbed/screenshots/ for people to look at.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest

from .hubclient import REPO, slurm_jobs
from .test_announcements import post_announcement
from .topology import COMPUTE_NODES

pytestmark = pytest.mark.testbed

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = REPO / ".testbed" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Chromium resolves *.localhost to the loopback itself; say so explicitly anyway.
    "--host-resolver-rules=MAP *.localhost 127.0.0.1",
]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Chromium is missing: `make test` installs Debian's chromium"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    # The testbed's certificate is self-signed; TLS itself is checked in test_hub_security.
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 800})
    page = context.new_page()
    yield page
    context.close()


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"))


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
