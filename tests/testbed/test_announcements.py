"""Announcements: seeded from the inventory, posted by admins, shown to users, persistent."""

from __future__ import annotations

import re
import time
import uuid

import pytest

from .hubclient import HubUser, node_exec
from .test_hub_restarts import wait_hub_api
from .topology import LOGIN

pytestmark = pytest.mark.testbed

SEEDED = "Testbed maintenance window: Sundays 02:00-04:00 UTC."


def latest(user: HubUser) -> str:
    response = user.session.get(f"{user.service('announcement')}/latest", timeout=30)
    assert response.status_code == 200
    return response.json()["announcement"]


def all_announcements(user: HubUser) -> list[str]:
    response = user.session.get(f"{user.service('announcement')}/list?limit=50", timeout=30)
    return [a["announcement"] for a in response.json()]


def post_announcement(user: HubUser, text: str):
    """Use the service's admin page as a person would: open it (OAuth), submit its form."""
    page = user.session.get(f"{user.service('announcement')}/", timeout=30)
    if page.status_code != 200:
        return page
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text).group(1)
    return user.session.post(
        f"{user.service('announcement')}/update",
        data={"announcement": text, "_xsrf": xsrf},
        timeout=30,
    )


def test_inventory_announcement_is_seeded(alice):
    assert SEEDED in all_announcements(alice)


def test_admin_posts_an_announcement_that_users_see(admin, alice):
    text = f"GPU nodes back in service ({uuid.uuid4().hex[:6]})"
    response = post_announcement(admin, text)
    assert response.status_code == 200
    assert latest(alice) == text
    # The hub's pages carry the banner that shows the latest announcement.
    home = alice.session.get(f"{alice.base}/hub/home", timeout=30).text
    assert 'id="hpchub-announcement"' in home
    assert "services/announcement/latest" in home


def test_users_cannot_post_announcements(alice):
    before = latest(alice)
    response = post_announcement(alice, "I am not an admin")
    assert response.status_code == 403
    assert latest(alice) == before


def test_admin_clears_the_banner_with_an_empty_announcement(admin, alice):
    post_announcement(admin, f"temporary {uuid.uuid4().hex[:6]}")
    assert latest(alice)
    post_announcement(admin, "")
    assert latest(alice) == ""


def test_announcements_persist_across_a_hub_restart(admin, alice):
    text = f"Persistent notice {uuid.uuid4().hex[:6]}"
    post_announcement(admin, text)
    node_exec(LOGIN, "systemctl restart jupyterhub")
    wait_hub_api()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if latest(alice) == text:
                break
        except Exception:  # noqa: BLE001 - the service is still starting
            pass
        time.sleep(0.5)
    assert latest(alice) == text
    # The seeded announcement was not added a second time.
    assert all_announcements(alice).count(SEEDED) == 1
