"""The Twisted layer of ``scrapoxy-instance``: a small forward proxy (CONNECT + absolute-form).

One :class:`InstanceProxyProtocol` per client connection. Parsing and header decisions live in
``http1``; this module only moves bytes. Each request gets its own upstream TCP connection,
opened from the configured source address, and sent ``Connection: close``; the client side is
kept alive with exact HTTP/1.1 framing, because the master pools its connections to instances.

Flow control runs both ways: the upstream socket pauses reading from the client when its
write buffer fills, and the client socket pauses the upstream in turn.
"""
from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer, endpoints, error, interfaces, protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from scrapoxy_server.instance import http1

log = Logger(namespace="scrapoxy.instance")

CONNECT_ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n"
PROXY_AUTHENTICATE = ((b"Proxy-Authenticate", b'Basic realm="scrapoxy-instance"'),)


@dataclass(frozen=True)
class InstanceSettings:
    """What one ``scrapoxy-instance`` process is configured with.

    ``credentials`` is ``user:password`` as bytes; when set, every request must carry it in
    ``Proxy-Authorization: Basic``.
    """

    source: str | None = None
    credentials: bytes | None = field(default=None, repr=False)
    connect_timeout_s: float = 10.0


def _ip_version(host: str) -> int | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).version
    except ValueError:
        return None


class UpstreamConnector:
    """Opens TCP connections to targets, from the source address when the family allows it.

    A 127.x source cannot reach ``::1``: for a target of the other family the connection is
    made without binding rather than failing.
    """

    def __init__(self, reactor: Any, *, source: str | None, timeout_s: float) -> None:
        self._reactor = reactor
        self._source = source
        self._source_version = None if source is None else _ip_version(source)
        self._timeout_s = timeout_s

    def _bind_for(self, version: int | None) -> tuple[str, int] | None:
        if self._source is None or (version is not None and version != self._source_version):
            return None
        return (self._source, 0)

    def connect(self, host: str, port: int, factory: protocol.Factory) -> defer.Deferred:
        version = _ip_version(host)
        endpoint: Any
        if version == 4:
            endpoint = endpoints.TCP4ClientEndpoint(
                self._reactor, host, port, timeout=self._timeout_s, bindAddress=self._bind_for(4))
        elif version == 6:
            endpoint = endpoints.TCP6ClientEndpoint(
                self._reactor, host, port, timeout=self._timeout_s, bindAddress=self._bind_for(6))
        else:
            # A name may resolve to both families; attempts of the source's other family fail
            # to bind and the endpoint moves on to the next address.
            endpoint = endpoints.HostnameEndpoint(
                self._reactor, host, port, timeout=self._timeout_s,
                bindAddress=self._bind_for(None))
        return defer.maybeDeferred(endpoint.connect, factory)


class _ReadValve:
    """Pauses reading from a transport while at least one reason holds.

    Twisted's pause/resume are not counted, and several things may want the client paused at
    once (a full upstream buffer, too many pipelined bytes); the valve keeps them apart.
    """

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self._reasons: set[str] = set()

    def hold(self, reason: str) -> None:
        if not self._reasons:
            self._transport.pauseProducing()
        self._reasons.add(reason)

    def release(self, reason: str) -> None:
        if reason in self._reasons:
            self._reasons.discard(reason)
            if not self._reasons:
                self._transport.resumeProducing()


@implementer(interfaces.IPushProducer)
class _ValveProducer:
    """Registered on the upstream transport: its back-pressure pauses client reads."""

    def __init__(self, valve: _ReadValve, reason: str) -> None:
        self._valve = valve
        self._reason = reason

    def pauseProducing(self) -> None:
        self._valve.hold(self._reason)

    def resumeProducing(self) -> None:
        self._valve.release(self._reason)

    def stopProducing(self) -> None:
        self._valve.release(self._reason)


class _UpstreamProtocol(protocol.Protocol):
    """The connection to a target; reports everything to its owner while it has one."""

    def __init__(self) -> None:
        self.owner: InstanceProxyProtocol | None = None

    def connectionMade(self) -> None:
        _set_no_delay(self.transport)

    def dataReceived(self, data: bytes) -> None:
        if self.owner is not None:
            self.owner.upstream_data(self, data)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        owner, self.owner = self.owner, None
        if owner is not None:
            owner.upstream_lost(self, reason)


class _UpstreamFactory(protocol.Factory):
    noisy = False
    protocol = _UpstreamProtocol


def _set_no_delay(transport: Any) -> None:
    # Without TCP_NODELAY small request/response exchanges stall ~25 ms (Nagle + delayed ACK).
    set_no_delay = getattr(transport, "setTcpNoDelay", None)
    if set_no_delay is not None:
        try:
            set_no_delay(True)
        except OSError:
            pass


class _State(enum.Enum):
    HEAD = "head"              # reading a request head
    CONNECTING = "connecting"  # waiting for the upstream TCP connection
    EXCHANGE = "exchange"      # relaying one request and its response
    TUNNEL = "tunnel"          # CONNECT established: raw bytes both ways
    CLOSED = "closed"


class _Phase(enum.Enum):
    HEAD = "head"
    BODY = "body"
    DONE = "done"


@implementer(interfaces.IHalfCloseableProtocol)
class InstanceProxyProtocol(protocol.Protocol):
    """One client connection: a sequence of proxied requests, or one CONNECT tunnel.

    A tunnel's client may half-close (it has sent everything): the end of input is passed on
    to the target and its answer still relayed, as stock proxies do.
    """

    def __init__(self, *, settings: InstanceSettings, connector: UpstreamConnector) -> None:
        self._settings = settings
        self._connector = connector
        self._upstream_factory = _UpstreamFactory()
        self._state = _State.HEAD
        self._buffer = b""
        self._valve: _ReadValve | None = None
        self._upstream: _UpstreamProtocol | None = None
        self._connecting: defer.Deferred | None = None
        self._client_eof = False
        self._reset_exchange()

    def _reset_exchange(self) -> None:
        self._tunnel = False
        self._method = b""
        self._client_version = b"HTTP/1.1"
        self._close_after = False
        self._target_text = ""
        self._upstream_head = b""
        self._request_reader: http1.LengthReader | http1.ChunkedReader | None = None
        self._response_phase = _Phase.HEAD
        self._response_buffer = b""
        self._response_reader: http1.LengthReader | http1.ChunkedReader | None = None
        self._response_started = False
        self._decode_chunked = False

    # -- client side -------------------------------------------------------------------------

    def connectionMade(self) -> None:
        _set_no_delay(self.transport)
        self._valve = _ReadValve(self.transport)

    def dataReceived(self, data: bytes) -> None:
        if self._state is _State.TUNNEL and self._upstream is not None:
            self._upstream.transport.write(data)
        elif self._state is _State.EXCHANGE and self._request_reader is not None:
            self._relay_request_body(data)
        elif self._state is not _State.CLOSED:
            self._buffer += data
            if self._state is _State.HEAD:
                self._next_request()
            elif len(self._buffer) > http1.MAX_HEAD_BYTES:
                # Pipelined bytes wait for the current exchange; do not let them pile up.
                self._valve.hold("pipelined")

    def readConnectionLost(self) -> None:
        self._client_eof = True
        if self._state is _State.TUNNEL and self._upstream is not None:
            self._upstream.transport.loseWriteConnection()
        elif not (self._state is _State.CONNECTING and self._tunnel):
            # Outside a tunnel an end of input ends the connection (its pending answer
            # is flushed first); a tunnel still connecting passes it on once up.
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        """Not used: the instance never half-closes toward its client."""

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        was_tunnel = self._state is _State.TUNNEL
        self._state = _State.CLOSED
        self._drop_upstream(graceful=was_tunnel)

    def _next_request(self) -> None:
        end = http1.find_head_end(self._buffer)
        if end is None:
            if len(self._buffer) > http1.MAX_HEAD_BYTES:
                self._reply_error(431, "request head too large")
            return
        head_bytes, self._buffer = self._buffer[:end], self._buffer[end:]
        try:
            self._start_request(http1.parse_request_head(head_bytes))
        except http1.HttpError as exc:
            self._reply_error(exc.status, exc.message)

    def _start_request(self, request: http1.RequestHead) -> None:
        expected = self._settings.credentials
        if expected is not None and not http1.check_proxy_authorization(request.headers, expected):
            self._reply_error(407, "proxy authentication required",
                              extra_headers=PROXY_AUTHENTICATE)
            return
        self._method = request.method
        self._client_version = request.version
        self._close_after = http1.wants_close(request)
        if request.method == b"CONNECT":
            host, port = http1.parse_connect_target(request.target)
            self._tunnel = True
        else:
            target = http1.parse_proxy_target(request.target)
            framing = http1.request_framing(request)
            self._request_reader = http1.body_reader(framing, error_status=400)
            self._upstream_head = http1.upstream_request_head(request, target)
            host, port = target.host, target.port
        self._target_text = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self._state = _State.CONNECTING
        connecting = self._connector.connect(host, port, self._upstream_factory)
        self._connecting = connecting
        connecting.addCallbacks(self._on_connected, self._on_connect_failed)
        connecting.addErrback(self._on_unexpected)

    def _relay_request_body(self, data: bytes) -> None:
        assert self._request_reader is not None and self._upstream is not None
        try:
            consumed, _ = self._request_reader.feed(data)
        except http1.HttpError as exc:
            self._reply_error(exc.status, exc.message)
            return
        if consumed:
            self._upstream.transport.write(data[:consumed])
        if self._request_reader.done:
            self._request_reader = None
            self._buffer += data[consumed:]

    # -- upstream connection -----------------------------------------------------------------

    def _on_connected(self, upstream: _UpstreamProtocol) -> None:
        self._connecting = None
        if self._state is not _State.CONNECTING:
            upstream.transport.abortConnection()
            return
        upstream.owner = self
        self._upstream = upstream
        upstream.transport.registerProducer(_ValveProducer(self._valve, "upstream"), True)
        self.transport.registerProducer(upstream.transport, True)
        pending, self._buffer = self._buffer, b""
        self._valve.release("pipelined")
        if self._tunnel:
            self._state = _State.TUNNEL
            self.transport.write(CONNECT_ESTABLISHED)
            if pending:
                upstream.transport.write(pending)
            if self._client_eof:
                upstream.transport.loseWriteConnection()
            return
        self._state = _State.EXCHANGE
        upstream.transport.write(self._upstream_head)
        if self._request_reader is None:
            self._buffer = pending
        elif pending:
            self._relay_request_body(pending)

    def _on_connect_failed(self, failure: Failure) -> None:
        self._connecting = None
        if self._state is not _State.CONNECTING or failure.check(
            defer.CancelledError, error.ConnectingCancelledError
        ):
            return
        log.info("connect to {target} failed: {error}", target=self._target_text,
                 error=failure.getErrorMessage())
        if failure.check(error.TimeoutError):
            self._reply_error(504, f"connecting to {self._target_text} timed out")
        else:
            self._reply_error(
                502, f"cannot connect to {self._target_text}: {failure.type.__name__}")

    def _on_unexpected(self, failure: Failure) -> None:
        # A bug in a callback must cost one connection, never the process.
        log.failure("unexpected error while proxying", failure)
        self._abort()

    def upstream_data(self, upstream: _UpstreamProtocol, data: bytes) -> None:
        if upstream is not self._upstream:
            return
        if self._state is _State.TUNNEL:
            self.transport.write(data)
        elif self._response_phase is _Phase.HEAD:
            self._response_buffer += data
            self._read_response_heads()
        elif self._response_phase is _Phase.BODY:
            self._relay_response_body(data)
        # After the response (Phase.DONE) the origin has nothing more to say; surplus is dropped.

    def upstream_lost(self, upstream: _UpstreamProtocol, reason: Failure) -> None:
        if upstream is not self._upstream:
            return
        self._upstream = None
        self._unregister_client_producer()
        if self._state is _State.TUNNEL:
            self._close()
        elif self._state is not _State.EXCHANGE:
            return
        elif self._response_phase is _Phase.HEAD:
            self._reply_error(502, f"{self._target_text} closed the connection before answering")
        elif self._response_phase is _Phase.BODY:
            if self._response_reader is None:
                # A read-until-close body ends here, and so must the client connection.
                self._response_phase = _Phase.DONE
                self._close()
            else:
                # Headers went out already: cut the client off so it sees the truncation.
                self._cut()

    def _read_response_heads(self) -> None:
        while self._response_phase is _Phase.HEAD:
            end = http1.find_head_end(self._response_buffer)
            if end is None:
                if len(self._response_buffer) > http1.MAX_HEAD_BYTES:
                    self._reply_error(502, "response head too large")
                return
            head_bytes = self._response_buffer[:end]
            self._response_buffer = self._response_buffer[end:]
            try:
                head = http1.parse_response_head(head_bytes)
                framing = http1.response_framing(head, request_method=self._method)
            except http1.HttpError as exc:
                self._reply_error(502, f"{self._target_text}: {exc.message}")
                return
            if head.status == 101:
                # Upgrade is never forwarded, so a switch of protocols is the origin misbehaving.
                self._reply_error(502, f"{self._target_text}: unexpected 101 Switching Protocols")
                return
            if head.status < 200:
                if self._client_version != b"HTTP/1.0":
                    self.transport.write(
                        http1.client_response_head(head, decode_chunked=False, close=False))
                continue
            self._start_response(head, framing)

    def _start_response(self, head: http1.ResponseHead, framing: http1.BodyFraming) -> None:
        self._decode_chunked = (
            framing.kind is http1.Framing.CHUNKED and self._client_version == b"HTTP/1.0")
        self._close_after = (
            self._close_after or self._decode_chunked
            or framing.kind is http1.Framing.UNTIL_CLOSE)
        out_head = http1.client_response_head(
            head, decode_chunked=self._decode_chunked, close=self._close_after)
        self._response_started = True
        self._response_phase = _Phase.BODY
        if framing.kind is http1.Framing.NONE:
            self.transport.write(out_head)
            self._finish_response()
            return
        self._response_reader = http1.body_reader(framing, error_status=502)
        rest, self._response_buffer = self._response_buffer, b""
        self._relay_response_body(rest, prefix=out_head)

    def _relay_response_body(self, data: bytes, *, prefix: bytes = b"") -> None:
        reader = self._response_reader
        out = data
        if reader is not None:
            try:
                consumed, payload = reader.feed(data)
            except http1.HttpError as exc:
                log.info("bad body from {target}: {error}", target=self._target_text,
                         error=exc.message)
                if prefix:
                    self.transport.write(prefix)
                self._cut()
                return
            out = payload if self._decode_chunked else data[:consumed]
        if prefix or out:
            # One write per batch: Twisted pays a syscall pair per write.
            self.transport.write(prefix + out)
        if reader is not None and reader.done:
            self._finish_response()

    def _finish_response(self) -> None:
        self._response_phase = _Phase.DONE
        self._unregister_client_producer()
        self._drop_upstream(graceful=True)
        if self._request_reader is not None or self._close_after:
            # A request body still arriving cannot be skipped reliably: close instead.
            self._close()
            return
        self._state = _State.HEAD
        self._reset_exchange()
        self._valve.release("pipelined")
        if self._buffer:
            self._next_request()

    # -- endings -----------------------------------------------------------------------------

    def _unregister_client_producer(self) -> None:
        if getattr(self.transport, "producer", None) is not None:
            self.transport.unregisterProducer()

    def _drop_upstream(self, *, graceful: bool) -> None:
        if self._connecting is not None:
            connecting, self._connecting = self._connecting, None
            connecting.cancel()
        upstream, self._upstream = self._upstream, None
        if upstream is None:
            return
        upstream.owner = None
        if self._valve is not None:
            self._valve.release("upstream")
        if upstream.transport.producer is not None:
            upstream.transport.unregisterProducer()
        if graceful:
            upstream.transport.loseConnection()
        else:
            upstream.transport.abortConnection()

    def _reply_error(self, status: int, message: str, *,
                     extra_headers: http1.Headers = ()) -> None:
        if self._state is _State.CLOSED:
            return
        if self._response_started:
            self._cut()
            return
        self._unregister_client_producer()
        self._drop_upstream(graceful=False)
        self.transport.write(http1.error_response(status, message, extra_headers=extra_headers))
        self._close()

    def _close(self) -> None:
        self._state = _State.CLOSED
        self._drop_upstream(graceful=True)
        self._unregister_client_producer()
        self.transport.loseConnection()

    def _cut(self) -> None:
        """End a response already under way: no error text can be appended, only a close.

        A graceful close (not a reset) lets the client read every byte sent so far and then
        see that the body is short of its Content-Length or chunked terminator.
        """
        self._state = _State.CLOSED
        self._drop_upstream(graceful=False)
        self._unregister_client_producer()
        self.transport.loseConnection()

    def _abort(self) -> None:
        self._state = _State.CLOSED
        self._drop_upstream(graceful=False)
        self._unregister_client_producer()
        self.transport.abortConnection()


class InstanceProxyFactory(protocol.Factory):
    """Builds one :class:`InstanceProxyProtocol` per client connection."""

    noisy = False

    def __init__(self, *, settings: InstanceSettings, connector: UpstreamConnector) -> None:
        self.settings = settings
        self.connector = connector

    def buildProtocol(self, addr: Any) -> InstanceProxyProtocol:
        proxy = InstanceProxyProtocol(settings=self.settings, connector=self.connector)
        proxy.factory = self
        return proxy


def listen(reactor: Any, *, host: str, port: int, settings: InstanceSettings) -> Any:
    """Start serving on ``host:port`` (0 = any free port); returns the listening port."""
    connector = UpstreamConnector(reactor, source=settings.source,
                                  timeout_s=settings.connect_timeout_s)
    factory = InstanceProxyFactory(settings=settings, connector=connector)
    return reactor.listenTCP(port, factory, interface=host)
