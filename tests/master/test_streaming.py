"""Bodies stream through the master with back-pressure both ways; a party that leaves ends the
exchange on the other side; connections to instances are kept alive and reused."""
from __future__ import annotations

import hashlib
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from scrapoxy_server.models import Address, Endpoint
from tests.lab.origin import big_body
from tests.master.rawhttp import RawConnection
from tests.support import wait_until

MIB = 1024 * 1024


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


class PeakRss:
    """Samples this process's resident memory while a transfer runs; ``growth`` is the peak
    above the level at entry (ru_maxrss would carry earlier tests' peaks)."""

    def __enter__(self) -> "PeakRss":
        self.baseline = rss_mib()
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_mib())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth(self) -> float:
        return self.peak - self.baseline


def test_50_mib_download_to_a_slow_reader_streams_without_buffering(start_master, origin,
                                                                     instance_endpoints):
    endpoints, _ = instance_endpoints
    master = start_master(endpoints=endpoints[:1])
    n = 50 * MIB
    digest = hashlib.sha256()
    received = 0
    with PeakRss() as memory, requests.get(
            f"{origin.url}/big?n={n}", proxies=master_proxies(master), stream=True,
            timeout=30) as response:
        assert response.status_code == 200
        for chunk in response.iter_content(MIB):
            digest.update(chunk)
            received += len(chunk)
            time.sleep(0.02)  # a slow scraper: the master must pause the instance, not buffer
    assert received == n
    expected = hashlib.sha256()
    for _ in range(n // MIB):
        expected.update(big_body(MIB))  # MIB is a whole number of the origin's pattern
    assert digest.digest() == expected.digest()
    # Master, instance and origin all live in this process: none of them may hold the body.
    assert memory.growth < 32


class _Repeat:
    """A file-like body of ``times`` copies of ``piece``, read without building it whole."""

    def __init__(self, piece: bytes, times: int) -> None:
        self.piece, self.left = piece, times

    def __len__(self) -> int:
        return self.left * len(self.piece)

    def read(self, size: int = -1) -> bytes:
        if not self.left:
            return b""
        self.left -= 1
        return self.piece


class _Sink(BaseHTTPRequestHandler):
    """Reads a request body in pieces, keeps only its length and digest."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802
        left = int(self.headers["Content-Length"])
        digest = hashlib.sha256()
        while left:
            piece = self.rfile.read(min(left, 256 * 1024))
            if not piece:
                break
            digest.update(piece)
            left -= len(piece)
            time.sleep(0.01)  # a slow target: the master must pause the client, not buffer
        body = digest.hexdigest().encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_50_mib_upload_to_a_slow_target_streams_without_buffering(start_master, instance_endpoints):
    endpoints, _ = instance_endpoints
    master = start_master(endpoints=endpoints[:1])
    sink = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    piece = b"z" * MIB
    expected = hashlib.sha256()
    for _ in range(50):
        expected.update(piece)
    try:
        with PeakRss() as memory:
            response = requests.post(f"http://127.0.0.1:{sink.server_address[1]}/up",
                                     data=_Repeat(piece, 50), proxies=master_proxies(master),
                                     timeout=60)
    finally:
        sink.shutdown()
    assert response.status_code == 200
    assert response.text == expected.hexdigest()
    assert memory.growth < 32


def test_client_leaving_mid_download_closes_the_instance_connection(start_master, origin,
                                                                    instance_endpoints):
    endpoints, _ = instance_endpoints
    master = start_master(endpoints=endpoints[:1])
    with RawConnection(master.port) as connection:
        connection.send(f"GET {origin.url}/big?n={200 * MIB} HTTP/1.1\r\n"
                        f"Host: {origin.netloc}\r\n\r\n".encode())
        assert connection.sock.recv(65536).startswith(b"HTTP/1.1 200")
        wait_until(lambda: master.pool.inflight("p1") == 1, timeout=5, message="in flight")
    wait_until(lambda: master.pool.inflight("p1") == 0, timeout=5,
               message="the exchange to end after the client left")
    assert master.factory.upstreams.idle_count() == 0


class _KeepAliveInstance(BaseHTTPRequestHandler):
    """Answers proxy requests itself, keeping connections alive, and counts connections."""

    protocol_version = "HTTP/1.1"
    connections = 0

    def setup(self) -> None:
        super().setup()
        type(self).connections += 1

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        body = self.path.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_connections_to_an_instance_are_reused_across_requests_and_clients(start_master, origin):
    handler = type("Counting", (_KeepAliveInstance,), {"connections": 0})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        endpoint = Endpoint("pk", Address("127.0.0.1", server.server_address[1]))
        master = start_master(endpoints=[endpoint])
        for _ in range(10):  # ten clients, one after the other, each on a new connection
            response = requests.get(f"{origin.url}/x", proxies=master_proxies(master), timeout=10)
            assert response.status_code == 200
            assert response.text == f"{origin.url}/x"
        assert handler.connections == 1
    finally:
        server.shutdown()


def _drops_second_request_on_reused_connection() -> tuple[socket.socket, list]:
    """An instance that answers once, then drops the kept-alive connection when the next
    request arrives (its idle timeout raced ours); fresh connections are answered."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted = []

    def serve() -> None:
        while True:
            try:
                sock, _ = server.accept()
            except OSError:
                return
            accepted.append(sock)
            first = len(accepted) == 1
            sock.recv(65536)
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            if first:
                sock.recv(65536)  # the second request, on the reused connection...
                sock.close()      # ...is dropped unanswered
            else:
                sock.close()

    threading.Thread(target=serve, daemon=True).start()
    return server, accepted


@pytest.mark.parametrize("method", ["GET", "HEAD", "DELETE"])
def test_a_pooled_connection_the_instance_dropped_is_retried_on_a_fresh_one(start_master, origin,
                                                                            method):
    """The scraper of an idempotent request must not see an error."""
    server, accepted = _drops_second_request_on_reused_connection()
    try:
        master = start_master(endpoints=[Endpoint("pk", Address("127.0.0.1", server.getsockname()[1]))])
        first = requests.get(f"{origin.url}/a", proxies=master_proxies(master), timeout=10)
        second = requests.request(method, f"{origin.url}/b", proxies=master_proxies(master),
                                  timeout=10)
    finally:
        server.close()
    assert (first.status_code, first.text) == (200, "ok")
    assert second.status_code == 200
    assert len(accepted) == 2


@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_a_non_idempotent_request_on_a_dropped_connection_is_not_retried(start_master, origin,
                                                                         method):
    """RFC 9110 9.2.2: the instance may have acted on it; the scraper decides."""
    server, accepted = _drops_second_request_on_reused_connection()
    try:
        master = start_master(endpoints=[Endpoint("pk", Address("127.0.0.1", server.getsockname()[1]))])
        requests.get(f"{origin.url}/a", proxies=master_proxies(master), timeout=10)
        second = requests.request(method, f"{origin.url}/b", proxies=master_proxies(master),
                                  timeout=10)
    finally:
        server.close()
    assert second.status_code == 502
    assert second.headers["x-scrapoxy-error"] == "upstream"
    assert len(accepted) == 1


def master_proxies(master) -> dict[str, str]:
    return {"http": master.url, "https": master.url}


def test_connect_tunnel_ends_when_the_client_leaves(start_master, tls_origin, instance_endpoints):
    endpoints, _ = instance_endpoints
    master = start_master(endpoints=endpoints[:1])
    sock = socket.create_connection(("127.0.0.1", master.port), timeout=5)
    sock.sendall(f"CONNECT {tls_origin.netloc} HTTP/1.1\r\nHost: {tls_origin.netloc}\r\n\r\n".encode())
    assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    wait_until(lambda: master.pool.inflight("p1") == 1, timeout=5, message="tunnel open")
    sock.close()
    wait_until(lambda: master.pool.inflight("p1") == 0, timeout=5, message="tunnel closed")
