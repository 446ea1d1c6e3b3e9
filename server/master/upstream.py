"""Connections from the master to instances, kept alive and pooled per instance.

A connection is either *plain* (absolute-form requests through the instance) or a *tunnel*
(``CONNECT host:port`` through the instance, then TLS to the target, or raw bytes for a
client's own CONNECT). Pooled connections are never shared across instances or targets.
"""
from __future__ import annotations

import base64
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol as TypingProtocol

from twisted.internet import error as neterror
from twisted.internet.interfaces import IReactorTCP, IReactorTime
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.python.failure import Failure

from ..models import Endpoint
from .http1 import HttpError, ResponseHead, find_head_end, parse_response_head
from .instance_errors import instance_error

log = logging.getLogger(__name__)

MAX_IDLE_PER_KEY = 256


class UpstreamFailure(Exception):
    """The instance (or the target through it) could not be reached or used."""

    def __init__(self, message: str, *, code: str = "upstream", instance_fault: bool = False):
        super().__init__(message)
        self.message = message
        self.code = code  # "upstream" (502) or "timeout" (504)
        # True when the instance itself misbehaved (refused, closed, spoke garbage), as opposed
        # to relaying a target's failure: only those count toward marking it dead.
        self.instance_fault = instance_fault


@dataclass(frozen=True, slots=True)
class Tunnel:
    host: str
    port: int
    # None: raw bytes (a client's own CONNECT); else a TLS client connection creator.
    tls_creator: Any = None

    @property
    def authority(self) -> bytes:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}".encode("idna" if not host.isascii() else "ascii")


class UpstreamHandler(TypingProtocol):
    def upstream_data(self, data: bytes) -> None: ...

    def upstream_lost(self, reason: Failure) -> None: ...


def proxy_authorization(endpoint: Endpoint) -> bytes | None:
    if endpoint.credentials is None:
        return None
    pair = f"{endpoint.credentials.username}:{endpoint.credentials.password}".encode()
    return b"Basic " + base64.b64encode(pair)


class UpstreamConnection(Protocol):
    """One TCP connection to an instance."""

    def __init__(self, *, pool: "UpstreamPool", key: tuple, endpoint: Endpoint,
                 tunnel: Tunnel | None) -> None:
        self.pool = pool
        self.key = key
        self.endpoint = endpoint
        self.tunnel = tunnel
        self.handler: UpstreamHandler | None = None
        self.reused = False
        self.idle_since = 0.0
        self.connected_ok = False
        self.pending: PendingConnection | None = None
        self._handshake = b""
        self.lost = False

    def connectionMade(self) -> None:
        _no_delay(self.transport)
        if self.tunnel is None:
            self._ready()
            return
        lines = [b"CONNECT " + self.tunnel.authority + b" HTTP/1.1",
                 b"Host: " + self.tunnel.authority]
        auth = proxy_authorization(self.endpoint)
        if auth is not None:
            lines.append(b"Proxy-Authorization: " + auth)
        self.transport.write(b"\r\n".join(lines) + b"\r\n\r\n")

    def _ready(self, leftover: bytes = b"") -> None:
        self.connected_ok = True
        pending, self.pending = self.pending, None
        if pending is not None:
            pending.succeed(self)
        if leftover and self.handler is not None:
            self.handler.upstream_data(leftover)

    def dataReceived(self, data: bytes) -> None:
        handler = self.handler
        if handler is not None:
            handler.upstream_data(data)
            return
        if not self.connected_ok:
            self._tunnel_reply(data)
            return
        # Bytes on an idle connection: the instance is confused; do not reuse it.
        self.transport.loseConnection()

    def _tunnel_reply(self, data: bytes) -> None:
        self._handshake += data
        found = find_head_end(self._handshake)
        if found is None or found[0] > 16384:
            if len(self._handshake) > 16384:
                self._fail(UpstreamFailure("instance sent an oversized CONNECT reply",
                                           instance_fault=True))
            return
        end, body_start = found
        head, leftover = self._handshake[:end], self._handshake[body_start:]
        self._handshake = b""
        try:
            reply = parse_response_head(head)
        except HttpError as exc:
            self._fail(UpstreamFailure(f"instance answered CONNECT with garbage: {exc.message}",
                                       instance_fault=True))
            return
        if reply.status != 200:
            self._fail(_tunnel_refused(self.tunnel.authority.decode("ascii", "replace"), reply,
                                       leftover))
            return
        if self.tunnel.tls_creator is not None:
            self.transport.startTLS(self.tunnel.tls_creator)
            leftover = b""  # the target speaks TLS only once we send ClientHello
        self._ready(leftover)

    def _fail(self, failure: UpstreamFailure) -> None:
        pending, self.pending = self.pending, None
        self.transport.abortConnection()
        if pending is not None:
            pending.fail(failure)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.lost = True
        self.pool.forget(self)
        pending, self.pending = self.pending, None
        if pending is not None:
            pending.fail(UpstreamFailure(f"instance closed the connection during CONNECT: "
                                         f"{_describe(reason)}", instance_fault=True))
            return
        handler, self.handler = self.handler, None
        if handler is not None:
            handler.upstream_lost(reason)


class PendingConnection:
    """A connection being opened; ``cancel()`` drops it when the client goes away first."""

    def __init__(self, *, on_ready: Callable[[UpstreamConnection], None],
                 on_error: Callable[[UpstreamFailure], None]) -> None:
        self._on_ready = on_ready
        self._on_error = on_error
        self.connector: Any = None
        self.protocol: UpstreamConnection | None = None
        self.timer: Any = None
        self.done = False

    def succeed(self, connection: UpstreamConnection) -> None:
        if self.done:
            return
        self.done = True
        self._stop_timer()
        self._on_ready(connection)

    def fail(self, failure: UpstreamFailure) -> None:
        if self.done:
            return
        self.done = True
        self._stop_timer()
        self._on_error(failure)

    def cancel(self) -> None:
        if self.done:
            return
        self.done = True
        self._stop_timer()
        if self.protocol is not None and self.protocol.transport is not None:
            self.protocol.pending = None
            self.protocol.transport.abortConnection()
        elif self.connector is not None:
            self.connector.disconnect()

    def _stop_timer(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None


class _Factory(ClientFactory):
    noisy = False  # one per upstream connection: no log line each
    def __init__(self, pending: PendingConnection, build: Callable[[], UpstreamConnection]):
        self.pending = pending
        self.build = build

    def buildProtocol(self, addr: Any) -> UpstreamConnection:
        protocol = self.build()
        protocol.pending = self.pending
        self.pending.protocol = protocol
        return protocol

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        if reason.check(neterror.TimeoutError):
            self.pending.fail(UpstreamFailure("timed out connecting to the instance",
                                              code="timeout", instance_fault=True))
        else:
            self.pending.fail(UpstreamFailure(f"cannot connect to the instance: {_describe(reason)}",
                                              instance_fault=True))


class UpstreamPool:
    """Idle keep-alive connections per (instance, target-of-tunnel)."""

    def __init__(self, *, reactor: IReactorTCP | IReactorTime | Any, connect_timeout: float,
                 idle_keep: float = 15.0) -> None:
        self._reactor = reactor
        # Public: PATCH /api/config changes it for the connections opened afterwards.
        self.connect_timeout = connect_timeout
        self._idle_keep = idle_keep
        self._idle: dict[tuple, list[UpstreamConnection]] = {}

    def acquire(self, endpoint: Endpoint, tunnel: Tunnel | None, *,
                on_ready: Callable[[UpstreamConnection], None],
                on_error: Callable[[UpstreamFailure], None],
                reuse: bool = True) -> PendingConnection | None:
        """Hand a connection to ``on_ready`` (at once when an idle one exists: returns None),
        or open one and return the pending handle."""
        key = (endpoint.name, endpoint.address, tunnel)
        if reuse:
            idle = self._idle.get(key)
            while idle:
                connection = idle.pop()
                if connection.lost:
                    continue
                connection.reused = True
                on_ready(connection)
                return None
        return self.connect(endpoint, tunnel, key=key, on_ready=on_ready, on_error=on_error)

    def connect(self, endpoint: Endpoint, tunnel: Tunnel | None, *, key: tuple,
                on_ready: Callable[[UpstreamConnection], None],
                on_error: Callable[[UpstreamFailure], None]) -> PendingConnection:
        pending = PendingConnection(on_ready=on_ready, on_error=on_error)
        factory = _Factory(pending, lambda: UpstreamConnection(
            pool=self, key=key, endpoint=endpoint, tunnel=tunnel))
        pending.timer = self._reactor.callLater(self.connect_timeout, self._timed_out, pending)
        pending.connector = self._reactor.connectTCP(
            endpoint.address.hostname, endpoint.address.port, factory,
            timeout=self.connect_timeout)
        return pending

    def _timed_out(self, pending: PendingConnection) -> None:
        pending.timer = None
        protocol = pending.protocol
        # Before TCP is up the instance is unreachable; after, it may be waiting on the target.
        failure = UpstreamFailure("timed out connecting through the instance", code="timeout",
                                  instance_fault=protocol is None)
        pending.fail(failure)
        if protocol is not None and protocol.transport is not None:
            protocol.pending = None
            protocol.transport.abortConnection()
        elif pending.connector is not None:
            pending.connector.disconnect()

    def release(self, connection: UpstreamConnection) -> None:
        """Put a connection whose exchange ended cleanly back for reuse."""
        connection.handler = None
        if connection.lost:
            return
        idle = self._idle.setdefault(connection.key, [])
        if len(idle) >= MAX_IDLE_PER_KEY:
            connection.transport.loseConnection()
            return
        # A connection paused by back-pressure would stall the next request on it.
        connection.transport.resumeProducing()
        connection.idle_since = self._reactor.seconds()
        idle.append(connection)

    def forget(self, connection: UpstreamConnection) -> None:
        idle = self._idle.get(connection.key)
        if idle and connection in idle:
            idle.remove(connection)
            if not idle:
                del self._idle[connection.key]

    def sweep(self) -> None:
        """Close connections idle longer than the instances are likely to keep them."""
        limit = self._reactor.seconds() - self._idle_keep
        for key in list(self._idle):
            for connection in list(self._idle.get(key, ())):
                if connection.idle_since < limit:
                    connection.transport.loseConnection()

    def close_all(self) -> None:
        for idle in list(self._idle.values()):
            for connection in list(idle):
                connection.transport.loseConnection()
        self._idle.clear()

    def idle_count(self) -> int:
        return sum(len(v) for v in self._idle.values())


def _tunnel_refused(authority: str, reply: ResponseHead, body_start: bytes) -> UpstreamFailure:
    """Why the instance opened no tunnel: in its own words when it is a proxy we know (the
    target is unreachable: not a refusal), else its status."""
    if reply.status == 407:
        return UpstreamFailure(f"refused CONNECT {authority}: it answered 407 (proxy "
                               "authentication required): the master's credentials for it are "
                               "wrong or missing")
    code = "timeout" if reply.status == 504 else "upstream"
    said = instance_error(reply, body_start)
    if said is not None:
        return UpstreamFailure(f"could not open a tunnel to {authority}: {said[1]}", code=code)
    return UpstreamFailure(f"refused CONNECT {authority} with status {reply.status}", code=code)


def _no_delay(transport: Any) -> None:
    # Without TCP_NODELAY small exchanges stall ~40 ms (Nagle + delayed ACK).
    try:
        transport.setTcpNoDelay(True)
    except (AttributeError, OSError, socket.error):
        pass


def _describe(reason: Failure | None) -> str:
    if reason is None:
        return "connection lost"
    value = reason.value
    name = type(value).__name__
    text = str(value).strip()
    return f"{name}: {text}" if text else name
