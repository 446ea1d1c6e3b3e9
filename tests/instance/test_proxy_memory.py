"""Protocol behaviour of ``scrapoxy-instance`` with in-memory transports (no sockets, no clock)."""
from __future__ import annotations

from typing import Any

from twisted.internet import error
from twisted.internet.defer import Deferred
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from scrapoxy_server.instance.proxy import InstanceProxyProtocol, InstanceSettings


class FakeConnector:
    """Records connection attempts; the test decides how each one ends."""

    def __init__(self) -> None:
        self.attempts: list[tuple[str, int, Any, Deferred]] = []
        self.protocols: list[Any] = []

    def connect(self, host: str, port: int, factory: Any) -> Deferred:
        attempt: Deferred = Deferred()
        self.attempts.append((host, port, factory, attempt))
        return attempt

    def succeed(self, index: int = -1) -> StringTransport:
        _, _, factory, attempt = self.attempts[index]
        upstream = factory.buildProtocol(None)
        transport = StringTransport()
        upstream.makeConnection(transport)
        self.protocols.append(upstream)
        attempt.callback(upstream)
        return transport


def make_proxy(**settings: Any) -> tuple[InstanceProxyProtocol, StringTransport, FakeConnector]:
    connector = FakeConnector()
    proxy = InstanceProxyProtocol(settings=InstanceSettings(**settings), connector=connector)
    client = StringTransport()
    proxy.makeConnection(client)
    return proxy, client, connector


def upstream_protocol(connector: FakeConnector, index: int = -1) -> Any:
    return connector.protocols[index]


def test_connect_timeout_answers_504():
    proxy, client, connector = make_proxy()
    proxy.dataReceived(b"GET http://example.test/ HTTP/1.1\r\n\r\n")
    connector.attempts[0][3].errback(Failure(error.TimeoutError()))
    assert client.value().startswith(b"HTTP/1.1 504")
    assert client.disconnecting


def test_connect_timeout_on_connect_answers_504():
    proxy, client, connector = make_proxy()
    proxy.dataReceived(b"CONNECT example.test:443 HTTP/1.1\r\n\r\n")
    assert connector.attempts[0][:2] == ("example.test", 443)
    connector.attempts[0][3].errback(Failure(error.TimeoutError()))
    assert client.value().startswith(b"HTTP/1.1 504")


def test_upstream_request_is_origin_form_with_host_from_the_url():
    proxy, client, connector = make_proxy()
    proxy.dataReceived(
        b"GET http://example.test:8080/a?b HTTP/1.1\r\nHost: wrong\r\nX-A: 1\r\n\r\n")
    upstream = connector.succeed()
    assert upstream.value() == (b"GET /a?b HTTP/1.1\r\nHost: example.test:8080\r\nX-A: 1\r\n"
                                b"Connection: close\r\n\r\n")


def test_pipelined_requests_are_answered_in_order():
    proxy, client, connector = make_proxy()
    proxy.dataReceived(b"GET http://a.test/1 HTTP/1.1\r\n\r\nGET http://b.test/2 HTTP/1.1\r\n\r\n")
    assert len(connector.attempts) == 1
    connector.succeed()
    upstream_protocol(connector).dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none")
    assert client.value().endswith(b"\r\n\r\none")
    assert connector.attempts[1][0] == "b.test"
    second = connector.succeed()
    assert second.value().startswith(b"GET /2 HTTP/1.1")
    upstream_protocol(connector).dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\ntwo")
    assert client.value().endswith(b"\r\n\r\ntwo")
    assert not client.disconnecting


def test_upstream_back_pressure_pauses_the_client_and_is_released_after_the_response():
    proxy, client, connector = make_proxy()
    proxy.dataReceived(b"POST http://a.test/ HTTP/1.1\r\nContent-Length: 10\r\n\r\n01234")
    upstream = connector.succeed()
    upstream.producer.pauseProducing()
    assert client.producerState == "paused"
    upstream_protocol(connector).dataReceived(
        b"HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n")
    # The request body was not finished: the connection closes rather than desynchronise.
    assert client.disconnecting
    assert client.producerState == "producing"


def test_client_back_pressure_pauses_the_upstream():
    proxy, client, connector = make_proxy()
    proxy.dataReceived(b"GET http://a.test/ HTTP/1.1\r\n\r\n")
    upstream = connector.succeed()
    assert client.producer is upstream
    client.producer.pauseProducing()
    assert upstream.producerState == "paused"


def test_client_reading_is_resumed_before_the_next_request():
    proxy, client, connector = make_proxy()
    proxy.dataReceived(b"GET http://a.test/ HTTP/1.1\r\n\r\n")
    upstream = connector.succeed()
    upstream.producer.pauseProducing()
    upstream_protocol(connector).dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert client.producerState == "producing"
    assert client.producer is None
    assert not client.disconnecting


def test_client_leaving_while_connecting_cancels_the_attempt():
    proxy, client, connector = make_proxy()
    proxy.dataReceived(b"GET http://a.test/ HTTP/1.1\r\n\r\n")
    attempt = connector.attempts[0][3]
    proxy.connectionLost(Failure(error.ConnectionDone()))
    # Cancelling a Deferred with no canceller fires it with CancelledError, which the proxy eats.
    assert attempt.called
    assert client.value() == b""


def test_connection_arriving_after_the_client_left_is_dropped():
    proxy, client, connector = make_proxy()
    proxy.dataReceived(b"CONNECT a.test:443 HTTP/1.1\r\n\r\n")
    proxy._connecting = None  # the canceller ran too late: the attempt still succeeds
    proxy.connectionLost(Failure(error.ConnectionDone()))
    upstream = connector.succeed()
    assert upstream.disconnected or upstream.disconnecting


def test_interim_100_continue_is_forwarded_then_the_final_response():
    proxy, client, connector = make_proxy()
    proxy.dataReceived(b"POST http://a.test/ HTTP/1.1\r\nContent-Length: 2\r\n"
                       b"Expect: 100-continue\r\n\r\n")
    upstream = connector.succeed()
    upstream_protocol(connector).dataReceived(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert client.value() == b"HTTP/1.1 100 Continue\r\n\r\n"
    proxy.dataReceived(b"hi")
    assert upstream.value().endswith(b"\r\n\r\nhi")
    upstream_protocol(connector).dataReceived(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
    assert client.value().endswith(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
    assert not client.disconnecting


def test_malformed_response_head_gets_502():
    proxy, client, connector = make_proxy()
    proxy.dataReceived(b"GET http://a.test/ HTTP/1.1\r\n\r\n")
    connector.succeed()
    upstream_protocol(connector).dataReceived(b"HTTP/1.1 200 OK\r\nX-Bad : 1\r\n\r\n")
    assert client.value().startswith(b"HTTP/1.1 502")
    assert client.disconnecting


def test_bad_chunk_from_origin_cuts_the_response():
    proxy, client, connector = make_proxy()
    proxy.dataReceived(b"GET http://a.test/ HTTP/1.1\r\n\r\n")
    connector.succeed()
    upstream_protocol(connector).dataReceived(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\nzz\r\n")
    assert client.value().count(b"HTTP/1.1") == 1
    assert client.disconnecting


def test_head_response_with_content_length_has_no_body():
    proxy, client, connector = make_proxy()
    proxy.dataReceived(b"HEAD http://a.test/ HTTP/1.1\r\n\r\n")
    connector.succeed()
    upstream_protocol(connector).dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n")
    assert client.value() == b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n"
    assert not client.disconnecting


def test_oversized_request_head_is_refused():
    proxy, client, connector = make_proxy()
    proxy.dataReceived(b"GET http://a.test/ HTTP/1.1\r\n" + b"X-Long: " + b"a" * 70000)
    assert client.value().startswith(b"HTTP/1.1 431")
    assert connector.attempts == []
