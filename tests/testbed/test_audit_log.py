"""The audit log has one JSON line per security event that the tests cause (docs/security.md)."""

from __future__ import annotations

import json
import uuid

import pytest

from .hubclient import HubUser, node_exec, slurm_jobs
from .test_announcements import post_announcement
from .topology import LOGIN

pytestmark = pytest.mark.testbed


def audit_lines(since: int) -> list[dict]:
    out = node_exec(LOGIN, f"journalctl -t hpchub-audit -o cat --no-pager --since @{since}")
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def find(lines: list[dict], event: str, **fields) -> dict:
    matches = [
        line
        for line in lines
        if line["event"] == event and all(line.get(k) == v for k, v in fields.items())
    ]
    assert matches, f"no {event} {fields} in the audit log:\n" + "\n".join(map(str, lines))
    return matches[-1]


def test_security_events_are_audited_as_json_lines(access, admin, no_server):
    since = int(node_exec(LOGIN, "date +%s").strip())
    password = next(u["password"] for u in access["users"] if u["name"] == "alice")
    alice = HubUser(access, "alice", password)
    assert "/hub/login" in alice.login(password="not-" + password).url  # refused
    assert "/hub/login" not in alice.login().url
    token = alice.create_token(note="audit test")
    refused = alice.request_server({"profile": "small", "cores": 999})
    assert refused.status_code == 400
    alice.start_server({"profile": "small"})
    (job,) = [j for j in slurm_jobs("alice") if j.state == "RUNNING"]
    alice.stop_server()
    text = f"audit test {uuid.uuid4().hex[:8]}"
    assert post_announcement(admin, text).status_code == 200

    lines = audit_lines(since)
    failure = find(lines, "login", outcome="failure", user="alice")
    assert failure["source"]  # the client address
    find(lines, "login", outcome="success", user="alice")
    find(lines, "token_created", actor="alice", user="alice", status=201)
    assert "at most" in find(lines, "spawn_refused", user="alice")["reason"]
    spawn = find(lines, "spawn", user="alice", job_id=job.job_id)
    assert (spawn["profile"], spawn["cores"], spawn["memory_gb"]) == ("small", 1, 2)
    find(lines, "server_stop", actor="alice", user="alice")
    find(lines, "announcement", actor=admin.name, text=text)
    # No secret ever reaches the audit log.
    raw = json.dumps(lines)
    assert password not in raw and token not in raw and alice.token not in raw
