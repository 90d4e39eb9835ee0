"""A real browser for the UI tests: Debian's Chromium driven by Playwright (conftest.py
makes `browser` and `page` available to every test module). Screenshots land in
.testbed/screenshots/ for people to look at.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .hubclient import REPO

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


def shot(page, name: str, full_page: bool = True) -> None:
    """The whole page (not only the viewport), for the docs."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=full_page)


def browser_login(page, access: dict, name: str) -> None:
    """Log a demo user in through the hub's login form; returns once the hub let them past it."""
    password = next(u["password"] for u in access["users"] if u["name"] == name)
    page.goto(f"{access['hub_url']}/hub/login")
    page.fill("#username_input", name)
    page.fill("#password_input", password)
    page.click("#login_submit")
    page.wait_for_url(lambda url: "/hub/login" not in url, timeout=30_000)
