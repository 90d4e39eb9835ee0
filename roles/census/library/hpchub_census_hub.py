#!/usr/bin/python
"""Ansible module: counts from the running hub, through its REST API, read-only.

Runs on the login node. It reads the census service's token there (the jupyterhub role makes
it; its role has the scopes list:users and read:servers only) and sends it to the hub through
the proxy's HTTPS port on 127.0.0.1 (a privileged port, so no cluster user can stand in for
the hub). It returns counts and versions only: no user name leaves the login node.

The running servers' versions come from GET /user/<name>/<server>/api, which a Jupyter server
answers without a token (jupyter_server's version); nothing that needs a user's token is asked.
"""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
---
module: hpchub_census_hub
short_description: Count users and servers of the running hub through its API (read-only)
description:
  - Reads the hub's version, the number of users, running and pending servers, the profiles in
    use and the versions the running servers report.
  - Returns counts and versions only; changes nothing; supports check mode.
options:
  url:
    description: The hub's public base URL as reached from this host (the proxy).
    type: str
    required: true
  token_file:
    description: File holding the census service's API token.
    type: path
    required: true
  ca_file:
    description: Extra CA (or the self-signed certificate) to trust for url.
    type: path
  server_versions:
    description: Ask each running server for its version.
    type: bool
    default: true
  timeout:
    description: Seconds per request.
    type: float
    default: 10
author: hpchub
"""

RETURN = r"""
hub:
  description: reachable, version, users, servers (running, pending, stopping), profiles,
    server_versions, server_version_errors, error.
  returned: always
  type: dict
"""

PAGE_SIZE = 200
PAGINATION = "application/jupyterhub-pagination+json"


def ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """System CAs plus ca_file. The host name is not checked: the URL is 127.0.0.1, which a
    site certificate does not name; the chain still is."""
    context = ssl.create_default_context()
    if ca_file and os.path.isfile(ca_file):
        context.load_verify_locations(cafile=ca_file)
    context.check_hostname = False
    return context


class Hub:
    def __init__(self, url: str, token: str | None, context, timeout: float, opener=None):
        if not url.startswith(("https://", "http://")):
            raise ValueError(f"not an http(s) URL: {url}")
        self.url = url.rstrip("/")
        self.token = token
        self.context = context
        self.timeout = timeout
        self.opener = opener or self._open

    def _open(self, request):
        with urllib.request.urlopen(  # noqa: S310 - https/http URL from the inventory
            request, timeout=self.timeout, context=self.context
        ) as response:
            return json.loads(response.read().decode("utf-8"))

    def get(self, path: str, *, token: bool = True, accept: str = "application/json"):
        headers = {"Accept": accept}
        if token and self.token:
            headers["Authorization"] = f"token {self.token}"
        # With per-user origins a server's URL is absolute (https://NAME.hub.example.org/...):
        # still ask the local proxy, for that host name (the proxy routes by host).
        absolute = urllib.parse.urlsplit(path)
        if absolute.netloc:
            headers["Host"] = absolute.netloc
            path = absolute.path + (f"?{absolute.query}" if absolute.query else "")
        request = urllib.request.Request(self.url + path, headers=headers)  # noqa: S310
        return self.opener(request)

    def users(self, state: str | None = None):
        """All users (or those with servers in `state`), page by page; and the total count."""
        offset, users, total = 0, [], None
        while True:
            query = {"offset": offset, "limit": PAGE_SIZE}
            if state:
                query["state"] = state
            page = self.get("/hub/api/users?" + urllib.parse.urlencode(query), accept=PAGINATION)
            if isinstance(page, list):  # a hub without pagination answers with the whole list
                return page, len(page)
            items = page.get("items", [])
            users += items
            pagination = page.get("_pagination") or {}
            total = pagination.get("total", total)
            following = pagination.get("next")
            if not items or not following:
                return users, total if total is not None else len(users)
            offset = following.get("offset", offset + len(items))


def summarise(users: list[dict]) -> dict:
    """Running/pending/stopping servers and profile counts from user models (read:servers)."""
    servers = {"running": 0, "pending": 0, "stopping": 0}
    profiles: dict[str, int] = {}
    ready_urls = []
    for user in users:
        for server in (user.get("servers") or {}).values():
            pending = server.get("pending")
            if pending == "stop":
                servers["stopping"] += 1
                continue
            if server.get("ready"):
                servers["running"] += 1
                if server.get("url"):
                    ready_urls.append(server["url"])
            elif pending:
                servers["pending"] += 1
            else:
                continue
            options = server.get("user_options") or {}
            profile = options.get("profile") or "(default)"
            profiles[str(profile)] = profiles.get(str(profile), 0) + 1
    return {"servers": servers, "profiles": profiles, "ready_urls": ready_urls}


def census(hub: Hub, server_versions: bool = True) -> dict:
    result: dict = {"reachable": False}
    try:
        result["version"] = hub.get("/hub/api/", token=False).get("version")
        result["reachable"] = True
        _, result["users"] = hub.users()
        active, _ = hub.users(state="active")
    except (urllib.error.URLError, OSError, ValueError) as e:
        result["error"] = describe(e)
        return result
    summary = summarise(active)
    result["servers"] = summary["servers"]
    result["profiles"] = summary["profiles"]
    versions: dict[str, int] = {}
    errors = 0
    if server_versions:
        for url in summary["ready_urls"]:
            try:
                answer = hub.get(url.rstrip("/") + "/api", token=False)
                version = str(answer.get("version") or "unknown")
            except (urllib.error.URLError, OSError, ValueError, AttributeError):
                errors += 1
                continue
            versions[version] = versions.get(version, 0) + 1
    result["server_versions"] = versions
    result["server_version_errors"] = errors
    return result


def describe(error: Exception) -> str:
    """An error without the URL's query or any header (never the token)."""
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return f"cannot reach the hub: {error.reason}"
    return f"{type(error).__name__}: {error}"


def main():  # pragma: no cover - runs on the login node
    module = AnsibleModule(
        argument_spec={
            "url": {"type": "str", "required": True},
            "token_file": {"type": "path", "required": True},
            "ca_file": {"type": "path"},
            "server_versions": {"type": "bool", "default": True},
            "timeout": {"type": "float", "default": 10},
        },
        supports_check_mode=True,
    )
    params = module.params
    try:
        with open(params["token_file"], encoding="utf-8") as handle:
            token = handle.read().strip()
    except OSError as e:
        module.exit_json(
            changed=False,
            hub={
                "reachable": False,
                "error": f"no census token ({params['token_file']}: {e.strerror})",
            },
        )
    try:
        hub = Hub(params["url"], token, ssl_context(params["ca_file"]), params["timeout"])
    except (ValueError, OSError, ssl.SSLError) as e:
        module.exit_json(changed=False, hub={"reachable": False, "error": describe(e)})
    module.exit_json(changed=False, hub=census(hub, params["server_versions"]))


if __name__ == "__main__":
    main()
