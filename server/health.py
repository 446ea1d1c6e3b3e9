"""Health check of one instance: a plain GET of the check URL *through* it.

The request is ordinary absolute-form HTTP proxying (``GET http://host/path HTTP/1.1`` with
``Host``, ``Connection: close`` and, when the instance has credentials,
``Proxy-Authorization: Basic``), so it works against stock tinyproxy and squid as well as
``scrapoxy-instance``; no custom ``/ping`` route is needed. The check URL answers the caller's
address, so the response body, when it parses as an IP address, is the instance's egress
address: the manager keeps it as the fingerprint.

Each check is one fresh connection (a stale pooled socket must never make a dead instance
look alive) spoken with the master's own HTTP/1.1 helpers: a pool of a thousand instances
is checked every few seconds, so a check costs one small protocol object, not an HTTP client
stack.
"""
from __future__ import annotations

import base64
from typing import Any
from urllib.parse import urlsplit

from twisted.internet import defer, protocol
from twisted.python.failure import Failure

from .master import http1
from .master.http1 import HttpError
from .models import Endpoint

# The check URL answers one short line; anything much longer is not a health answer.
MAX_BODY_BYTES = 4096


class HealthError(Exception):
    """The check failed: no answer in time, a broken answer, or not a 2xx."""


class HealthChecker:
    """Checks instances by fetching ``url`` through them.

    :param reactor: the Twisted reactor (injected so tests can pass their own).
    :param url: an ``http://`` URL every instance can reach, ideally answering the caller's IP.
    :param timeout: seconds for the whole check (connect, request, body) before it fails.
    """

    def __init__(self, *, reactor: Any, url: str, timeout: float) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.netloc:
            raise ValueError(f"health check URL must be http://HOST[:PORT]/PATH, got {url!r}")
        self._reactor = reactor
        self._url = url
        self._timeout = timeout
        # Everything but the instance's credentials is the same for every check.
        self._request = (b"GET " + url.encode("ascii") + b" HTTP/1.1\r\nHost: "
                         + parts.netloc.encode("ascii")
                         + b"\r\nUser-Agent: scrapoxy-health\r\nConnection: close\r\n")

    @property
    def url(self) -> str:
        return self._url

    def reconfigure(self, *, url: str, timeout: float) -> None:
        """A new check URL or timeout (``PATCH /api/config``), used from the next check."""
        self._url = url
        self._timeout = timeout

    def check(self, endpoint: Endpoint) -> defer.Deferred:
        """GET the check URL through ``endpoint``; fires with the stripped body text.

        Fails with ``HealthError`` on a connection error, a non-2xx status, a broken answer
        or the timeout.
        """
        request = self._request
        if endpoint.credentials is not None:
            token = f"{endpoint.credentials.username}:{endpoint.credentials.password}"
            request += (b"Proxy-Authorization: Basic "
                        + base64.b64encode(token.encode("utf-8")) + b"\r\n")
        check = _Check(request + b"\r\n")
        factory = _CheckFactory(check)
        connector = self._reactor.connectTCP(endpoint.address.hostname.strip("[]"),
                                             endpoint.address.port, factory,
                                             timeout=self._timeout)
        timer = self._reactor.callLater(self._timeout, check.time_out, self._timeout, connector)
        check.done.addBoth(_stop_timer, timer)
        return check.done


def _stop_timer(result: Any, timer: Any) -> Any:
    if timer.active():
        timer.cancel()
    return result


class _Check(protocol.Protocol):
    """One check's connection: send the request, read one response, close."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.done: defer.Deferred = defer.Deferred()
        self.buffer = b""
        self.head: http1.ResponseHead | None = None
        self.framing = http1.NO_BODY
        self.left = 0
        self.chunks: http1.ChunkedReader | None = None

    def connectionMade(self) -> None:
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        if self.done.called:
            return
        self.buffer += data
        try:
            body = self._parse()
        except HttpError as exc:
            self._finish(Failure(HealthError(exc.message)))
            return
        if body is not None:
            self._finish(body.decode("utf-8", "replace").strip())

    def _parse(self) -> bytes | None:
        """The body once the response is complete, else None; raises ``HttpError``."""
        if self.head is None:
            found = http1.find_head_end(self.buffer)
            if found is None or found[0] > http1.MAX_HEAD_BYTES:
                if len(self.buffer) > http1.MAX_HEAD_BYTES:
                    raise HttpError("check answer head too large")
                return None
            end, body_start = found
            self.head = head = http1.parse_response_head(self.buffer[:end])
            self.buffer = self.buffer[body_start:]
            if not 200 <= head.status < 300:
                raise HttpError(f"check answered {head.status} "
                                f"{head.reason.decode('latin-1')}".rstrip())
            self.framing, self.left = http1.response_framing(head, request_method=b"GET")
            if self.framing == http1.LENGTH and self.left > MAX_BODY_BYTES:
                raise HttpError(f"check body too long ({self.left} bytes)")
            if self.framing == http1.CHUNKED:
                self.chunks = http1.ChunkedReader(decode=True)
        if self.framing == http1.NO_BODY:
            return b""
        if self.framing == http1.CHUNKED:
            self.chunks.feed(self.buffer)
            self.buffer = b""
            body = b"".join(self.chunks.decoded)
            if len(body) > MAX_BODY_BYTES:
                raise HttpError("check body too long")
            return body if self.chunks.done else None
        if len(self.buffer) > MAX_BODY_BYTES:
            raise HttpError("check body too long")
        if self.framing == http1.LENGTH and len(self.buffer) >= self.left:
            return self.buffer[:self.left]
        return None  # until close, or more of the Content-Length to come

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        if self.done.called:
            return
        if self.head is None:
            self.done.errback(HealthError("connection closed without an answer"))
        elif self.framing == http1.UNTIL_CLOSE:
            self.done.callback(self.buffer.decode("utf-8", "replace").strip())
        else:
            self.done.errback(HealthError(f"body cut: {reason.getErrorMessage()}"))

    def fail_to_connect(self, reason: Failure) -> None:
        if not self.done.called:
            value = reason.value
            text = str(value).strip() or type(value).__name__
            self.done.errback(HealthError(f"{type(value).__name__}: {text}"))

    def time_out(self, seconds: float, connector: Any) -> None:
        if self.done.called:
            return
        self.done.errback(HealthError(f"no answer within {seconds:g} s"))
        connector.disconnect()

    def _finish(self, outcome: Any) -> None:
        # One answer is all a check reads: close at once, whatever the instance does next.
        if self.transport is not None:
            self.transport.abortConnection()
        if not self.done.called:
            if isinstance(outcome, Failure):
                self.done.errback(outcome)
            else:
                self.done.callback(outcome)


class _CheckFactory(protocol.ClientFactory):
    noisy = False  # one per check: no log line each

    def __init__(self, check: _Check) -> None:
        self.check = check

    def buildProtocol(self, addr: Any) -> _Check:
        return self.check

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self.check.fail_to_connect(reason)

