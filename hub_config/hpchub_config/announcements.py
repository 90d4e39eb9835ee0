"""jupyterhub-announcement, started by the hub, with announcements seeded at deploy time.

`python -m hpchub_config.announcements` is the service command (see configure.py). Before
it starts the upstream service it adds the settings file's `announcement.seed` messages
(e.g. a maintenance window listed in the inventory) to the persisted queue, unless the
same seeded message is already there: a restart or a re-deploy adds nothing twice, and
what admins post through the service's page persists in the same file.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import tempfile
from pathlib import Path

from .settings import DEFAULT_SETTINGS_PATH, load_settings

SEED_AUTHOR = "hpchub (deployment)"


def _sanitize(message: str) -> str:
    # The same sanitizer the service applies to what admins post.
    from html_sanitizer import Sanitizer

    return Sanitizer().sanitize(message)


def seed_queue(persist_path: str | Path, messages: list[str], now=None) -> int:
    """Add seeded messages missing from the persisted queue; return how many were added."""
    path = Path(persist_path)
    try:
        queue = json.loads(path.read_text() or "[]")
    except FileNotFoundError:
        queue = []
    if not isinstance(queue, list):
        raise ValueError(f"{path}: expected a JSON list of announcements")
    seeded = {a.get("announcement") for a in queue if a.get("user") == SEED_AUTHOR}
    timestamp = (now or datetime.datetime.now()).isoformat()
    added = 0
    for message in messages:
        text = _sanitize(message)
        if text and text not in seeded:
            queue.append({"user": SEED_AUTHOR, "announcement": text, "timestamp": timestamp})
            seeded.add(text)
            added += 1
    if added:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".announcements.")
        with os.fdopen(fd, "w") as stream:
            json.dump(queue, stream, indent=2)
        os.replace(tmp, path)
    return added


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", default=DEFAULT_SETTINGS_PATH)
    args = parser.parse_args(argv)
    all_settings = load_settings(args.settings)
    settings = all_settings.announcement
    if settings is None:
        parser.error(f"{args.settings} has no announcement section")

    added = seed_queue(settings.persist_path, [s.message for s in settings.seed])
    print(f"hpchub: {added} seeded announcement(s) added to {settings.persist_path}", flush=True)

    from jupyterhub_announcement.announcement import AnnouncementService
    from traitlets.config import Config

    config = Config()
    config.AnnouncementService.port = settings.port
    config.AnnouncementService.fixed_message = settings.fixed_message
    config.AnnouncementService.cookie_secret_file = settings.cookie_secret_file
    config.AnnouncementService.config_file = ""
    config.AnnouncementQueue.persist_path = settings.persist_path
    config.AnnouncementQueue.lifetime_days = settings.lifetime_days
    # It listens in plain HTTP on the loopback only, on a port below 1024 that no user can
    # bind: the proxy reaches it there. The hub's internal TLS certificate (JUPYTERHUB_SSL_*
    # in its environment) serves its own calls to the hub API, not its listener.
    config.SSLContext.certfile = ""
    # With per-user origins hub pages read the latest announcement across origins.
    config.AnnouncementService.allow_origin = bool(all_settings.hub.subdomain_host)
    service = AnnouncementService(config=config)
    service.initialize([])
    record_posts(service.queue)
    serve(service, settings.port)


def serve(service, port: int, address: str = "127.0.0.1") -> None:
    """The upstream service's start(), bound to one address (upstream binds every interface)."""
    from tornado import ioloop

    service.app.listen(port, address=address)

    async def purge():
        await service.queue.purge()

    ioloop.PeriodicCallback(purge, 300_000).start()
    ioloop.IOLoop.current().start()


def record_posts(queue) -> None:
    """Each announcement an admin posts (or clears) becomes an audit event."""
    from . import audit

    audit.setup()
    post = queue.update

    async def update(user, announcement=""):
        await post(user, announcement)
        audit.event("announcement", actor=user, length=len(announcement), text=announcement)

    queue.update = update


if __name__ == "__main__":
    main()
