"""Health check of one instance: a plain GET of the check URL *through* it.

The request is ordinary absolute-form HTTP proxying (``GET http://host/path HTTP/1.1`` with
``Host``, ``Connection: close`` and, when the instance has credentials,
``Proxy-Authorization: Basic``), so it works against stock tinyproxy and squid as well as
``scrapoxy-instance``; no custom ``/ping`` route is needed. The check URL answers the caller's
address, so the response body, when it parses as an IP address, is the instance's egress
address: the manager keeps it as the fingerprint.
"""
from __future__ import annotations

import base64
from typing import Any

from twisted.internet import defer, protocol
from twisted.internet.protocol import connectionDone
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.python.failure import Failure
from twisted.web.client import (HTTPConnectionPool, ProxyAgent, ResponseDone, ResponseFailed,
                                ResponseNeverReceived)
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers

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
        if not url.startswith("http://"):
            raise ValueError(f"health check URL must be http://, got {url!r}")
        self._reactor = reactor
        self._url = url.encode("ascii")
        self._timeout = timeout
        # Not persistent: each check is a fresh connection, as a real request would be, so a
        # stale pooled socket can never make a dead instance look alive.
        self._pool = HTTPConnectionPool(reactor, persistent=False)

    @property
    def url(self) -> str:
        return self._url.decode("ascii")

    def check(self, endpoint: Endpoint) -> defer.Deferred:
        """GET the check URL through ``endpoint``; fires with the stripped body text.

        Fails on a connection error, a non-2xx status or the timeout.
        """
        return defer.ensureDeferred(self._check(endpoint))

    async def _check(self, endpoint: Endpoint) -> str:
        host = endpoint.address.hostname.strip("[]")
        endpoint_cls = TCP6ClientEndpoint if ":" in host else TCP4ClientEndpoint
        proxy = endpoint_cls(self._reactor, host, endpoint.address.port, timeout=self._timeout)
        agent = ProxyAgent(proxy, reactor=self._reactor, pool=self._pool)
        headers = Headers({b"User-Agent": [b"scrapoxy-health"]})
        if endpoint.credentials is not None:
            token = f"{endpoint.credentials.username}:{endpoint.credentials.password}"
            headers.setRawHeaders(
                b"Proxy-Authorization",
                [b"Basic " + base64.b64encode(token.encode("utf-8"))],
            )
        d = agent.request(b"GET", self._url, headers)
        d.addCallback(self._read)
        d.addErrback(self._explain)
        d.addTimeout(self._timeout, self._reactor, onTimeoutCancel=self._timed_out)
        return await d

    def _timed_out(self, result: Any, timeout: float) -> None:
        raise HealthError(f"no answer within {timeout:g} s")

    @staticmethod
    def _explain(failure: Failure) -> Failure:
        # twisted.web wraps the cause in a list of Failures; users want the cause.
        if failure.check(ResponseNeverReceived, ResponseFailed, PotentialDataLoss):
            reasons = getattr(failure.value, "reasons", None) or []
            causes = [r.value for r in reasons if not r.check(defer.CancelledError)]
            if causes:
                cause = causes[0]
                text = str(cause) or type(cause).__name__
                raise HealthError(f"{type(cause).__name__}: {text}") from None
            if reasons:
                # Only cancellation: the timeout fired; _timed_out says so.
                return failure
            raise HealthError("connection closed without an answer") from None
        return failure

    @staticmethod
    def _read(response: Any) -> defer.Deferred:
        if not 200 <= response.code < 300:
            # Drop the body: the connection closes anyway (Connection: close).
            response.deliverBody(_Discard())
            raise HealthError(f"check answered {response.code} {response.phrase.decode('latin-1')}")
        if isinstance(response.length, int) and response.length > MAX_BODY_BYTES:
            response.deliverBody(_Discard())
            raise HealthError(f"check body too long ({response.length} bytes)")
        body = _Body()
        response.deliverBody(body)
        body.done.addCallback(lambda data: data.decode("utf-8", "replace").strip())
        return body.done


class _Body(protocol.Protocol):
    """Collects up to MAX_BODY_BYTES of a response body."""

    def __init__(self) -> None:
        # Cancelled by the check's timeout: drop the connection rather than leave it open.
        self.done: defer.Deferred = defer.Deferred(lambda _: self._abort())
        self._chunks: list[bytes] = []
        self._size = 0

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.stopProducing()

    def dataReceived(self, data: bytes) -> None:
        if self._size < MAX_BODY_BYTES:
            self._chunks.append(data[: MAX_BODY_BYTES - self._size])
            self._size += len(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.done.called:
            return
        # Connection: close with no length: the end of the connection is the end of the body.
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(b"".join(self._chunks))
        else:
            self.done.errback(HealthError(f"body cut: {reason.getErrorMessage()}"))


class _Discard:
    """A body consumer that ignores what it gets (twisted.web IProtocol shape)."""

    def makeConnection(self, transport: Any) -> None:
        self.transport = transport
        transport.stopProducing()

    def dataReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason: Any) -> None:
        pass
