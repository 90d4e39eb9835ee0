"""Announcements from the inventory are seeded once and persist next to admins' posts."""

import datetime
import json

from hpchub_config.announcements import SEED_AUTHOR, seed_queue

NOW = datetime.datetime(2026, 11, 25, 12, 0, 0)


def test_seeds_are_added_once(tmp_path):
    queue = tmp_path / "announcements.json"
    assert seed_queue(queue, ["Maintenance on <b>Monday</b>"], now=NOW) == 1
    assert seed_queue(queue, ["Maintenance on <b>Monday</b>"], now=NOW) == 0
    entries = json.loads(queue.read_text())
    assert entries == [
        {
            "user": SEED_AUTHOR,
            "announcement": "Maintenance on <strong>Monday</strong>",
            "timestamp": "2026-11-25T12:00:00",
        }
    ]


def test_admin_posts_are_kept_and_new_seeds_appended(tmp_path):
    queue = tmp_path / "announcements.json"
    queue.write_text(
        json.dumps(
            [{"user": "hubadmin", "announcement": "Welcome", "timestamp": "2026-11-24T10:00:00"}]
        )
    )
    assert seed_queue(queue, ["Scheduled downtime"], now=NOW) == 1
    texts = [e["announcement"] for e in json.loads(queue.read_text())]
    assert texts == ["Welcome", "Scheduled downtime"]


def test_seeded_html_is_sanitized(tmp_path):
    queue = tmp_path / "announcements.json"
    seed_queue(queue, ['<script>alert(1)</script>Downtime <a href="https://x.org">info</a>'])
    (entry,) = json.loads(queue.read_text())
    assert "<script>" not in entry["announcement"]
    assert "Downtime" in entry["announcement"]


def test_no_seeds_write_nothing(tmp_path):
    queue = tmp_path / "announcements.json"
    assert seed_queue(queue, []) == 0
    assert not queue.exists()
