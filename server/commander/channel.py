"""The commander's HTTP connection, guarded before Flask sees anything.

Twisted reads a whole request (head and body) before the resource, hence Flask and its auth
check, runs. Left alone it would spool any declared body to a temporary file and wait for a
head sent one byte at a time. So the channel itself:

* refuses a body declared above ``max_body`` (Flask's ``MAX_CONTENT_LENGTH``, one constant)
  as soon as the head ends: 413 JSON, ``Connection: close``, and the connection is closed
  without reading the body (and without a ``100 Continue`` first). A chunked body is counted
  as it comes and refused the same way once it passes the limit;
* gives a request head ``head_timeout`` seconds from its first byte to arrive whole, else
  408 JSON and close (the Site's idle ``timeout`` still closes a silent connection, quietly);
* routes an absolute-form request line (``GET http://host:port/api/scaling``) like its path,
  taking the host from it as RFC 9112 section 3.2.2 says.

These answers are written raw (there is no request to route yet), with the API's error shape
and codes (``errors.CODES``). While a request is being handled Twisted suspends the idle
timeout (``HTTPChannel.allContentReceived`` until ``requestDone``), and the head deadline
only runs while a head is arriving: neither cuts an open ``/api/events`` stream.
"""
from __future__ import annotations

import json
import re
from typing import Any

from twisted.web.http import HTTPChannel
from twisted.web.server import Request, Site

from .errors import CODES

DEFAULT_HEAD_TIMEOUT = 20.0
REASONS = {408: b"Request Timeout", 413: b"Content Too Large"}
_ABSOLUTE_FORM = re.compile(rb"^https?://([^/?#]*)(.*)$", re.IGNORECASE | re.DOTALL)


def raw_error(status: int, message: str) -> bytes:
    """A whole HTTP/1.1 response: the API's JSON error, and the connection closes after it."""
    body = json.dumps({"error": CODES[status], "message": message}).encode() + b"\n"
    head = (b"HTTP/1.1 %d %s\r\n" % (status, REASONS[status])
            + b"Content-Type: application/json\r\n"
            + b"Content-Length: %d\r\n" % len(body)
            + b"Cache-Control: no-store\r\n"
            + b"X-Content-Type-Options: nosniff\r\n"
            + b"Connection: close\r\n\r\n")
    return head + body


def too_large_message(limit: int) -> str:
    return f"the request body is larger than the {limit} bytes allowed"


class CommanderRequest(Request):
    """Counts a body's bytes as they arrive; normalises an absolute-form target."""

    _body_bytes = 0

    def handleContentChunk(self, data: bytes) -> None:  # noqa: N802 - Twisted's name
        channel = self.channel
        if channel is None or channel.refused:
            return
        self._body_bytes += len(data)
        if self._body_bytes > channel.site.max_body:
            channel.refuse(413, too_large_message(channel.site.max_body))
            return
        super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:  # noqa: N802
        match = _ABSOLUTE_FORM.match(path)
        if match is not None:
            authority, path = match.group(1).rpartition(b"@")[2], match.group(2)
            if not path.startswith(b"/"):
                path = b"/" + path
            if authority:
                self.requestHeaders.setRawHeaders(b"host", [authority])
        super().requestReceived(command, path, version)


class CommanderChannel(HTTPChannel):
    """``HTTPChannel`` with the body limit and the head deadline (see the module doc)."""

    refused = False
    _head_timer: Any = None

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted's name
        # line_mode and not handling a request: these bytes belong to a request head.
        if (self._head_timer is None and not self.refused and self.line_mode
                and not self._handlingRequest):
            self._head_timer = self.callLater(self.site.head_timeout, self._head_too_slow)
        super().dataReceived(data)

    def allHeadersReceived(self) -> None:  # noqa: N802 - Twisted's name
        self._cancel_head_timer()
        limit = self.site.max_body
        if self.length is not None and self.length > limit:
            # Before Twisted opens a temporary file for it, or answers 100 Continue.
            self.refuse(413, too_large_message(limit))
            return
        super().allHeadersReceived()

    def allContentReceived(self) -> None:  # noqa: N802 - Twisted's name
        if self.refused:
            return  # the end of a refused chunked body, in the same read: never run it
        super().allContentReceived()

    def refuse(self, status: int, message: str) -> None:
        """Answer ``status`` with the JSON error and close, reading nothing more."""
        if self.refused:
            return
        self.refused = True
        self._cancel_head_timer()
        self.transport.write(raw_error(status, message))
        self.loseConnection()

    def _head_too_slow(self) -> None:
        self._head_timer = None
        self.refuse(408, f"request head not complete within {self.site.head_timeout:g}s")

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            if self._head_timer.active():
                self._head_timer.cancel()
            self._head_timer = None

    def connectionLost(self, reason: Any) -> None:  # noqa: N802 - Twisted's name
        self._cancel_head_timer()
        super().connectionLost(reason)


class CommanderSite(Site):
    """A ``Site`` whose connections are ``CommanderChannel`` (plain HTTP/1.1: the commander
    listens on TCP, so there is no TLS to negotiate HTTP/2 over)."""

    protocol = CommanderChannel
    requestFactory = CommanderRequest

    # Health checks fetch /ip through every instance every couple of seconds: a line each
    # would bury everything else in the log. Their failures are still logged.
    QUIET_PATHS = frozenset({b"/ip", b"/healthz"})

    def __init__(self, resource: Any, *, max_body: int, timeout: float,
                 head_timeout: float = DEFAULT_HEAD_TIMEOUT, **kwargs: Any) -> None:
        super().__init__(resource, timeout=timeout, **kwargs)
        self.max_body = max_body
        self.head_timeout = head_timeout

    def log(self, request: Any) -> None:
        if request.path in self.QUIET_PATHS and request.code < 400:
            return
        super().log(request)
