"""The commander served by Twisted on a real loopback port, with its live feed.

``serve_commander`` builds what the composition root builds for the commander (a
``LiveFeed``, the Flask app, the ``Site`` with ``/api/events``) on the session's reactor
thread, and listens on a free loopback port. Used by the event-stream, thread-safety,
original-client, connection-limit and GUI tests; ``site_options`` go to ``make_site`` (short
timeouts for the connection-limit tests).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import requests
from twisted.python.threadpool import ThreadPool

from scrapoxy_server.commander.app import create_app
from scrapoxy_server.commander.events import LiveFeed
from scrapoxy_server.commander.wsgi import make_site, reactor_caller
from scrapoxy_server.stats import Stats
from tests.commander.conftest import PASSWORD, USERNAME


@dataclass
class Served:
    base: str
    control: Any
    live: LiveFeed
    stats: Stats
    site: Any

    def session(self) -> requests.Session:
        session = requests.Session()
        session.trust_env = False  # loopback only: never through a proxy from the environment
        session.auth = (USERNAME, PASSWORD)
        return session


@contextmanager
def serve_commander(reactor_thread: Any, control: Any, *,
                    config_view: Callable[[], dict] | None = None,
                    config_update: Callable[[dict], dict] | None = None,
                    threads: int = 4, heartbeat: float = 15.0,
                    capacity: int = 1000, interval: float = 1.0,
                    **site_options: Any) -> Iterator[Served]:
    reactor = reactor_thread.reactor
    stats = Stats()
    live = LiveFeed(clock=reactor, stats=stats, config_view=config_view, capacity=capacity,
                    interval=interval, window=60.0)
    app = create_app(control=control, call_in_reactor=reactor_caller(reactor),
                     username=USERNAME, password=PASSWORD, config_view=config_view,
                     config_update=config_update, live=live)
    pool = ThreadPool(minthreads=1, maxthreads=threads, name="commander-test")
    pool.start()
    site = make_site(app, reactor=reactor, threadpool=pool, heartbeat=heartbeat,
                     **site_options)
    port = reactor_thread.call(reactor.listenTCP, 0, site, interface="127.0.0.1")
    reactor_thread.call(live.start, control)
    try:
        yield Served(base=f"http://127.0.0.1:{port.getHost().port}", control=control,
                     live=live, stats=stats, site=site)
    finally:
        reactor_thread.call(live.stop)
        reactor_thread.call(site.resource.events.close_all)
        reactor_thread.call(port.stopListening)
        pool.stop()
