"""A strict replacement for batchspawner's port-report API (/hub/api/batchspawner).

batchspawner-singleuser, running in the user's job, POSTs {"port": N} with the job's
JUPYTERHUB_API_TOKEN so the hub learns where the server listens. batchspawner 1.3.0's
handler sets ANY spawner attribute named in the body: a user's notebook could post
{"exec_prefix": "..."} and have the hub run that command (see docs/security.md).

This handler accepts exactly {"port": <int 1-65535>}, only with the API token of a
server that is being spawned, and sets only that server's port. A body that is not
exactly that gets 400 before anything else is looked at; a token that is not the token of
one of the user's servers gets 403; a server that is not starting gets 400. Nothing else
is ever changed.
"""

from __future__ import annotations

import hmac
import json

from jupyterhub import apihandlers
from jupyterhub.apihandlers import APIHandler
from tornado import web

PORT_API_PATH = r"/api/batchspawner"


class PortReportHandler(APIHandler):
    """POST /hub/api/batchspawner {"port": N} from a starting notebook job."""

    def check_xsrf_cookie(self):
        # Token-authenticated API calls from jobs; no browser session is involved.
        return

    @web.authenticated
    async def post(self):
        try:
            body = json.loads(self.request.body or b"null")
        except ValueError as e:
            raise web.HTTPError(400, 'body must be JSON: {"port": <integer>}') from e
        if not isinstance(body, dict) or set(body) != {"port"}:
            raise web.HTTPError(400, 'body must be exactly {"port": <integer>}')
        port = body["port"]
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise web.HTTPError(400, "port must be an integer from 1 to 65535")

        user = self.current_user
        token = self.get_auth_token() or ""
        spawner = None
        if getattr(user, "spawners", None) is not None:
            for candidate in user.spawners.values():
                api_token = candidate.api_token or ""
                if api_token and hmac.compare_digest(api_token, token):
                    spawner = candidate
                    break
        if spawner is None:
            raise web.HTTPError(403, "only a notebook job's own server token may report a port")
        if spawner.pending != "spawn":
            raise web.HTTPError(400, f"server {spawner._log_name} is not starting")

        # wrapspawner: the job belongs to the child spawner; set it there (and on the
        # wrapper, whose trait is linked to the child's).
        target = getattr(spawner, "child_spawner", None) or spawner
        target.port = port
        if target is not spawner:
            spawner.port = port
        self.log.info("%s: notebook job reported port %d", spawner._log_name, port)
        self.set_status(201)
        self.finish(json.dumps({"message": "port recorded"}))


def install() -> None:
    """Put our handler in place of batchspawner's in JupyterHub's API routes.

    batchspawner appends its handler to jupyterhub.apihandlers.default_handlers when it
    is imported; JupyterHub builds its routes from that list after reading the config.
    """
    import batchspawner.api  # noqa: F401 - make sure its handler is registered first

    handlers = apihandlers.default_handlers
    handlers[:] = [h for h in handlers if h[0] != PORT_API_PATH]
    handlers.append((PORT_API_PATH, PortReportHandler))
