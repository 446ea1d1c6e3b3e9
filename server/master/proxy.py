"""The master's protocol layer: client connections, one exchange per request, CONNECT tunnels.

Parsing and policy live in pure helpers (``http1``, ``target``, ``auth``, ``chooser``); this
module only moves bytes between a client connection and an instance connection, with
back-pressure both ways (each transport is registered as the other's producer while bytes
flow), and with one timer per exchange.
"""
from __future__ import annotations

import fnmatch
import logging
import time
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from ..models import Endpoint
from ..pool import InstancePool
from ..stats import StatsSink
from . import http1
from .answers import connect_established, error_response
from .auth import ScraperAuth, parse_basic
from .chooser import InstanceChooser
from .http1 import HttpError
from .sockwrite import write_now
from .target import Target, parse_authority, request_target
from .tls import TlsCreators
from .upstream import (PendingConnection, Tunnel, UpstreamConnection, UpstreamFailure,
                       UpstreamPool, _describe, _no_delay, proxy_authorization)

log = logging.getLogger(__name__)
access_log = logging.getLogger("scrapoxy.access")

_REQUEST_DROP = frozenset({http1.PROXYNAME_HEADER, b"location", b"host", b"content-length"})
_RESPONSE_DROP = frozenset({http1.PROXYNAME_HEADER, b"content-length"})
# CONNECT session tokens remembered; past this the least recently pinned is forgotten (its next
# tunnel then picks an instance afresh), so clients minting tokens cannot grow memory forever.
MAX_SESSIONS = 100_000


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
        self.sessions: dict[str, str] = {}  # CONNECT session token -> instance name

    def buildProtocol(self, addr: Any) -> "MasterProtocol":
        protocol = MasterProtocol(self)
        protocol.factory = self
        return protocol

    def pin_session(self, token: str, name: str) -> None:
        """CONNECT session ``token`` now tunnels through instance ``name``."""
        sessions = self.sessions
        sessions.pop(token, None)  # re-inserted last: the dict's order is recency
        if len(sessions) >= MAX_SESSIONS:
            del sessions[next(iter(sessions))]
        sessions[token] = name

    def session_instance(self, token: str) -> str | None:
        """The instance CONNECT session ``token`` last tunnelled through, if any. The commander
        stops it on a ban reported by token: such a client never sees the CONNECT's reply
        headers, so it cannot name the instance itself."""
        return self.sessions.get(token)

    def host_allowed(self, host: str) -> bool:
        settings = self.settings
        if any(fnmatch.fnmatchcase(host, pattern) for pattern in settings.deny):
            return False
        if settings.allow:
            return any(fnmatch.fnmatchcase(host, pattern) for pattern in settings.allow)
        return True


class MasterProtocol(Protocol):
    """One client connection; requests on it are handled one at a time (pipelining queues)."""

    def __init__(self, factory: MasterFactory) -> None:
        self.f = factory
        self.buffer = b""
        self.exchange: Exchange | None = None
        self.tunnel: TunnelRelay | None = None
        self.closing = False

    def connectionMade(self) -> None:
        _no_delay(self.transport)

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
        end = buffer.find(b"\r\n\r\n")
        skip = 4
        if end < 0:
            end = buffer.find(b"\n\n")
            skip = 2
        if end < 0:
            self.buffer = buffer
            if len(buffer) > http1.MAX_HEAD_BYTES:
                self.refuse(HttpError("request head too large", status=431))
            return False
        head_block, self.buffer = buffer[:end], buffer[end + skip:]
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
        if not keep_alive:
            self.closing = True
            self.transport.loseConnection()
            return
        self.transport.resumeProducing()
        if self.buffer:
            self.process()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.closing = True
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

    def __init__(self, client: MasterProtocol, head: http1.RequestHead) -> None:
        self.client = client
        self.f = client.f
        self.head = head
        self.started_at = time.monotonic()
        self.endpoint: Endpoint | None = None
        self.upstream: UpstreamConnection | None = None
        self.pending: PendingConnection | None = None
        self.waiting: defer.Deferred | None = None
        self.timer: Any = None
        self.last_activity = 0.0
        self.target: Target | None = None
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

    # --- request side ------------------------------------------------------------------

    def start(self) -> None:
        client = self.client
        client.exchange = self
        head = self.head
        try:
            if self.f.auth is not None and not self.f.auth.check(
                    parse_basic(head.get(b"proxy-authorization"))):
                raise HttpError("proxy authentication required", status=407, code="auth")
            self.target = request_target(method=head.method, target=head.target,
                                         location=head.get(b"location"))
            if not self.f.host_allowed(self.target.host):
                raise HttpError(f"{self.target.host} is not allowed", status=403, code="forbidden")
            self.body_kind, self.body_left = http1.request_framing(head)
        except HttpError as exc:
            self.fail_early(exc)
            return
        if b"close" in http1.connection_tokens(head.headers):
            self.keep_alive = False
        if self.body_kind == http1.CHUNKED:
            self.body_reader = http1.ChunkedReader()
        self.reading_body = self.body_kind != http1.NO_BODY
        self.request_bytes = self._request_head_bytes()
        self.f.pool.activity()
        pinned = _header_text(head.get(http1.PROXYNAME_HEADER))
        endpoint = self.f.chooser.choose(domain=self.target.host, pinned=pinned)
        if endpoint is None:
            self._wait_for_instance(pinned)
            return
        self.dispatch(endpoint)

    def _request_head_bytes(self) -> bytes:
        head, target = self.head, self.target
        assert target is not None
        line = head.method + b" " + (target.path if target.tls else target.absolute) + b" HTTP/1.1\r\n"
        headers = http1.filter_headers(head.headers, drop=_REQUEST_DROP)
        parts = [line, b"Host: ", target.authority, b"\r\n", http1.serialize_headers(headers)]
        if self.body_kind == http1.CHUNKED:
            parts.append(b"Transfer-Encoding: chunked\r\n")
        elif self.body_kind == http1.LENGTH:
            parts.append(b"Content-Length: %d\r\n" % self.body_left)
        return b"".join(parts)

    def _wait_for_instance(self, pinned: str | None) -> None:
        wait = self.f.settings.wait_for_instance
        if wait <= 0:
            self.no_instance()
            return
        # The client keeps being read while it waits, so a client that hangs up is noticed.
        self.waiting = self.f.pool.wait_alive()
        self.timer = self.f.reactor.callLater(wait, self._wait_expired)

        def alive(_: object) -> None:
            self.waiting = None
            self._cancel_timer()
            endpoint = self.f.chooser.choose(domain=self.target.host, pinned=pinned)
            if endpoint is None:
                self.no_instance()
            else:
                self.dispatch(endpoint)

        self.waiting.addCallbacks(alive, lambda failure: None)

    def _wait_expired(self) -> None:
        self.timer = None
        waiting, self.waiting = self.waiting, None
        if waiting is not None:
            waiting.cancel()
        self.no_instance()

    def no_instance(self) -> None:
        self.respond_error(HttpError("no instance is alive; the pool may be waking up",
                                     status=503, code="no_instance"), retry_after=5)

    def dispatch(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.f.pool.acquire(endpoint.name)
        self.inflight_name = endpoint.name
        target = self.target
        tunnel = Tunnel(target.host, target.port, self.f.tls.for_host(target.host)) if target.tls else None
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
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self.response_head_buffer = buffer
                if len(buffer) > http1.MAX_HEAD_BYTES:
                    self.respond_error(HttpError("response head too large", status=502, code="upstream"))
                return
            try:
                head = http1.parse_response_head(buffer[:end])
            except HttpError as exc:
                self.respond_error(exc)
                return
            buffer = buffer[end + 4:]
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
            self.response_reader = http1.ChunkedReader(decode=not client_http11)
        if not client_http11 or self.response_kind == http1.UNTIL_CLOSE:
            self.keep_alive = False
        headers = http1.filter_headers(head.headers, drop=_RESPONSE_DROP)
        parts = [b"HTTP/1.1 %d %s\r\n" % (head.status, head.reason), http1.serialize_headers(headers)]
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
            except HttpError:
                if head:
                    write_now(self.client.transport, head)
                self.abort_both(None)
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
            if not self.target.tls:
                # A healthy instance answers (e.g. 502) when the target fails; silence is its own.
                self.f.pool.report_failure(self.endpoint.name)
            message = f"instance {self.endpoint.name} failed: {_describe(reason)}"
            self.respond_error(HttpError(message, status=502, code="upstream"))
            return
        if self.response_kind == http1.UNTIL_CLOSE:
            self.upstream_reusable = False
            self.finish()
            return
        # The status line went out already: cut the client connection, never patch it.
        self.abort_client()

    def _retry_stale(self, reason: Failure) -> bool:
        """A reused keep-alive connection the instance had closed: retry once, fresh."""
        if self.retried or not self.reused_connection or self.body_kind != http1.NO_BODY:
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
        reactor = self.f.reactor
        self.last_activity = reactor.seconds()
        if self.timer is None:
            self.timer = reactor.callLater(self.f.settings.idle_timeout, self._idle_check)

    def _idle_check(self) -> None:
        self.timer = None
        if self.finished:
            return
        idle_for = self.f.reactor.seconds() - self.last_activity
        left = self.f.settings.idle_timeout - idle_for
        if left > 0.001:
            self.timer = self.f.reactor.callLater(left, self._idle_check)
            return
        if self.response_started:
            self.abort_client()
        else:
            self.respond_error(HttpError(
                f"instance {self.endpoint.name} or the target sent nothing for "
                f"{self.f.settings.idle_timeout:g}s", status=504, code="timeout"))

    def _cancel_timer(self) -> None:
        timer, self.timer = self.timer, None
        if timer is not None and timer.active():
            timer.cancel()

    # --- endings -----------------------------------------------------------------------

    def finish(self) -> None:
        """The response is complete."""
        if self.finished:
            return
        self.finished = True
        self._cancel_timer()
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
        if self.finished:
            return
        self.finished = True
        self._cancel_timer()
        self._drop_upstream()
        self._release_instance()
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
        if self.finished:
            return
        self.finished = True
        self._cancel_timer()
        self._drop_upstream()
        self._release_instance()
        self._record(self.response_status or 502, "upstream")
        self.client.exchange = None
        self.client.closing = True
        # Flush what was relayed, then close: the client sees a short body and nothing else.
        self.client.transport.unregisterProducer()
        self.client.transport.loseConnection()

    def client_lost(self) -> None:
        if self.finished:
            return
        self.finished = True
        self._cancel_timer()
        waiting, self.waiting = self.waiting, None
        if waiting is not None:
            waiting.cancel()
        self._drop_upstream()
        self._release_instance()

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
        if self.f.settings.access_log:
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
        self.waiting: defer.Deferred | None = None
        self.timer: Any = None
        self.early = b""
        self.done = False
        self.started_at = time.monotonic()
        self.bytes_up = 0
        self.bytes_down = 0
        self.acquired = False

    def start(self) -> None:
        self.f.pool.activity()
        self.early, self.client.buffer = self.client.buffer, b""
        endpoint = self.f.chooser.choose(domain=self.host, pinned=self.pinned)
        if endpoint is not None:
            self.dispatch(endpoint)
            return
        wait = self.f.settings.wait_for_instance
        if wait <= 0:
            self.fail(HttpError("no instance is alive", status=503, code="no_instance"))
            return
        self.waiting = self.f.pool.wait_alive()
        self.timer = self.f.reactor.callLater(wait, self._wait_expired)

        def alive(_: object) -> None:
            self.waiting = None
            if self.timer is not None and self.timer.active():
                self.timer.cancel()
            self.timer = None
            chosen = self.f.chooser.choose(domain=self.host, pinned=self.pinned)
            if chosen is None:
                self.fail(HttpError("no instance is alive", status=503, code="no_instance"))
            else:
                self.dispatch(chosen)

        self.waiting.addCallbacks(alive, lambda failure: None)

    def _wait_expired(self) -> None:
        self.timer = None
        waiting, self.waiting = self.waiting, None
        if waiting is not None:
            waiting.cancel()
        self.fail(HttpError("no instance is alive", status=503, code="no_instance"))

    def dispatch(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        if self.session is not None:
            self.f.pin_session(self.session, endpoint.name)
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
        self.f.pool.served(self.endpoint.name)
        client_transport = self.client.transport
        client_transport.write(connect_established(self.endpoint.name))
        client_transport.registerProducer(connection.transport, True)
        connection.transport.registerProducer(client_transport, True)
        client_transport.resumeProducing()
        if self.early:
            early, self.early = self.early, b""
            self.client_data(early)

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
        write_now(self.upstream.transport, data)

    def upstream_data(self, data: bytes) -> None:
        self.bytes_down += len(data)
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
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
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
        if self.f.settings.access_log:
            log_request(client=self.client.transport.getPeer(), method=b"CONNECT",
                        target=f"{self.host}:{self.port}".encode(), instance=instance,
                        status=status, error=error, bytes_up=bytes_up, bytes_down=bytes_down,
                        duration=duration)

    def _release(self) -> None:
        if self.acquired:
            self.acquired = False
            self.f.pool.release(self.endpoint.name)


def log_request(*, client: Any, method: bytes, target: bytes, instance: str | None, status: int,
                error: str | None, bytes_up: int, bytes_down: int, duration: float) -> None:
    """The access log line; never the scraper's credentials (they are not in the target)."""
    access_log.info("%s %s %s via=%s status=%d error=%s up=%d down=%d ms=%.1f",
                    getattr(client, "host", "?"), method.decode("latin-1"),
                    target[:300].decode("latin-1"), instance or "-", status, error or "-",
                    bytes_up, bytes_down, duration * 1000)


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
