#!/usr/bin/python3 -I
"""hpchub-auth: check a cluster account's password with PAM for the JupyterHub account.

The hub runs unprivileged and cannot read password hashes (it is not in group shadow).
It runs this helper through sudo, as root (/etc/sudoers.d/hpchub-jupyterhub):

    printf '%s\\n%s\\n' USER PASSWORD | sudo -n hpchub-auth

The name and the password come on stdin, never as arguments (which every user of the
host can see). USER must be a plain POSIX name of an account with a uid of at least
min_uid and, when allowed groups are configured, a member of one of them (checked now,
with the account and group databases); then PAM's authentication and account stacks of
the configured service (`login`) decide, so local, LDAP and SSSD accounts all work.

Exit status: 0 authenticated, 1 refused (one line on stderr says why, never the
password), 2 usage or configuration error. The check gives up after TIMEOUT seconds.

Configuration: /etc/hpchub/helpers.json, shared with hpchub-slurm (root-owned, writable
by nobody else): {"min_uid": 1000, "allowed_groups": [...], "pam_service": "login", ...}
"""

import grp
import json
import os
import pwd
import re
import signal
import stat
import sys

CONFIG_PATH = "/etc/hpchub/helpers.json"
POSIX_NAME = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")
SERVICE_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
NEVER_UIDS = frozenset({65534, 65535, 4294967294, 4294967295})
MAX_INPUT = 4096
TIMEOUT = 25  # seconds; the hub waits a little longer


class UsageError(Exception):
    """Called wrongly or misconfigured: exit status 2."""


class Refused(Exception):
    """Not authenticated: exit status 1. The message never contains the password."""


def read_credentials(data: bytes) -> tuple[str, str]:
    """(user, password) from exactly two newline-terminated lines."""
    if len(data) > MAX_INPUT:
        raise UsageError(f"more than {MAX_INPUT} bytes on stdin")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError("stdin is not UTF-8") from None
    lines = text.split("\n")
    if len(lines) != 3 or lines[2] != "":
        raise UsageError("stdin must be two lines: the user name, then the password")
    user, password = lines[0], lines[1]
    if not POSIX_NAME.fullmatch(user):
        raise Refused("not a plain POSIX user name")
    if not password or "\0" in password:
        raise Refused(f"{user}: empty or invalid password")
    return user, password


def _check_owner(st: os.stat_result, path: str, owner: int) -> None:
    if st.st_uid != owner or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UsageError(f"{path} must be owned by uid {owner} and writable by nobody else")


def load_config(path: str = CONFIG_PATH, owner: int = 0) -> dict:
    """The helper's configuration, from a file (and folder) only `owner` can change."""
    try:
        _check_owner(os.stat(os.path.dirname(path)), os.path.dirname(path), owner)
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, encoding="utf-8") as stream:
            st = os.fstat(stream.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise UsageError(f"{path} is not a regular file")
            _check_owner(st, path, owner)
            data = json.load(stream)
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from None
    except ValueError:
        raise UsageError(f"{path} is not valid JSON") from None
    min_uid = data.get("min_uid") if isinstance(data, dict) else None
    groups = data.get("allowed_groups") if isinstance(data, dict) else None
    service = data.get("pam_service") if isinstance(data, dict) else None
    if type(min_uid) is not int or min_uid < 1:
        raise UsageError(f"{path}: min_uid must be an integer of at least 1")
    if not isinstance(groups, list) or not all(isinstance(g, str) and g for g in groups):
        raise UsageError(f"{path}: allowed_groups must be a list of group names")
    if not isinstance(service, str) or not SERVICE_NAME.fullmatch(service):
        raise UsageError(f"{path}: pam_service must be a PAM service name")
    return {"min_uid": min_uid, "allowed_groups": groups, "pam_service": service}


def check_account(user: str, config: dict) -> pwd.struct_passwd:
    """The passwd entry of USER, if that account may use the hub now."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise Refused(f"no such account: {user}") from None
    if entry.pw_name != user:
        raise Refused(f"{user} resolves to another account name")
    if entry.pw_uid < config["min_uid"]:
        raise Refused(f"{user}: uid {entry.pw_uid} is below min_uid {config['min_uid']}")
    if entry.pw_uid in NEVER_UIDS or entry.pw_gid == 0:
        raise Refused(f"{user}: uid {entry.pw_uid}/gid {entry.pw_gid} is not a person's")
    groups = config["allowed_groups"]
    if groups:
        allowed = set()
        for name in groups:
            try:
                allowed.add(grp.getgrnam(name).gr_gid)
            except KeyError:
                continue
        if not allowed.intersection(os.getgrouplist(user, entry.pw_gid)):
            raise Refused(f"{user} is in none of the allowed groups ({', '.join(groups)})")
    return entry


def pam_check(user: str, password: str, service: str) -> None:
    """PAM authentication, then PAM's account checks (expiry, access rules)."""
    try:
        import pamela  # Debian's python3-pamela
    except ImportError:
        raise UsageError("python3-pamela is not installed") from None
    try:
        # No pam_setcred: nothing here lives on after the check.
        pamela.authenticate(user, password, service=service, resetcred=0)
        pamela.check_account(user, service=service)
    except pamela.PAMError as e:
        raise Refused(f"{user}: {e.message or 'PAM refused'}") from None


def main(args: list[str] | None = None, config_path: str = CONFIG_PATH, owner: int = 0) -> int:
    args = sys.argv[1:] if args is None else args
    # The default action of SIGALRM ends the process even inside a blocking PAM module.
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.alarm(TIMEOUT)
    try:
        if args:
            raise UsageError("no arguments: the user name and password come on stdin")
        if os.geteuid() != 0:
            raise UsageError("must run as root (through sudo)")
        user, password = read_credentials(sys.stdin.buffer.read(MAX_INPUT + 1))
        config = load_config(config_path, owner)
        check_account(user, config)
        pam_check(user, password, config["pam_service"])
    except UsageError as e:
        print(f"hpchub-auth: error: {e}", file=sys.stderr)
        return 2
    except Refused as e:
        print(f"hpchub-auth: refused: {e}", file=sys.stderr)
        return 1
    finally:
        signal.alarm(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
