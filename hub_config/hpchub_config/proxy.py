"""configurable-http-proxy as its own service, with routes restored within seconds.

The proxy runs as its own systemd unit, so a hub restart drops no route. The other way
round is the problem: when the proxy restarts (crash, upgrade, `systemctl restart`),
it comes back empty, and JupyterHub re-adds routes of an external proxy only at its next
`last_activity_interval` (300 s): until then users get "Redirect loop detected".

`WatchedProxy` checks every few seconds (one GET /api/routes on localhost) that the
hub's own route is still there; if not, the proxy has restarted and all routes are
restored at once through JupyterHub's own check_routes.
"""

from __future__ import annotations

from jupyterhub.proxy import ConfigurableHTTPProxy
from tornado.ioloop import PeriodicCallback
from traitlets import Float


class WatchedProxy(ConfigurableHTTPProxy):
    route_check_interval = Float(
        2.0, help="Seconds between checks that the external proxy still has its routes"
    ).tag(config=True)

    _watcher: PeriodicCallback | None = None
    _restoring = False

    async def check_routes(self, user_dict, service_dict, routes=None):
        # JupyterHub calls this once at start-up, after the proxy answered: the moment
        # to start watching.
        if self._watcher is None and not self.should_start:
            self._watcher = PeriodicCallback(
                self.restore_lost_routes, 1e3 * self.route_check_interval
            )
            self._watcher.start()
            self.log.info(
                "Watching the external proxy's routes every %.1f s", self.route_check_interval
            )
        return await super().check_routes(user_dict, service_dict, routes)

    async def restore_lost_routes(self) -> None:
        if self._restoring:
            return
        self._restoring = True
        try:
            routes = await self.get_all_routes()
            if self.app.hub.routespec in routes:
                return
            self.log.warning(
                "The proxy lost its routes (restarted?): restoring %d user route(s)",
                sum(1 for u in self.app.users.values() for s in u.spawners.values() if s.ready),
            )
            await super().check_routes(self.app.users, self.app._service_map, routes)
        except Exception as e:  # noqa: BLE001 - the proxy may be down; next tick retries
            self.log.debug("Proxy route check failed: %s", e)
        finally:
            self._restoring = False
