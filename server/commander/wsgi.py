"""Serving the commander from Twisted: the WSGI container and the reactor bridge.

Flask views run in ``threadpool`` (never on the reactor); they reach the manager through
``reactor_caller(reactor)``, which hands each call to the reactor thread and waits for it
(Deferreds included). The caller owns the thread pool: start it before listening, and stop
it at shutdown (``reactor.addSystemEventTrigger("during", "shutdown", threadpool.stop)``).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask
from twisted.internet import threads
from twisted.python.threadpool import ThreadPool
from twisted.web.server import Site
from twisted.web.wsgi import WSGIResource


def make_site(app: Flask, *, reactor: Any, threadpool: ThreadPool) -> Site:
    """A ``Site`` serving ``app`` at the root, its views running in ``threadpool``."""
    resource = WSGIResource(reactor, threadpool, app)
    site = Site(resource)
    # Flask answers its own errors; Twisted must never put a traceback in a response.
    site.displayTracebacks = False
    return site


def reactor_caller(reactor: Any) -> Callable[..., Any]:
    """``call(fn, *args)``: run ``fn`` on the reactor thread and return its result.

    Only for threads other than the reactor's: called on the reactor it would deadlock.
    """

    def call_in_reactor(fn: Callable[..., Any], *args: Any) -> Any:
        return threads.blockingCallFromThread(reactor, fn, *args)

    return call_in_reactor
