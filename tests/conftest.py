"""Shared pytest fixtures.

Tests that need real sockets run the global Twisted reactor in a background thread for the
whole session (``reactor_thread``) and drive it with ``blockingCallFromThread``; the test
thread itself uses ordinary blocking clients, as a user's scraper would. The lab's fixtures
(``tests/lab``) are available to every test; session-scoped ones start when first used.
"""
from __future__ import annotations

import threading

import pytest

from scrapoxy_server.reactor import install

# Tests run on the reactor the server processes run on; before anything imports Twisted's.
install()

from tests.lab.fixtures import *  # noqa: E402,F401,F403 - the lab (origins, stock proxies, servers)
from tests.support import ReactorThread


@pytest.fixture(scope="session")
def reactor_thread():
    from twisted.internet import reactor

    assert type(reactor).__name__ == "LeanEPollReactor", "something imported the reactor first"
    started = threading.Event()
    reactor.callWhenRunning(started.set)
    thread = threading.Thread(
        target=reactor.run, kwargs={"installSignalHandlers": False}, daemon=True, name="reactor"
    )
    thread.start()
    if not started.wait(10):
        raise RuntimeError("the reactor did not start")
    yield ReactorThread(reactor)
    reactor.callFromThread(reactor.stop)
    thread.join(10)
