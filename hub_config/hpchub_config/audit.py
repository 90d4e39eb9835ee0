"""The audit log: one JSON line per security event, for the site's security team.

HPC sites feed login-node logs to Zeek and a SIEM. The hub's own log mixes requests,
debugging and spawner chatter; this one carries only security events, each a single JSON
object on its own line, sent to syslog as identifier `hpchub-audit` (facility authpriv):
`journalctl -t hpchub-audit -o cat` prints exactly the JSON lines, and a syslog forwarder
ships them as they are. Fields are documented in docs/security.md ("Audit log").

Events: login (success and failure, with the source address), spawn (the validated
resources and the Slurm job id), spawn_refused (with the reason), server_stop (who asked),
token_created, admin_action, announcement. No secret is ever a field: tokens, passwords
and cookies are never passed here.
"""

from __future__ import annotations

import datetime
import json
import logging
import logging.handlers
import os
import re

from jupyterhub.log import log_request as jupyterhub_log_request

IDENTIFIER = "hpchub-audit"
SYSLOG_SOCKET = "/dev/log"
logger = logging.getLogger("hpchub.audit")
logger.propagate = False  # never mixed into the hub's own log
logger.setLevel(logging.INFO)


def setup(socket: str = SYSLOG_SOCKET) -> None:
    """Send audit lines to syslog (the journal) as `hpchub-audit`; once per process."""
    if logger.handlers or not os.path.exists(socket):
        return
    handler = logging.handlers.SysLogHandler(
        address=socket, facility=logging.handlers.SysLogHandler.LOG_AUTHPRIV
    )
    handler.ident = f"{IDENTIFIER}: "
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)


def _clean(value, limit: int = 200):
    """Attacker-chosen strings (user names typed into the login form) stay one bounded line."""
    if isinstance(value, str):
        return value[:limit]
    return value


def event(name: str, **fields) -> None:
    record = {
        "event": name,
        "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds"),
        **{key: _clean(value) for key, value in fields.items()},
    }
    logger.info(json.dumps(record, sort_keys=False, default=str))


# --------------------------------------------------------------------------- requests

# /hub/api/users/<name>/server[s/<server>] and /hub/api/users/<name>/tokens[/<id>]
_USER_API = re.compile(r"^/hub/api/users/(?P<user>[^/?]+)(?P<rest>/[^?]*)?")
_ADMIN_COLLECTIONS = ("/hub/api/users", "/hub/api/groups", "/hub/api/proxy", "/hub/api/shutdown")


def _actor(handler) -> str:
    try:
        user = handler.current_user
    except Exception:  # noqa: BLE001 - a refused request has no user
        return ""
    return getattr(user, "name", "") or ""


def request_event(method: str, path: str, status: int, actor: str, source: str):
    """The audit event for one finished hub request, or None (most requests are not)."""
    if method == "GET" or status in (404, 405):
        return None
    match = _USER_API.match(path)
    fields = {"actor": actor, "source": source, "status": status, "path": path}
    if match:
        user, rest = match["user"], match["rest"] or ""
        fields["user"] = user
        if method == "DELETE" and rest.startswith("/server"):
            server = rest.removeprefix("/servers/").removeprefix("/server")
            return ("server_stop", {**fields, "server": server.strip("/")})
        if method == "POST" and rest.rstrip("/") == "/tokens":
            return ("token_created", fields)
        if actor != user and not rest.startswith("/server"):
            return ("admin_action", {**fields, "method": method})
        return None
    if path.startswith(_ADMIN_COLLECTIONS):
        return ("admin_action", {**fields, "method": method})
    return None


def log_request(handler) -> None:
    """JupyterHub's request log, plus an audit line for the requests that are events."""
    jupyterhub_log_request(handler)
    request = handler.request
    base_url = handler.settings.get("base_url", "/")
    path = request.path
    if base_url != "/" and path.startswith(base_url):
        path = "/" + path[len(base_url) :]  # events name paths as on a hub at /
    found = request_event(
        request.method,
        path,
        handler.get_status(),
        _actor(handler),
        request.remote_ip,
    )
    if found:
        event(found[0], **found[1])


# --------------------------------------------------------------------------- logins


class AuditedLoginMixin:
    """Records every login attempt (success or failure) with its source address."""

    async def get_authenticated_user(self, handler, data):
        user = await super().get_authenticated_user(handler, data)
        attempted = (data or {}).get("username", "") if isinstance(data, dict) else ""
        source = handler.request.remote_ip if handler is not None else ""
        if user:
            event("login", outcome="success", user=user["name"], source=source)
        else:
            event("login", outcome="failure", user=attempted, source=source)
        return user
