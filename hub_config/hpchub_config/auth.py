"""Password logins for cluster accounts, never for system accounts, without reading hashes.

The hub runs unprivileged and is not in group `shadow`: it cannot read password hashes
(root's included). It asks hpchub's root helper instead, `sudo -n hpchub-auth`, giving it
the name and the password on stdin (never as arguments, which every user of the login
node could see). The helper refuses names that are not plain POSIX user names, accounts
below min_uid and, when configured, outside the allowed groups, then lets PAM decide
(service `login`: local, LDAP and SSSD accounts alike). Nothing here logs the password.

The hub also refuses those names and accounts itself, so no such name can ever reach the
Slurm helper either.
"""

from __future__ import annotations

import asyncio
import pwd
import re

from jupyterhub.auth import LocalAuthenticator
from traitlets import Float, Integer, Unicode

from .audit import AuditedLoginMixin

POSIX_USERNAME = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")
MAX_PASSWORD_BYTES = 1024


class ClusterPAMAuthenticator(LocalAuthenticator):
    """PAM logins through hpchub-auth (run with sudo), for accounts >= min_uid."""

    min_uid = Integer(
        1000, help="Accounts with a lower uid (system accounts) may not use the hub"
    ).tag(config=True)
    sudo = Unicode("/usr/bin/sudo", help="sudo, to run the helper as root").tag(config=True)
    helper = Unicode(
        "/usr/local/libexec/hpchub/hpchub-auth",
        help="The root helper that checks a password with PAM (name and password on stdin)",
    ).tag(config=True)
    helper_timeout = Float(30.0, help="Seconds to wait for the helper before the login fails").tag(
        config=True
    )

    def validate_username(self, username):
        return bool(POSIX_USERNAME.fullmatch(username)) and super().validate_username(username)

    def check_allowed(self, username, authentication=None):
        try:
            uid = pwd.getpwnam(username).pw_uid
        except KeyError:
            self.log.warning("Refusing %s: no such account on this host", username)
            return False
        if uid < self.min_uid:
            self.log.warning("Refusing %s: uid %d is below min_uid %d", username, uid, self.min_uid)
            return False
        return super().check_allowed(username, authentication)

    async def authenticate(self, handler, data):
        """The user name if the helper accepts the password, otherwise None."""
        username = data.get("username") or ""
        password = data.get("password") or ""
        if not POSIX_USERNAME.fullmatch(username):
            self.log.warning("Login refused: not a plain POSIX user name (%d chars)", len(username))
            return None
        if not password or "\n" in password or "\0" in password:
            self.log.warning("Login of %s refused: empty or invalid password", username)
            return None
        secret = f"{username}\n{password}\n".encode()
        if len(secret) > MAX_PASSWORD_BYTES:
            self.log.warning("Login of %s refused: password too long", username)
            return None
        ok, reason = await self._run_helper(secret)
        if not ok:
            where = f"@{handler.request.remote_ip}" if handler is not None else ""
            self.log.warning("Login of %s%s refused: %s", username, where, reason)
            return None
        return username

    async def _run_helper(self, secret: bytes) -> tuple[bool, str]:
        """(accepted, the helper's reason) for one `name\\npassword\\n` on its stdin."""
        try:
            proc = await asyncio.create_subprocess_exec(
                self.sudo,
                "-n",
                self.helper,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
            )
        except OSError as e:
            return False, f"cannot run {self.sudo}: {e.strerror}"
        try:
            _out, err = await asyncio.wait_for(
                proc.communicate(secret), timeout=self.helper_timeout
            )
        except TimeoutError:
            try:
                proc.terminate()  # sudo passes it on to the helper
            except (ProcessLookupError, PermissionError):
                pass
            return False, f"no answer from {self.helper} within {self.helper_timeout:g} s"
        reason = err.decode(errors="replace").strip().splitlines()
        if proc.returncode == 0:
            return True, ""
        return False, (reason[-1] if reason else f"exit status {proc.returncode}")[:300]


class AuditedClusterAuthenticator(AuditedLoginMixin, ClusterPAMAuthenticator):
    """ClusterPAMAuthenticator whose every login attempt is an audit event (audit.py)."""
