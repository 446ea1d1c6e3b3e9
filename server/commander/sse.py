"""``GET /api/events``: the Server-Sent Events stream, served by Twisted itself.

A stream lasts as long as the client stays; served by Flask it would hold one of the WSGI
pool's few threads for all that time. So it is a native ``twisted.web`` resource, rendered
on the reactor thread (where the ring and the manager live), mounted beside the WSGI app by
``CommanderRoot``. Auth is the same function as the API's.

On connect the client gets the events after its ``Last-Event-ID`` (header, or the
``lastEventId`` query parameter for clients that cannot set headers), or the current state
of every kind when it has none or what it missed has left the ring; then every new event.
A comment line every ``heartbeat`` seconds keeps proxies from closing an idle stream and
lets the server notice a client that went away.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from twisted.internet import task
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from .app import SECURITY_HEADERS
from .events import Event, LiveFeed

log = logging.getLogger(__name__)

# More streams than this is a leak or an attack, not a team of operators.
MAX_STREAMS = 64
# A client that reads slower than events come is dropped once this much waits for it.
MAX_PENDING_BYTES = 4 * 1024 * 1024
REALM = "scrapoxy"
ALLOW = b"GET, OPTIONS"


def _json_error(request: Request, status: int, code: str, message: str) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Cache-Control", b"no-store")
    return json.dumps({"error": code, "message": message}, separators=(",", ":")).encode() + b"\n"


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


def _pending_bytes(request: Request) -> int:
    """Bytes written to the client but not yet sent (the TCP transport's buffers)."""
    transport = getattr(request.channel, "transport", None)
    if transport is None:
        return 0
    return len(getattr(transport, "dataBuffer", b"")) + getattr(transport, "_tempDataLen", 0)


class EventStreamResource(Resource):
    isLeaf = True

    def __init__(self, *, feed: LiveFeed, authorize: Callable[[str | None], bool],
                 clock: Any, heartbeat: float = 15.0) -> None:
        super().__init__()
        self.feed = feed
        self._authorize = authorize
        self._clock = clock
        self._heartbeat = heartbeat
        self._streams: dict[Request, Callable[[Event], None]] = {}
        self._beat: task.LoopingCall | None = None

    @property
    def stream_count(self) -> int:
        return len(self._streams)

    def render(self, request: Request) -> bytes | int:
        """Every method lands here (``Resource.render`` would answer other methods with
        Twisted's HTML 405 or 501): auth first, as for the rest of ``/api``, then 204 with
        ``Allow`` for OPTIONS, JSON 405 with ``Allow`` for anything but GET."""
        for name, value in SECURITY_HEADERS.items():  # as the Flask views send them
            request.setHeader(name.encode(), value.encode())
        header = _text(request.getHeader(b"authorization"))
        if not self._authorize(header):
            body = _json_error(request, 401, "auth", "authentication required (HTTP Basic)"
                               if header is None else "wrong credentials")
            scheme = ("Scrapoxy" if request.getHeader(b"x-requested-with") == b"XMLHttpRequest"
                      else "Basic")
            request.setHeader(b"WWW-Authenticate", f'{scheme} realm="{REALM}"'.encode())
            return body
        if request.method == b"OPTIONS":
            # As the Flask views answer it: 204 and what would work, no body.
            request.setResponseCode(204)
            request.setHeader(b"Allow", ALLOW)
            return b""
        if request.method != b"GET":
            request.setHeader(b"Allow", ALLOW)
            method = request.method.decode("latin-1")[:16]
            return _json_error(request, 405, "method_not_allowed",
                               f"{method} is not allowed on /api/events (use GET)")
        return self._stream(request)

    def _stream(self, request: Request) -> bytes | int:
        if len(self._streams) >= MAX_STREAMS:
            request.setHeader(b"Retry-After", b"5")
            return _json_error(request, 503, "busy", "too many event streams open")

        request.setHeader(b"Content-Type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(b"X-Accel-Buffering", b"no")  # nginx in front: do not buffer
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        last_id = _text(request.getHeader(b"last-event-id"))
        if last_id is None:
            values = request.args.get(b"lastEventId")
            last_id = values[0].decode("utf-8", "replace") if values else None
        missed = self.feed.events.since(last_id)
        first = self.feed.current() if missed is None else missed
        # Tell EventSource clients how soon to come back after a drop.
        request.write(b"retry: 2000\n\n" + b"".join(event.encode() for event in first))

        def send(event: Event) -> None:
            if _pending_bytes(request) > MAX_PENDING_BYTES:
                log.warning("event stream client too slow; closing its stream")
                self._close(request)
                return
            request.write(event.encode())

        self._streams[request] = send
        self.feed.events.subscribe(send)
        request.notifyFinish().addBoth(lambda _: self._forget(request))
        self._ensure_heartbeat()
        return NOT_DONE_YET

    def _forget(self, request: Request) -> None:
        send = self._streams.pop(request, None)
        if send is not None:
            self.feed.events.unsubscribe(send)
        if not self._streams and self._beat is not None and self._beat.running:
            self._beat.stop()
            self._beat = None

    def _close(self, request: Request) -> None:
        self._forget(request)
        if request.channel is not None:
            request.channel.transport.loseConnection()

    def _ensure_heartbeat(self) -> None:
        if self._beat is None:
            self._beat = task.LoopingCall(self._beat_all)
            self._beat.clock = self._clock
            self._beat.start(self._heartbeat, now=False)

    def _beat_all(self) -> None:
        for request in list(self._streams):
            try:
                request.write(b": keep-alive\n\n")
            except Exception:  # noqa: BLE001 - a dead stream is forgotten, others go on
                self._forget(request)

    def close_all(self) -> None:
        """End every stream (at shutdown)."""
        for request in list(self._streams):
            self._forget(request)
            try:
                request.finish()
            except Exception:  # noqa: BLE001
                pass
