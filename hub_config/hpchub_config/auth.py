"""PAM logins for cluster accounts, never for system accounts.

The hub runs unprivileged (a system user in group `shadow` for local accounts; LDAP/SSSD
users need no extra rights). On top of JupyterHub's PAMAuthenticator this refuses
accounts below `min_uid` (root, daemons) and names that are not plain POSIX user names,
so no such name can ever reach `sudo -u <name> sbatch`.
"""

from __future__ import annotations

import pwd
import re

from jupyterhub.auth import PAMAuthenticator
from traitlets import Integer

POSIX_USERNAME = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")


class ClusterPAMAuthenticator(PAMAuthenticator):
    min_uid = Integer(
        1000, help="Accounts with a lower uid (system accounts) may not use the hub"
    ).tag(config=True)

    def validate_username(self, username):
        return bool(POSIX_USERNAME.match(username)) and super().validate_username(username)

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
