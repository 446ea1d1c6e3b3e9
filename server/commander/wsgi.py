"""Serving the commander from Twisted: the WSGI container, the event stream, the reactor bridge.

Flask views run in ``threadpool`` (never on the reactor); they reach the manager through
``reactor_caller(reactor)``, which hands each call to the reactor thread and waits for it
(Deferreds included). The caller owns the thread pool: start it before listening, and stop
it at shutdown (``reactor.addSystemEventTrigger("during", "shutdown", threadpool.stop)``).

``GET /api/events`` is served by ``sse.EventStreamResource`` on the reactor itself (a
stream would otherwise hold a pool thread as long as a browser tab stays open):
``CommanderRoot`` routes that one path to it and everything else to the WSGI app.

The Site is a ``channel.CommanderSite``: bodies above the app's ``MAX_CONTENT_LENGTH`` are
refused before they are read, slow request heads get 408, idle connections close after
``timeout`` seconds. Twisted hands the app a body it has read whole, so the WSGI environ
says so (``wsgi.input_terminated``): without it Werkzeug would see a chunked body, which has
no ``Content-Length``, as empty.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask
from twisted.internet import threads
from twisted.python.threadpool import ThreadPool
from twisted.web.resource import Resource
from twisted.web.server import Request, Site
from twisted.web.wsgi import WSGIResource

from .channel import DEFAULT_HEAD_TIMEOUT, CommanderSite
from .sse import EventStreamResource

EVENTS_PATH = b"/api/events"
# Seconds a connection may stay silent (no request in progress) before it is closed.
IDLE_TIMEOUT = 60.0


def terminated_input(app: Callable[..., Any]) -> Callable[..., Any]:
    """The WSGI app, told that ``wsgi.input`` ends where the body ends (PEP 3333's
    extension, honoured by Werkzeug): Twisted buffered the whole body before calling it."""

    def with_terminated_input(environ: dict, start_response: Callable[..., Any]) -> Any:
        environ["wsgi.input_terminated"] = True
        return app(environ, start_response)

    return with_terminated_input


class CommanderRoot(Resource):
    """``/api/events`` to the stream resource, every other path to the WSGI app."""

    def __init__(self, *, wsgi: WSGIResource, events: EventStreamResource) -> None:
        super().__init__()
        self.wsgi = wsgi
        self.events = events

    def getChildWithDefault(self, path: bytes, request: Request) -> Resource:
        # request.path is the whole path, without the query: match it exactly, so that
        # /api/events/x or /api//events go to Flask (and get its JSON 404).
        if request.path == EVENTS_PATH:
            return self.events
        # The WSGI app must see the whole path (SCRIPT_NAME empty, PATH_INFO complete), as
        # when it is the Site's root: put the segment Twisted consumed back. It is a leaf,
        # so traversal stops there.
        request.postpath.insert(0, request.prepath.pop())
        return self.wsgi

    def render(self, request: Request) -> bytes:
        return self.wsgi.render(request)


def make_site(app: Flask, *, reactor: Any, threadpool: ThreadPool,
              heartbeat: float = 15.0, timeout: float = IDLE_TIMEOUT,
              head_timeout: float = DEFAULT_HEAD_TIMEOUT) -> Site:
    """A ``Site`` serving ``app`` at the root, its views running in ``threadpool``; plus
    ``/api/events`` when the app was built with a live feed."""
    resource: Resource = WSGIResource(reactor, threadpool, terminated_input(app))
    extension = app.extensions.get("scrapoxy") or {}
    live = extension.get("live")
    if live is not None:
        events = EventStreamResource(feed=live, authorize=extension["authorize"],
                                     clock=reactor, heartbeat=heartbeat)
        resource = CommanderRoot(wsgi=resource, events=events)
    site = CommanderSite(resource, max_body=app.config["MAX_CONTENT_LENGTH"],
                         timeout=timeout, head_timeout=head_timeout, reactor=reactor)
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
