"""The health check: an ordinary proxied GET through the instance, on loopback sockets."""
from __future__ import annotations

import pytest
from twisted.internet import protocol

from scrapoxy_server.health import HealthChecker, HealthError
from scrapoxy_server.models import Address, Credentials, Endpoint
from tests.support import free_port, wait_until


class ScriptedProxy(protocol.Protocol):
    """Reads one request head, records it, sends the factory's canned answer (or nothing)."""

    def connectionMade(self):
        self.buffer = b""

    def dataReceived(self, data):
        self.buffer += data
        if b"\r\n\r\n" in self.buffer and not getattr(self, "answered", False):
            self.answered = True
            self.factory.requests.append(self.buffer.split(b"\r\n\r\n")[0].decode())
            if self.factory.answer is not None:
                self.transport.write(self.factory.answer)
                if self.factory.close:
                    self.transport.loseConnection()

    def connectionLost(self, reason=None):
        self.factory.lost += 1


def listen_proxy(reactor_thread, answer: bytes | None, *, close: bool = True):
    factory = protocol.Factory.forProtocol(ScriptedProxy)
    factory.requests = []
    factory.answer = answer
    factory.close = close
    factory.lost = 0
    port = reactor_thread.call(reactor_thread.reactor.listenTCP, 0, factory, interface="127.0.0.1")
    return factory, port


def check(reactor_thread, endpoint, *, url="http://origin.test:8080/ip", timeout=3.0):
    checker = HealthChecker(reactor=reactor_thread.reactor, url=url, timeout=timeout)
    return reactor_thread.call(checker.check, endpoint)


def ok(body: bytes) -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
            + body)


def test_check_is_an_absolute_form_proxy_request_and_returns_the_stripped_body(reactor_thread):
    factory, port = listen_proxy(reactor_thread, ok(b" 203.0.113.9\n"))
    try:
        endpoint = Endpoint("p1", Address("127.0.0.1", port.getHost().port),
                            Credentials("user", "secret"))
        assert check(reactor_thread, endpoint) == "203.0.113.9"
    finally:
        reactor_thread.call(port.stopListening)
    head = factory.requests[0].split("\r\n")
    assert head[0] == "GET http://origin.test:8080/ip HTTP/1.1"
    headers = {line.split(":", 1)[0].lower(): line.split(":", 1)[1].strip() for line in head[1:]}
    assert headers["host"] == "origin.test:8080"
    assert headers["connection"] == "close"
    assert headers["proxy-authorization"] == "Basic dXNlcjpzZWNyZXQ="


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n203.\r\n7\r\n0.113.9\r\n0\r\n\r\n",
    b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n203.0.113.9\n",  # ends at close
    b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n203.0.113.9 and then garbage",
], ids=["chunked", "until-close", "length"])
def test_every_framing_of_the_answer_gives_the_body(reactor_thread, answer):
    _, port = listen_proxy(reactor_thread, answer)
    try:
        endpoint = Endpoint("p1", Address("127.0.0.1", port.getHost().port))
        assert check(reactor_thread, endpoint) == "203.0.113.9"
    finally:
        reactor_thread.call(port.stopListening)


def test_no_proxy_authorization_without_credentials(reactor_thread):
    factory, port = listen_proxy(reactor_thread, ok(b"ok"))
    try:
        check(reactor_thread, Endpoint("p1", Address("127.0.0.1", port.getHost().port)))
    finally:
        reactor_thread.call(port.stopListening)
    assert "proxy-authorization" not in factory.requests[0].lower()


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 2\r\n\r\nno",
    b"",  # accepts, then closes without a word
    b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort",  # body cut
    b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100,  # not an IP answer
    b"HTTP/1.1 200 OK\r\n" + b"x" * 70000,  # a head that never ends
    b"HTTP/1.1 200 OK\r\nX-Bad : 1\r\n\r\n",  # malformed header
])
def test_non_2xx_fails(reactor_thread, answer):
    _, port = listen_proxy(reactor_thread, answer)
    try:
        with pytest.raises(HealthError):
            check(reactor_thread, Endpoint("p1", Address("127.0.0.1", port.getHost().port)))
    finally:
        reactor_thread.call(port.stopListening)


def test_closed_port_fails(reactor_thread):
    with pytest.raises(Exception) as err:
        check(reactor_thread, Endpoint("p1", Address("127.0.0.1", free_port())))
    assert "refused" in str(err.value).lower() or "Refused" in type(err.value).__name__


def test_silent_instance_fails_after_the_timeout(reactor_thread):
    _, port = listen_proxy(reactor_thread, None)
    try:
        with pytest.raises(Exception) as err:
            check(reactor_thread, Endpoint("p1", Address("127.0.0.1", port.getHost().port)),
                  timeout=0.5)
        assert str(err.value) == "no answer within 0.5 s"
    finally:
        reactor_thread.call(port.stopListening)


def test_stalled_body_times_out_and_the_connection_is_dropped(reactor_thread):
    factory, port = listen_proxy(
        reactor_thread, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n127.", close=False)
    try:
        with pytest.raises(HealthError, match="no answer within"):
            check(reactor_thread, Endpoint("p1", Address("127.0.0.1", port.getHost().port)),
                  timeout=0.5)
        wait_until(lambda: factory.lost == 1, timeout=5, message="the connection to close")
    finally:
        reactor_thread.call(port.stopListening)


@pytest.mark.parametrize("proxy_fixture", ["tinyproxy_instance", "squid_instance"])
def test_works_against_stock_proxies_and_reads_their_egress_address(request, proxy_fixture,
                                                                     origin, reactor_thread):
    proxy = request.getfixturevalue(proxy_fixture)
    endpoint = Endpoint(proxy.kind, Address(proxy.host, proxy.port))
    assert check(reactor_thread, endpoint, url=f"{origin.url}/ip") == proxy.source


def test_works_through_tinyproxy_with_credentials(stock_proxies, origin, reactor_thread):
    proxy = stock_proxies("tinyproxy", source="127.0.0.207", username="inst", password="s3cret")
    good = Endpoint("t", Address(proxy.host, proxy.port), Credentials("inst", "s3cret"))
    assert check(reactor_thread, good, url=f"{origin.url}/ip") == "127.0.0.207"
    bad = Endpoint("t", Address(proxy.host, proxy.port), Credentials("inst", "wrong"))
    with pytest.raises(HealthError, match="check answered 40[17]"):  # tinyproxy says 401
        check(reactor_thread, bad, url=f"{origin.url}/ip")
