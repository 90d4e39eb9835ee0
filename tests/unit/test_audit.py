"""The audit log: which hub requests are security events, and what a line holds."""

import asyncio
import json
import logging
import types

import pytest
from hpchub_config import audit


@pytest.fixture
def audit_lines():
    lines = []

    class Collect(logging.Handler):
        def emit(self, record):
            lines.append(json.loads(record.getMessage()))

    handler = Collect()
    audit.logger.addHandler(handler)
    yield lines
    audit.logger.removeHandler(handler)


@pytest.mark.parametrize(
    ("method", "path", "actor", "expected"),
    [
        ("DELETE", "/hub/api/users/alice/server", "alice", "server_stop"),
        ("DELETE", "/hub/api/users/alice/servers/gpu", "hubadmin", "server_stop"),
        ("POST", "/hub/api/users/alice/tokens", "alice", "token_created"),
        ("PATCH", "/hub/api/users/alice", "hubadmin", "admin_action"),
        ("POST", "/hub/api/users", "hubadmin", "admin_action"),
        ("DELETE", "/hub/api/groups/x", "hubadmin", "admin_action"),
        ("POST", "/hub/api/shutdown", "hubadmin", "admin_action"),
        ("GET", "/hub/api/users/alice/server", "alice", None),
        ("GET", "/hub/api/users", "hubadmin", None),
        ("POST", "/hub/api/users/alice/server", "alice", None),  # the spawner logs spawns
        ("POST", "/hub/api/users/alice/activity", "alice", None),
    ],
)
def test_which_requests_are_events(method, path, actor, expected):
    found = audit.request_event(method, path, 204, actor, "10.0.0.7")
    assert (found[0] if found else None) == expected
    if found:
        assert found[1]["actor"] == actor and found[1]["source"] == "10.0.0.7"


def test_stop_names_who_asked_and_which_server():
    name, fields = audit.request_event(
        "DELETE", "/hub/api/users/alice/servers/gpu", 202, "idle-culler", "127.0.0.1"
    )
    assert (name, fields["user"], fields["server"], fields["actor"]) == (
        "server_stop",
        "alice",
        "gpu",
        "idle-culler",
    )


def fake_handler(ip="192.0.2.4"):
    return types.SimpleNamespace(request=types.SimpleNamespace(remote_ip=ip))


class FakeAuthenticator:
    def __init__(self, answer):
        self.answer = answer

    async def get_authenticated_user(self, handler, data):
        return self.answer


class Audited(audit.AuditedLoginMixin, FakeAuthenticator):
    pass


def test_logins_are_recorded_with_source_and_never_the_password(audit_lines):
    data = {"username": "alice", "password": "s3cret-pw"}
    asyncio.run(Audited({"name": "alice"}).get_authenticated_user(fake_handler(), data))
    asyncio.run(Audited(None).get_authenticated_user(fake_handler("198.51.100.9"), data))
    assert [(line["event"], line["outcome"], line["source"]) for line in audit_lines] == [
        ("login", "success", "192.0.2.4"),
        ("login", "failure", "198.51.100.9"),
    ]
    assert "s3cret-pw" not in json.dumps(audit_lines)


def test_a_line_is_one_bounded_json_object(audit_lines):
    audit.event("login", outcome="failure", user="x" * 5000 + "\n{fake}", source="1.2.3.4")
    (line,) = audit_lines
    assert len(line["user"]) == 200 and line["event"] == "login" and "time" in line


def test_announcement_posts_are_recorded(audit_lines):
    from hpchub_config.announcements import record_posts

    posted = []

    class Queue:
        async def update(self, user, announcement=""):
            posted.append((user, announcement))

    queue = Queue()
    record_posts(queue)
    asyncio.run(queue.update("hubadmin", "Maintenance <b>tonight</b>"))
    assert posted == [("hubadmin", "Maintenance <b>tonight</b>")]
    (line,) = audit_lines
    assert (line["event"], line["actor"], line["text"]) == (
        "announcement",
        "hubadmin",
        "Maintenance <b>tonight</b>",
    )
