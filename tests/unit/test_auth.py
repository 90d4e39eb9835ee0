"""The hub's logins: names and uids it refuses itself, and how it asks hpchub-auth.

A fake sudo and a fake helper (shell scripts) stand in for the real ones; the real
helper is tested in test_helpers.py and, through PAM, on the testbed.
"""

from __future__ import annotations

import asyncio
import logging
import pwd
import time

import pytest
from hpchub_config.auth import ClusterPAMAuthenticator
from jupyterhub.auth import PAMAuthenticator

FAKE_SUDO = """#!/bin/sh
# sudo -n HELPER: record the arguments, run the helper
printf '%s\\n' "$@" > "{record}.sudo-args"
[ "$1" = "-n" ] || exit 64
shift
exec "$@"
"""

FAKE_HELPER = """#!/bin/sh
# like hpchub-auth: two lines on stdin, no arguments
printf '%s\\n' "$@" > "{record}.helper-args"
cat > "{record}.stdin"
if [ "$(sed -n 2p "{record}.stdin")" = "right horse" ]; then exit 0; fi
echo "hpchub-auth: refused: $(sed -n 1p "{record}.stdin"): Authentication failure" >&2
exit 1
"""


@pytest.fixture
def authenticator(tmp_path):
    record = tmp_path / "call"
    sudo = tmp_path / "sudo"
    helper = tmp_path / "hpchub-auth"
    sudo.write_text(FAKE_SUDO.format(record=record))
    helper.write_text(FAKE_HELPER.format(record=record))
    sudo.chmod(0o755)
    helper.chmod(0o755)
    auth = ClusterPAMAuthenticator(sudo=str(sudo), helper=str(helper), helper_timeout=10)
    auth.record = record
    return auth


def login(auth, username, password):
    return asyncio.run(auth.authenticate(None, {"username": username, "password": password}))


def test_the_password_goes_to_the_helper_on_stdin_only(authenticator):
    assert login(authenticator, "alice", "right horse") == "alice"
    record = authenticator.record
    assert record.with_suffix(".stdin").read_text() == "alice\nright horse\n"
    assert record.with_suffix(".sudo-args").read_text().split("\n")[:2] == [
        "-n",
        authenticator.helper,
    ]
    assert record.with_suffix(".helper-args").read_text() == "\n"  # no arguments at all


def test_a_wrong_password_is_refused_and_logged_without_it(authenticator, caplog):
    caplog.set_level(logging.DEBUG)
    assert login(authenticator, "alice", "wrong battery") is None
    assert "alice refused: hpchub-auth: refused: alice: Authentication failure" in caplog.text
    assert "battery" not in caplog.text


@pytest.mark.parametrize(
    ("username", "password"),
    [
        ("root;id", "right horse"),
        ("Alice", "right horse"),
        ("alice\n", "right horse"),
        ("-n", "right horse"),
        ("", "right horse"),
        ("alice", ""),
        ("alice", "right horse\nbob"),
        ("alice", "right\0horse"),
        ("alice", "x" * 2000),
    ],
)
def test_bad_names_and_passwords_never_reach_the_helper(authenticator, username, password):
    assert login(authenticator, username, password) is None
    assert not authenticator.record.with_suffix(".stdin").exists()


def test_a_helper_that_hangs_fails_the_login_in_time(tmp_path, authenticator, caplog):
    (tmp_path / "hpchub-auth").write_text("#!/bin/sh\nexec sleep 30\n")
    authenticator.helper_timeout = 0.5
    started = time.monotonic()
    assert login(authenticator, "alice", "right horse") is None
    assert time.monotonic() - started < 5
    assert "no answer from" in caplog.text


def test_a_missing_sudo_fails_the_login(authenticator):
    authenticator.sudo = "/nonexistent/sudo"
    assert login(authenticator, "alice", "right horse") is None


def test_no_pam_in_the_hub_process():
    # PAM (and its sessions) run only in the root helper; the hub reads no password hash.
    assert not issubclass(ClusterPAMAuthenticator, PAMAuthenticator)
    assert "open_sessions" not in ClusterPAMAuthenticator.class_trait_names()


@pytest.fixture
def accounts(monkeypatch):
    known = {
        "alice": pwd.struct_passwd(("alice", "x", 2001, 2000, "", "/home/alice", "/bin/bash")),
        "svc": pwd.struct_passwd(("svc", "x", 998, 998, "", "/var/lib/svc", "/bin/sh")),
    }

    def getpwnam(name):
        return known[name]

    monkeypatch.setattr(pwd, "getpwnam", getpwnam)


def test_system_accounts_are_never_allowed(accounts):
    auth = ClusterPAMAuthenticator(allow_all=True)
    assert auth.check_allowed("alice")
    assert not auth.check_allowed("svc")
    assert not auth.check_allowed("ghost")


@pytest.mark.parametrize("name", ["alice", "a_b.c-1", "_svc"])
def test_posix_names_are_valid(name):
    assert ClusterPAMAuthenticator().validate_username(name)


@pytest.mark.parametrize("name", ["Alice", "1alice", "alice\n", "al ice", "a" * 33, "-x"])
def test_other_names_are_not(name):
    assert not ClusterPAMAuthenticator().validate_username(name)
