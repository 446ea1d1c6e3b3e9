"""The master's protocol layer: client connections, one exchange per request, CONNECT tunnels.

Parsing and policy live in pure helpers (``http1``, ``target``, ``auth``, ``chooser``); this
module only moves bytes between a client connection and an instance connection, with
back-pressure both ways (each transport is registered as the other's producer while bytes
flow), and with one timer per client connection.
"""
from __future__ import annotations

import fnmatch
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

from OpenSSL import SSL
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from ..models import Endpoint
from ..pool import InstancePool
from ..stats import StatsSink
from . import http1
from .answers import connect_established, error_response
from .auth import ScraperAuth, parse_basic
from .chooser import InstanceChooser, InstanceWait, SessionPins, choose_or_wait
from .http1 import HttpError
from .instance_errors import instance_error
from .sockwrite import write_now
from .target import Target, canonical_host, parse_authority, request_target
from .tls import TlsCreators
from .upstream import (PendingConnection, Tunnel, UpstreamConnection, UpstreamFailure,
                       UpstreamPool, _describe, _no_delay, proxy_authorization)

log = logging.getLogger(__name__)
access_log = logging.getLogger("scrapoxy.access")

_REQUEST_DROP = frozenset({http1.PROXYNAME_HEADER, b"location", b"host", b"content-length"})
# The master's own headers: a target (or an instance) must not set them for it.
_RESPONSE_DROP = frozenset({http1.PROXYNAME_HEADER, http1.ERROR_HEADER, b"content-length"})
_IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})


@dataclass(frozen=True)
class MasterSettings:
    connect_timeout: float
    idle_timeout: float
    wait_for_instance: float
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    access_log: bool = False


class MasterFactory(Factory):
    """Everything the per-connection protocols share."""

    noisy = False

    def __init__(self, *, reactor: Any, pool: InstancePool, stats: StatsSink,
                 settings: MasterSettings, auth: ScraperAuth | None, tls: TlsCreators) -> None:
        self.reactor = reactor
        self.pool = pool
        self.stats = stats
        self.settings = settings
        self.auth = auth
        self.tls = tls
        self.chooser = InstanceChooser(pool)
        self.upstreams = UpstreamPool(reactor=reactor, connect_timeout=settings.connect_timeout)
        self.sessions = SessionPins()

    def buildProtocol(self, addr: Any) -> "MasterProtocol":
        protocol = MasterProtocol(self)
        protocol.factory = self
        return protocol

    @property
    def settings(self) -> MasterSettings:
        return self._settings

    @settings.setter
    def settings(self, settings: MasterSettings) -> None:
        """Settings may be replaced live (config API); the rules are compiled once here."""
        self._settings = settings
        self._deny = tuple(canonical_host(p) for p in settings.deny)
        self._allow = tuple(canonical_host(p) for p in settings.allow)

    def reconfigure(self, *, settings: MasterSettings, auth: ScraperAuth | None) -> None:
        """New timeouts, rules and scraper auth (``PATCH /api/config``): every request read
        from now on uses them; requests already in flight finish with what they started with.
        """
        self.settings = settings
        self.auth = auth
        self.upstreams.connect_timeout = settings.connect_timeout

    def session_instance(self, token: str) -> str | None:
        """The instance session ``token`` last went through, if any. The commander stops it
        on a ban reported by token: a CONNECT client never sees the CONNECT's reply headers,
        so it cannot name the instance itself."""
        return self.sessions.get(token)

    def host_allowed(self, host: str) -> bool:
        """Allow/deny rules, matched against ``host`` (canonical, as ``parse_authority`` gives)."""
        if not (self._deny or self._allow):
            return True
        if any(fnmatch.fnmatchcase(host, pattern) for pattern in self._deny):
            return False
        if self._allow:
            return any(fnmatch.fnmatchcase(host, pattern) for pattern in self._allow)
        return True


@implementer(IHalfCloseableProtocol)
class MasterProtocol(Protocol):
    """One client connection; requests on it are handled one at a time (pipelining queues).

    A client may half-close (send its requests, then shut its sending side, as ``nc -N`` or
    a shell's ``printf ... | nc`` does): what it sent is answered, then the connection closes;
    in a tunnel the end of input is passed on to the instance.
    """

    def __init__(self, factory: MasterFactory) -> None:
        self.f = factory
        self.buffer = b""
        self.exchange: Exchange | None = None
        self.tunnel: TunnelRelay | None = None
        self.closing = False
        self.read_closed = False
        self.idle_since = 0.0
        self.idle_timer: Any = None

    def connectionMade(self) -> None:
        _no_delay(self.transport)
        reactor = self.f.reactor
        self.idle_since = reactor.seconds()
        self.idle_timer = reactor.callLater(self.f.settings.idle_timeout, self._idle_check)

    def _idle_check(self) -> None:
        """The connection's one timer, for everything idle on it: between requests, the next
        head must arrive whole within ``idle_timeout`` (slow heads and forgotten keep-alives
        are closed); an exchange whose instance or target is silent that long ends (504, or
        a cut once the response started); so does a CONNECT tunnel silent both ways."""
        self.idle_timer = None
        if self.closing:
            return
        reactor = self.f.reactor
        timeout = self.f.settings.idle_timeout
        if self.tunnel is not None and self.tunnel.upstream is not None:
            quiet = reactor.seconds() - self.tunnel.last_activity
            if quiet >= timeout:
                self.closing = True
                self.transport.loseConnection()
                return
        elif self.exchange is not None and self.exchange.upstream is not None:
            quiet = reactor.seconds() - self.exchange.last_activity
            if quiet >= timeout:
                self.exchange.idle_out()
                return
        elif self.exchange is not None or self.tunnel is not None:
            quiet = 0.0  # waiting for an instance or a connection: those have their own timers
        else:
            quiet = reactor.seconds() - self.idle_since
            if quiet >= timeout:
                if self.buffer.strip(b"\r\n"):
                    self.refuse(HttpError(f"request head not complete within {timeout:g}s",
                                          status=408))
                else:
                    self.closing = True
                    self.transport.loseConnection()
                return
        self.idle_timer = reactor.callLater(max(timeout - quiet, 0.01), self._idle_check)

    def dataReceived(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.client_data(data)
            return
        self.buffer = self.buffer + data if self.buffer else data
        self.process()

    def process(self) -> None:
        while self.buffer and not self.closing:
            exchange = self.exchange
            if exchange is None:
                if not self._next_head():
                    return
            elif exchange.reading_body and exchange.upstream is not None:
                used = exchange.client_body(self.buffer)
                self.buffer = self.buffer[used:]
                if used == 0:
                    return
            else:
                # Pipelined bytes, or body bytes before the instance is ready: keep them.
                if len(self.buffer) > http1.MAX_HEAD_BYTES:
                    self.transport.pauseProducing()
                return

    def _next_head(self) -> bool:
        buffer = self.buffer.lstrip(b"\r\n") if self.buffer[:1] in (b"\r", b"\n") else self.buffer
        found = http1.find_head_end(buffer)
        if found is None or found[0] > http1.MAX_HEAD_BYTES:
            self.buffer = buffer
            if len(buffer) > http1.MAX_HEAD_BYTES:
                self.refuse(HttpError("request head too large", status=431))
            return False
        end, body_start = found
        head_block, self.buffer = buffer[:end], buffer[body_start:]
        try:
            head = http1.parse_request_head(head_block)
        except HttpError as exc:
            self.refuse(exc)
            return False
        if head.method == b"CONNECT":
            self._start_tunnel(head)
            return False
        Exchange(self, head).start()
        return True

    def refuse(self, exc: HttpError) -> None:
        self.answer_and_close(error_response(status=exc.status, code=exc.code, message=exc.message))

    def answer_and_close(self, payload: bytes) -> None:
        self.closing = True
        self.buffer = b""
        self.transport.write(payload)
        self.transport.loseConnection()

    def exchange_done(self, *, keep_alive: bool) -> None:
        self.exchange = None
        self.idle_since = self.f.reactor.seconds()
        if not keep_alive:
            self.closing = True
            self.transport.loseConnection()
            return
        self.transport.resumeProducing()
        if self.buffer:
            self.process()
        if self.read_closed:
            self._close_when_idle()

    def readConnectionLost(self) -> None:
        """The client will send nothing more; its side to us stays open for the answers."""
        self.read_closed = True
        if self.tunnel is not None:
            self.tunnel.client_eof()
        elif self.exchange is not None and self.exchange.reading_body:
            # The request body was cut short: nothing sensible can be sent on.
            self.transport.loseConnection()
        else:
            self._close_when_idle()

    def writeConnectionLost(self) -> None:
        """Not used: the master never half-closes toward a client."""

    def _close_when_idle(self) -> None:
        """Once the client has half-closed, nothing more can come: close after the last answer
        (a partial head left in the buffer can never complete)."""
        if self.exchange is None and self.tunnel is None and not self.closing:
            self.closing = True
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.closing = True
        timer, self.idle_timer = self.idle_timer, None
        if timer is not None and timer.active():
            timer.cancel()
        exchange, self.exchange = self.exchange, None
        if exchange is not None:
            exchange.client_lost()
        tunnel, self.tunnel = self.tunnel, None
        if tunnel is not None:
            tunnel.client_lost()

    # --- CONNECT (mode 4) --------------------------------------------------------------

    def _start_tunnel(self, head: http1.RequestHead) -> None:
        credentials = parse_basic(head.get(b"proxy-authorization"))
        if self.f.auth is not None and not self.f.auth.check(credentials):
            self.answer_and_close(error_response(
                status=407, code="auth", message="proxy authentication required"))
            return
        try:
            host, port = parse_authority(head.target, default_port=None)
        except HttpError as exc:
            self.refuse(exc)
            return
        if not self.f.host_allowed(host):
            self.answer_and_close(error_response(
                status=403, code="forbidden", message=f"{host} is not allowed"))
            return
        pinned = _header_text(head.get(http1.PROXYNAME_HEADER))
        session = credentials.session if credentials is not None else None
        if pinned is None and session is not None:
            pinned = self.f.sessions.get(session)
        self.tunnel = TunnelRelay(self, host=host, port=port, pinned=pinned, session=session)
        self.tunnel.start()


class Exchange:
    """One request and its response, between the client and one instance."""

    # One per request: slots make it cheaper to build and to read on the hot path.
    __slots__ = ("body_kind", "body_left", "body_reader", "bytes_down", "bytes_up", "client",
                 "endpoint", "f", "finished", "head", "inflight_name", "keep_alive",
                 "last_activity", "pending", "reading_body", "request_bytes",
                 "response_head_buffer", "response_kind", "response_left", "response_reader",
                 "response_started", "response_status", "retried", "reused_connection",
                 "session", "started_at", "target", "tls_creator", "upstream", "upstream_reusable",
                 "waiting")

    def __init__(self, client: MasterProtocol, head: http1.RequestHead) -> None:
        self.client = client
        self.f = client.f
        self.head = head
        self.started_at = time.monotonic()
        self.endpoint: Endpoint | None = None
        self.upstream: UpstreamConnection | None = None
        self.pending: PendingConnection | None = None
        self.waiting: InstanceWait | None = None
        self.last_activity = 0.0
        self.target: Target | None = None
        self.tls_creator: Any = None
        self.request_bytes = b""
        self.reading_body = False
        self.body_kind = http1.NO_BODY
        self.body_left = 0
        self.body_reader: http1.ChunkedReader | None = None
        self.keep_alive = head.version == b"HTTP/1.1"
        self.response_head_buffer = b""
        self.response_started = False
        self.response_kind = http1.NO_BODY
        self.response_left = 0
        self.response_reader: http1.ChunkedReader | None = None
        self.response_status = 0
        self.bytes_up = 0
        self.bytes_down = 0
        self.finished = False
        self.retried = False
        self.reused_connection = False
        self.upstream_reusable = True
        self.inflight_name: str | None = None
        self.session: str | None = None

    # --- request side ------------------------------------------------------------------

    def start(self) -> None:
        client = self.client
        client.exchange = self
        head = self.head
        credentials = parse_basic(head.get(b"proxy-authorization"))
        try:
            if self.f.auth is not None and not self.f.auth.check(credentials):
                raise HttpError("proxy authentication required", status=407, code="auth")
            self.target = request_target(method=head.method, target=head.target,
                                         location=head.get(b"location"))
            if not self.f.host_allowed(self.target.host):
                raise HttpError(f"{self.target.host} is not allowed", status=403, code="forbidden")
            self.tls_creator = self.f.tls.for_host(self.target.host) if self.target.tls else None
            self.body_kind, self.body_left = http1.request_framing(head)
        except HttpError as exc:
            self.fail_early(exc)
            return
        if b"close" in http1.connection_tokens(head.headers):
            self.keep_alive = False
        if self.body_kind == http1.CHUNKED:
            self.body_reader = http1.ChunkedReader(strict=True)
        self.reading_body = self.body_kind != http1.NO_BODY
        self.request_bytes = self._request_head_bytes()
        self.f.pool.activity()
        pinned = _header_text(head.get(http1.PROXYNAME_HEADER))
        if credentials is not None and credentials.session is not None:
            self.session = credentials.session
            if pinned is None:
                pinned = self.f.sessions.get(self.session)
        self.waiting = choose_or_wait(
            reactor=self.f.reactor, pool=self.f.pool, chooser=self.f.chooser,
            seconds=self.f.settings.wait_for_instance, domain=self.target.host, pinned=pinned,
            on_chosen=self._chosen, on_none=self.no_instance)

    def _chosen(self, endpoint: Endpoint) -> None:
        self.waiting = None
        self.dispatch(endpoint)

    def _request_head_bytes(self) -> bytes:
        head, target = self.head, self.target
        assert target is not None
        line = head.method + b" " + (target.path if target.tls else target.absolute) + b" HTTP/1.1\r\n"
        parts = [line, b"Host: ", target.authority, b"\r\n",
                 http1.forwarded_headers(head.headers, drop=_REQUEST_DROP)]
        if self.body_kind == http1.CHUNKED:
            parts.append(b"Transfer-Encoding: chunked\r\n")
        elif self.body_kind == http1.LENGTH:
            parts.append(b"Content-Length: %d\r\n" % self.body_left)
        return b"".join(parts)

    def no_instance(self) -> None:
        self.respond_error(HttpError("no instance is alive; the pool may be waking up",
                                     status=503, code="no_instance"), retry_after=5)

    def dispatch(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        if self.session is not None:
            self.f.sessions.pin(self.session, endpoint.name)
        self.f.pool.acquire(endpoint.name)
        self.inflight_name = endpoint.name
        target = self.target
        tunnel = Tunnel(target.host, target.port, self.tls_creator) if target.tls else None
        self.pending = self.f.upstreams.acquire(
            endpoint, tunnel, on_ready=self.upstream_ready, on_error=self.upstream_failed,
            reuse=not self.retried)

    def upstream_ready(self, connection: UpstreamConnection) -> None:
        self.pending = None
        if self.finished:
            self.f.upstreams.release(connection)
            return
        self.upstream = connection
        self.reused_connection = connection.reused
        connection.handler = self
        head = self.request_bytes
        if not self.target.tls:
            auth = proxy_authorization(self.endpoint)
            if auth is not None:
                head += b"Proxy-Authorization: " + auth + b"\r\n"
        write_now(connection.transport, head + b"\r\n")
        self.touch()
        client_transport = self.client.transport
        client_transport.resumeProducing()
        if self.reading_body:
            connection.transport.registerProducer(client_transport, True)
            if self.client.buffer:
                self.client.process()

    def client_body(self, data: bytes) -> int:
        """Forward request body bytes; returns how many belonged to the body."""
        if self.body_kind == http1.LENGTH:
            used = min(self.body_left, len(data))
            self.body_left -= used
            done = self.body_left == 0
        else:
            try:
                used = self.body_reader.feed(data)
            except HttpError as exc:
                self.abort_both(exc)
                return len(data)
            done = self.body_reader.done
        chunk = data if used == len(data) else data[:used]
        write_now(self.upstream.transport, chunk)
        self.bytes_up += used
        # An upload in progress is activity: the idle timer must not cut it.
        self.last_activity = self.f.reactor.seconds()
        if done:
            self.reading_body = False
            self.upstream.transport.unregisterProducer()
        return used

    # --- response side -----------------------------------------------------------------

    def upstream_data(self, data: bytes) -> None:
        self.last_activity = self.f.reactor.seconds()
        if not self.response_started:
            self._response_head(data)
            return
        self._response_body(data)

    def _response_head(self, data: bytes) -> None:
        buffer = self.response_head_buffer + data
        while True:
            found = http1.find_head_end(buffer)
            if found is None or found[0] > http1.MAX_HEAD_BYTES:
                self.response_head_buffer = buffer
                if len(buffer) > http1.MAX_HEAD_BYTES:
                    self.respond_error(HttpError("response head too large", status=502, code="upstream"))
                return
            end, body_start = found
            try:
                head = http1.parse_response_head(buffer[:end])
            except HttpError as exc:
                self.respond_error(exc)
                return
            buffer = buffer[body_start:]
            if 100 <= head.status < 200:
                if head.status == 101:
                    self.respond_error(HttpError("protocol upgrades are not proxied",
                                                 status=502, code="upstream"))
                    return
                if self.head.version == b"HTTP/1.1":
                    self.client.transport.write(b"HTTP/1.1 %d %s\r\n\r\n" % (head.status, head.reason))
                continue
            break
        self.response_head_buffer = b""
        if head.status == 407:
            # Only a proxy asks for proxy credentials, and the master answers 407 for its own
            # scraper auth alone: an instance refusing the master's credentials is its fault.
            self.respond_error(HttpError(
                f"instance {self.endpoint.name} answered 407 (proxy authentication required): "
                "the master's credentials for it are wrong or missing", status=502,
                code="upstream"))
            return
        failure = None if self.target.tls else instance_error(head, buffer)
        if failure is not None:
            status, said = failure
            # The instance answered (it works); the target did not.
            self.respond_error(HttpError(
                f"instance {self.endpoint.name} could not get an answer from "
                f"{self.target.authority.decode('ascii', 'replace')}: {said}", status=status,
                code="timeout" if status == 504 else "upstream"))
            return
        try:
            self.response_kind, self.response_left = http1.response_framing(
                head, request_method=self.head.method)
        except HttpError as exc:
            self.respond_error(exc)
            return
        self.response_status = head.status
        self.response_started = True
        if self.response_kind == http1.UNTIL_CLOSE or b"close" in http1.connection_tokens(head.headers):
            self.upstream_reusable = False
        client_http11 = self.head.version == b"HTTP/1.1"
        if self.response_kind == http1.CHUNKED:
            # Passed through byte for byte to HTTP/1.1 clients, so read strictly: the client
            # gets exactly one valid framing or none (RFC 9112 7.1).
            self.response_reader = http1.ChunkedReader(decode=not client_http11,
                                                       strict=client_http11)
        if not client_http11 or self.response_kind == http1.UNTIL_CLOSE:
            self.keep_alive = False
        parts = [b"HTTP/1.1 %d %s\r\n" % (head.status, head.reason),
                 http1.forwarded_headers(head.headers, drop=_RESPONSE_DROP)]
        if self.response_kind == http1.LENGTH:
            parts.append(b"Content-Length: %d\r\n" % self.response_left)
        elif self.response_kind == http1.NO_BODY:
            length = _first(head.headers, b"content-length")
            if length is not None:
                parts.append(b"Content-Length: " + length + b"\r\n")
        elif self.response_kind == http1.CHUNKED and client_http11:
            parts.append(b"Transfer-Encoding: chunked\r\n")
        parts.append(b"x-cache-proxyname: " + self.endpoint.name.encode() + b"\r\n")
        if not self.keep_alive:
            parts.append(b"Connection: close\r\n")
        parts.append(b"\r\n")
        response_head = b"".join(parts)
        if self.response_kind == http1.NO_BODY:
            write_now(self.client.transport, response_head)
            if buffer:
                self.upstream_reusable = False
            self.finish()
            return
        self.client.transport.registerProducer(self.upstream.transport, True)
        if buffer:
            # Head and the first body bytes leave in one send.
            self._response_body(buffer, head=response_head)
        else:
            write_now(self.client.transport, response_head)

    def _response_body(self, data: bytes, *, head: bytes = b"") -> None:
        """Relay body bytes, after ``head`` (the response head, with the first ones)."""
        kind = self.response_kind
        if kind == http1.LENGTH:
            take = len(data)
            if take > self.response_left:
                take = self.response_left
                self.upstream_reusable = False  # extra bytes: the instance's framing is off
                data = data[:take]
            self.response_left -= take
            write_now(self.client.transport, head + data if head else data)
            self.bytes_down += take
            if self.response_left == 0:
                self.finish()
        elif kind == http1.CHUNKED:
            reader = self.response_reader
            try:
                used = reader.feed(data)
            except HttpError as exc:
                if head:
                    # Nothing sent yet: the client gets an error, not a head and a cut.
                    self.client.transport.unregisterProducer()
                    self.response_started = False
                    exc = HttpError(f"malformed chunked body from upstream: {exc.message}",
                                    status=502, code="upstream")
                self.abort_both(exc)
                return
            if reader.decode:
                payload = b"".join(reader.decoded)
                reader.decoded.clear()
            else:
                payload = data if used == len(data) else data[:used]
            if head or payload:
                write_now(self.client.transport, head + payload)
            self.bytes_down += used
            if reader.done:
                if used != len(data):
                    self.upstream_reusable = False
                self.finish()
        else:
            write_now(self.client.transport, head + data)
            self.bytes_down += len(data)

    def upstream_lost(self, reason: Failure) -> None:
        self.upstream = None
        if self.finished:
            return
        if not self.response_started:
            if self._retry_stale(reason):
                return
            name = self.endpoint.name
            if self.target.tls:
                # The tunnel was up: the target (or TLS with it) failed, not the instance.
                what = "TLS with" if reason.check(SSL.Error) else "connection to"
                message = (f"{what} target {self.target.authority.decode('ascii', 'replace')} "
                           f"failed (through instance {name}): {_describe(reason)}")
            else:
                # A healthy instance answers (e.g. 502) when the target fails; silence is its own.
                self.f.pool.report_failure(name)
                message = f"instance {name} failed: {_describe(reason)}"
            self.respond_error(HttpError(message, status=502, code="upstream"))
            return
        if self.response_kind == http1.UNTIL_CLOSE:
            self.upstream_reusable = False
            self.finish()
            return
        # The status line went out already: cut the client connection, never patch it.
        self.abort_client()

    def _retry_stale(self, reason: Failure) -> bool:
        """A reused keep-alive connection the instance had closed: retry once, fresh.

        Only idempotent requests without a body (RFC 9110 9.2.2: a proxy must not retry a
        non-idempotent request on its own; the instance may have acted on it).
        """
        if (self.retried or not self.reused_connection or self.body_kind != http1.NO_BODY
                or self.head.method not in _IDEMPOTENT):
            return False
        self.retried = True
        self._release_instance()
        self.dispatch(self.endpoint)
        return True

    def upstream_failed(self, failure: UpstreamFailure) -> None:
        self.pending = None
        if self.finished:
            return
        if failure.instance_fault:
            self.f.pool.report_failure(self.endpoint.name)
        status = 504 if failure.code == "timeout" else 502
        self.respond_error(HttpError(f"instance {self.endpoint.name}: {failure.message}",
                                     status=status, code=failure.code))

    # --- timers ------------------------------------------------------------------------

    def touch(self) -> None:
        # The client connection's one timer reads this (``MasterProtocol._idle_check``): no
        # timer is made and cancelled per request.
        self.last_activity = self.f.reactor.seconds()

    def idle_out(self) -> None:
        """Nothing came from the instance or the target for ``idle_timeout`` seconds."""
        if self.finished:
            return
        if self.response_started:
            self.abort_client()
        else:
            self.respond_error(HttpError(
                f"instance {self.endpoint.name} or the target sent nothing for "
                f"{self.f.settings.idle_timeout:g}s", status=504, code="timeout"))

    def _stop_waiting(self) -> None:
        waiting, self.waiting = self.waiting, None
        if waiting is not None:
            waiting.cancel()

    # --- endings -----------------------------------------------------------------------

    def finish(self) -> None:
        """The response is complete."""
        if self.finished:
            return
        self.finished = True
        upstream, self.upstream = self.upstream, None
        client = self.client
        if upstream is not None:
            client.transport.unregisterProducer()
            if self.reading_body:
                # Answered before the body was read: neither side is in a known state.
                upstream.transport.unregisterProducer()
                upstream.handler = None
                upstream.transport.loseConnection()
                self.keep_alive = False
            elif self.upstream_reusable:
                self.f.upstreams.release(upstream)
            else:
                upstream.handler = None
                upstream.transport.loseConnection()
        if self.response_status != 407:  # the instance refusing its own credentials is no proof
            self.f.pool.served(self.endpoint.name)
        self._release_instance()
        self._record(self.response_status, None)
        client.exchange_done(keep_alive=self.keep_alive)

    def fail_early(self, exc: HttpError) -> None:
        """Refused before any instance was chosen: nothing upstream to clean."""
        self.finished = True
        self._record(exc.status, exc.code)
        self.client.exchange = None
        self.client.refuse(exc)

    def respond_error(self, exc: HttpError, *, retry_after: int | None = None) -> None:
        if not self._end():
            return
        self._record(exc.status, exc.code)
        self.client.exchange = None
        name = self.endpoint.name if self.endpoint is not None else None
        self.client.answer_and_close(error_response(
            status=exc.status, code=exc.code, message=exc.message, instance=name,
            retry_after=retry_after))

    def abort_both(self, exc: HttpError | None) -> None:
        if exc is not None and not self.response_started:
            self.respond_error(exc)
            return
        self.abort_client()

    def abort_client(self) -> None:
        if not self._end():
            return
        self._record(self.response_status or 502, "upstream")
        self.client.exchange = None
        self.client.closing = True
        # Flush what was relayed, then close: the client sees a short body and nothing else.
        self.client.transport.unregisterProducer()
        self.client.transport.loseConnection()

    def client_lost(self) -> None:
        self._end()

    def _end(self) -> bool:
        """Over without a clean response: let go of all it holds. False if already over."""
        if self.finished:
            return False
        self.finished = True
        self._stop_waiting()
        self._drop_upstream()
        self._release_instance()
        return True

    def _drop_upstream(self) -> None:
        pending, self.pending = self.pending, None
        if pending is not None:
            pending.cancel()
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            upstream.handler = None
            upstream.transport.abortConnection()

    def _release_instance(self) -> None:
        name, self.inflight_name = self.inflight_name, None
        if name is not None:
            self.f.pool.release(name)

    def _record(self, status: int, error: str | None) -> None:
        duration = time.monotonic() - self.started_at
        instance = self.endpoint.name if self.endpoint is not None else None
        self.f.stats.record(instance=instance, status=status, error=error,
                            bytes_in=self.bytes_down, bytes_out=self.bytes_up, duration=duration)
        if self.f.settings.access_log and access_log.isEnabledFor(logging.INFO):
            target = self.target
            shown = (b"https://" + target.authority + target.path if target.tls else target.absolute
                     ) if target is not None else self.head.target
            log_request(client=self.client.transport.getPeer(), method=self.head.method,
                        target=shown, instance=instance, status=status, error=error,
                        bytes_up=self.bytes_up, bytes_down=self.bytes_down, duration=duration)


class TunnelRelay:
    """A client's CONNECT, tunnelled through an instance as raw bytes."""

    def __init__(self, client: MasterProtocol, *, host: str, port: int, pinned: str | None,
                 session: str | None) -> None:
        self.client = client
        self.f = client.f
        self.host = host
        self.port = port
        self.pinned = pinned
        self.session = session
        self.endpoint: Endpoint | None = None
        self.upstream: UpstreamConnection | None = None
        self.pending: PendingConnection | None = None
        self.waiting: InstanceWait | None = None
        self.early = b""
        self.done = False
        self.started_at = time.monotonic()
        self.last_activity = client.f.reactor.seconds()
        self.bytes_up = 0
        self.bytes_down = 0
        self.acquired = False

    def start(self) -> None:
        self.f.pool.activity()
        self.early, self.client.buffer = self.client.buffer, b""
        self.waiting = choose_or_wait(
            reactor=self.f.reactor, pool=self.f.pool, chooser=self.f.chooser,
            seconds=self.f.settings.wait_for_instance, domain=self.host, pinned=self.pinned,
            on_chosen=self._chosen, on_none=self._no_instance)

    def _chosen(self, endpoint: Endpoint) -> None:
        self.waiting = None
        self.dispatch(endpoint)

    def _no_instance(self) -> None:
        self.waiting = None
        self.fail(HttpError("no instance is alive; the pool may be waking up", status=503,
                            code="no_instance"))

    def dispatch(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        if self.session is not None:
            self.f.sessions.pin(self.session, endpoint.name)
        self.f.pool.acquire(endpoint.name)
        self.acquired = True
        self.client.transport.pauseProducing()
        self.pending = self.f.upstreams.acquire(
            endpoint, Tunnel(self.host, self.port, None), reuse=False,
            on_ready=self.ready, on_error=self.failed)

    def ready(self, connection: UpstreamConnection) -> None:
        self.pending = None
        if self.done:
            connection.transport.abortConnection()
            return
        self.upstream = connection
        connection.handler = self
        self.last_activity = self.f.reactor.seconds()
        self.f.pool.served(self.endpoint.name)
        client_transport = self.client.transport
        client_transport.write(connect_established(self.endpoint.name))
        client_transport.registerProducer(connection.transport, True)
        connection.transport.registerProducer(client_transport, True)
        client_transport.resumeProducing()
        if self.early:
            early, self.early = self.early, b""
            self.client_data(early)
        if self.client.read_closed:
            self.client_eof()

    def client_eof(self) -> None:
        """The client half-closed its side of the tunnel: pass it on once the tunnel is up
        (until then, ``ready`` does), and relay the answer until the instance closes."""
        if self.upstream is not None:
            self.upstream.transport.loseWriteConnection()

    def failed(self, failure: UpstreamFailure) -> None:
        self.pending = None
        if failure.instance_fault:
            self.f.pool.report_failure(self.endpoint.name)
        status = 504 if failure.code == "timeout" else 502
        self.fail(HttpError(f"instance {self.endpoint.name}: {failure.message}",
                            status=status, code=failure.code))

    def fail(self, exc: HttpError) -> None:
        if self.done:
            return
        self.done = True
        self._release()
        self.client.tunnel = None
        self._record(exc.status, exc.code, 0, 0)
        self.client.answer_and_close(error_response(
            status=exc.status, code=exc.code, message=exc.message,
            instance=self.endpoint.name if self.endpoint else None,
            retry_after=5 if exc.code == "no_instance" else None))

    def client_data(self, data: bytes) -> None:
        if self.upstream is None:
            self.early += data
            return
        self.bytes_up += len(data)
        self.last_activity = self.f.reactor.seconds()
        write_now(self.upstream.transport, data)

    def upstream_data(self, data: bytes) -> None:
        self.bytes_down += len(data)
        self.last_activity = self.f.reactor.seconds()
        write_now(self.client.transport, data)

    def upstream_lost(self, reason: Failure) -> None:
        self.upstream = None
        self._end()
        self.client.transport.loseConnection()

    def client_lost(self) -> None:
        pending, self.pending = self.pending, None
        if pending is not None:
            pending.cancel()
        waiting, self.waiting = self.waiting, None
        if waiting is not None:
            waiting.cancel()
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            upstream.handler = None
            upstream.transport.loseConnection()
        self._end()

    def _end(self) -> None:
        if self.done:
            return
        self.done = True
        self._release()
        self._record(200, None, self.bytes_down, self.bytes_up)

    def _record(self, status: int, error: str | None, bytes_down: int, bytes_up: int) -> None:
        duration = time.monotonic() - self.started_at
        instance = self.endpoint.name if self.endpoint else None
        self.f.stats.record(instance=instance, status=status, error=error, bytes_in=bytes_down,
                            bytes_out=bytes_up, duration=duration)
        if self.f.settings.access_log and access_log.isEnabledFor(logging.INFO):
            log_request(client=self.client.transport.getPeer(), method=b"CONNECT",
                        target=(f"[{self.host}]:{self.port}" if ":" in self.host
                                else f"{self.host}:{self.port}").encode(), instance=instance,
                        status=status, error=error, bytes_up=bytes_up, bytes_down=bytes_down,
                        duration=duration)

    def _release(self) -> None:
        if self.acquired:
            self.acquired = False
            self.f.pool.release(self.endpoint.name)


def log_request(*, client: Any, method: bytes, target: bytes, instance: str | None, status: int,
                error: str | None, bytes_up: int, bytes_down: int, duration: float) -> None:
    """The access log line; never credentials, even in a target the master refused."""
    shown = _USERINFO.sub(rb"\1***@", target[:300]).decode("latin-1")
    access_log.info("%s %s %s via=%s status=%d error=%s up=%d down=%d ms=%.1f",
                    getattr(client, "host", "?"), method.decode("latin-1"), shown,
                    instance or "-", status, error or "-", bytes_up, bytes_down,
                    duration * 1000)


# ``scheme://user:password@`` in a raw request target.
_USERINFO = re.compile(rb"^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#@]*@")


def _header_text(value: bytes | None) -> str | None:
    if value is None:
        return None
    text = value.decode("latin-1").strip()
    return text or None


def _first(headers: http1.Headers, name: bytes) -> bytes | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None
