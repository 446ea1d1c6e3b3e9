"""What a client connection may do to the master, and what it may not: time, size, framing.

The master must keep slow or sloppy clients from holding it (timeouts on heads, idle
keep-alives and silent tunnels), must never time out a client that is still sending, and must
read every head and chunked body exactly one way, so that no hop behind it reads them another.
"""
from __future__ import annotations

import socket
import time

import pytest
from twisted.internet.testing import MemoryReactorClock, StringTransport

from scrapoxy_server.master.proxy import MasterFactory, MasterSettings
from scrapoxy_server.master.tls import TlsCreators
from scrapoxy_server.models import Address, Endpoint
from scrapoxy_server.pool import InstancePool
from scrapoxy_server.stats import Stats
from tests.master.rawhttp import RawConnection, request


def post(url: str, body: bytes, *headers: str) -> bytes:
    lines = [f"POST {url} HTTP/1.1", f"Host: {url.split('/')[2]}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class _Memory:
    """A master on a ``MemoryReactorClock``: the client and the instance are string
    transports the test speaks for, and time moves only when the test says."""

    def __init__(self, *, idle_timeout: float) -> None:
        self.reactor = MemoryReactorClock()
        pool = InstancePool()
        pool.publish([Endpoint("p1", Address("127.0.0.1", 3128))])
        self.factory = MasterFactory(
            reactor=self.reactor, pool=pool, stats=Stats(),
            settings=MasterSettings(connect_timeout=5.0, idle_timeout=idle_timeout,
                                    wait_for_instance=0.0),
            auth=None, tls=TlsCreators(verify=True, ca_file=None))
        self.client = StringTransport()
        self.protocol = self.factory.buildProtocol(None)
        self.protocol.makeConnection(self.client)

    def instance(self) -> StringTransport:
        """Accept the master's connection to the instance; its transport."""
        *_, factory, _, _ = self.reactor.tcpClients[-1]
        upstream = factory.buildProtocol(None)
        transport = StringTransport()
        upstream.makeConnection(transport)
        self.upstream = upstream
        return transport


def test_an_upload_still_sending_is_not_cut_by_the_idle_timeout():
    lab = _Memory(idle_timeout=1.0)
    lab.protocol.dataReceived(post("http://origin.test/upload", b"", "Content-Length: 8000"))
    instance = lab.instance()
    for _ in range(8):  # 8 pieces 0.4 s apart: 3.2 s, well past the 1 s idle timeout
        lab.protocol.dataReceived(b"x" * 1000)
        lab.reactor.advance(0.4)
    assert instance.value().endswith(b"x" * 8000)
    assert not lab.client.disconnecting and lab.client.value() == b""
    lab.upstream.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert lab.client.value().startswith(b"HTTP/1.1 200 OK")


def test_a_silent_instance_is_504_once_the_upload_is_done_and_the_timeout_passes():
    lab = _Memory(idle_timeout=1.0)
    lab.protocol.dataReceived(post("http://origin.test/upload", b"x" * 10, "Content-Length: 10"))
    lab.instance()
    lab.reactor.advance(0.9)
    assert lab.client.value() == b""
    lab.reactor.advance(0.2)
    assert lab.client.value().startswith(b"HTTP/1.1 504")


def test_a_head_not_complete_within_the_idle_timeout_gets_408():
    lab = _Memory(idle_timeout=1.0)
    lab.protocol.dataReceived(b"GET http://origin.test/headers HTTP/1.1\r\nX-A: 1\r\n")
    for _ in range(3):  # a slow client trickling header lines (slowloris)
        lab.reactor.advance(0.3)
        lab.protocol.dataReceived(b"X-B: 2\r\n")
    assert lab.client.value() == b""
    lab.reactor.advance(0.2)
    answer = lab.client.value()
    assert answer.startswith(b"HTTP/1.1 408")
    assert b"x-scrapoxy-error: bad_request" in answer
    assert lab.client.disconnecting
    assert lab.reactor.tcpClients == []  # no instance was ever contacted


def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout(start_master, origin):
    master = start_master(idle_timeout=1.0)
    with RawConnection(master.port) as connection:
        connection.send(f"GET {origin.url}/headers HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert connection.read_response().status == 200
        assert not connection.closed_by_peer(wait=0.3)  # still usable at first
        assert connection.closed_by_peer(wait=3.0)


def test_a_tunnel_silent_both_ways_is_closed_after_the_idle_timeout(start_master):
    master = start_master(idle_timeout=1.0)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    try:
        target = f"127.0.0.1:{silent.getsockname()[1]}"
        with RawConnection(master.port) as connection:
            connection.send(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
            assert connection.sock.recv(4096).startswith(b"HTTP/1.1 200")
            started = time.monotonic()
            assert connection.closed_by_peer(wait=5.0)
            assert time.monotonic() - started < 3
    finally:
        silent.close()


def test_a_bare_lf_head_ends_at_its_own_empty_line(start_master, origin):
    """Looking for CRLFCRLF first would read the body's first lines as headers."""
    master = start_master()
    mark = origin.mark()
    body = b"X-Injected: 1\r\n\r\nzz"
    raw = (f"POST {origin.url}/echo HTTP/1.1\nHost: x\nContent-Length: {len(body)}\n\n"
           .encode() + body)
    response = request(master.port, raw)
    assert response.status == 200
    assert response.body == body
    (seen,) = origin.since(mark)
    assert seen.header("x-injected") is None


def test_a_head_over_64_kib_is_431_even_when_it_ends(start_master, origin):
    master = start_master()
    mark = origin.mark()
    filler = "".join(f"X-Fill-{i}: {'v' * 1000}\r\n" for i in range(70))
    response = request(master.port, f"GET {origin.url}/headers HTTP/1.1\r\n{filler}\r\n".encode())
    assert response.status == 431
    assert origin.since(mark) == []


@pytest.mark.parametrize("body", [
    b"5\nhello\n0\n\n",                        # bare LF chunk lines
    b" 5\r\nhello\r\n0\r\n\r\n",               # space before the size
    b"5 \r\nhello\r\n0\r\n\r\n",               # space after the size
    b'5;a="x\r\nhello\r\n0\r\n\r\n',           # unterminated quoted extension
    b"5;\r\nhello\r\n0\r\n\r\n",               # empty extension
    b"0x5\r\nhello\r\n0\r\n\r\n",              # not hex digits only
    b"5\r\nhello\r\n0\r\nX-T : 1\r\n\r\n",     # malformed trailer
], ids=["bare-lf", "lead-space", "trail-space", "open-quote", "empty-ext", "0x", "trailer"])
def test_a_sloppy_chunked_request_body_is_refused_before_it_reaches_anyone(start_master, origin,
                                                                            body):
    master = start_master()
    mark = origin.mark()
    response = request(master.port, post(f"{origin.url}/echo", body,
                                         "Transfer-Encoding: chunked"))
    assert response.status == 400
    assert response.header("x-scrapoxy-error") == "bad_request"
    assert origin.since(mark) == []


def test_chunk_extensions_and_trailers_as_rfc_9112_spells_them_pass(start_master, origin):
    master = start_master()
    body = b'5 ; name="a \\"q\\"" ;flag\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n'
    response = request(master.port, post(f"{origin.url}/echo", body,
                                         "Transfer-Encoding: chunked"))
    assert response.status == 200
    assert response.body == b"hello"
