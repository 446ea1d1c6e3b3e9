"""Field cases H01-H10 (shared/cases/README.md), each through three kinds of instance:
scrapoxy-instance, stock tinyproxy and stock squid.

Stock proxies hide some master faults (tinyproxy strips hop-by-hop headers itself) and expose
others (tinyproxy relays Proxy-Authorization), so every case runs through all three.
"""
from __future__ import annotations

import base64
import gzip
import hashlib
import json
import socket
import threading
import time

import pytest

from tests.lab.origin import GZIP_BODY
from tests.master.rawhttp import RawConnection, request

AUTH = "Basic " + base64.b64encode(b"u:p").decode()


def get(path_url: str, *headers: str, method: str = "GET", version: str = "HTTP/1.1") -> bytes:
    lines = [f"{method} {path_url} {version}"] + list(headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def host_of(url: str) -> str:
    return url.split("://", 1)[1]


# --- H01 ---------------------------------------------------------------------------------


def test_h01_scraper_credentials_never_reach_instance_or_target(make_kind_master, origin, tls_origin):
    master = make_kind_master(auth=("u", "p"))
    mark, tls_mark = origin.mark(), tls_origin.mark()
    plain = request(master.port, get(f"{origin.url}/headers", f"Host: {host_of(origin.url)}",
                                     f"Proxy-Authorization: {AUTH}"))
    assert plain.status == 200
    tls_url = f"{tls_origin.url}/headers"
    by_header = request(master.port, get(tls_url.replace("https", "http", 1),
                                         f"Host: {host_of(tls_origin.url)}",
                                         f"Location: {tls_url}", f"Proxy-Authorization: {AUTH}"))
    assert by_header.status == 200
    seen = origin.since(mark) + tls_origin.since(tls_mark)
    assert len(seen) == 2
    assert all(r.header("proxy-authorization") is None for r in seen)


@pytest.mark.parametrize("credentials", [None, "Basic " + base64.b64encode(b"u:wrong").decode(),
                                         "Basic " + base64.b64encode(b"x:p").decode(), "Basic !!"])
def test_h01_wrong_or_missing_credentials_get_407_and_no_instance_is_used(
        start_master, origin, credentials):
    master = start_master(auth=("u", "p"))
    mark = origin.mark()
    headers = [f"Host: {host_of(origin.url)}"]
    if credentials:
        headers.append(f"Proxy-Authorization: {credentials}")
    response = request(master.port, get(f"{origin.url}/headers", *headers))
    assert response.status == 407
    assert response.header("proxy-authenticate").startswith("Basic realm=")
    assert response.header("x-scrapoxy-error") == "auth"
    by_header = request(master.port, get(f"{origin.url}/headers", *headers,
                                         f"Location: https://{host_of(origin.url)}/headers"))
    assert by_header.status == 407 and by_header.header("x-scrapoxy-error") == "auth"
    connect = request(master.port, get(host_of(origin.url), *headers[1:], method="CONNECT"))
    assert connect.status == 407
    assert origin.since(mark) == []
    assert master.stats.per_instance == {}


@pytest.mark.parametrize("kind, source", [("tinyproxy", "127.0.0.41"), ("squid", "127.0.0.42")])
def test_h01_instance_credentials_are_sent_on_every_mode(start_master, stock_proxies, origin,
                                                         tls_origin, lab_ca, kind, source):
    from scrapoxy_server.models import Address, Credentials, Endpoint

    guarded = stock_proxies(kind, source=source, username="inst", password="s3cret")
    endpoint = Endpoint("pa", Address(guarded.host, guarded.port), Credentials("inst", "s3cret"))
    master = start_master(endpoints=[endpoint], auth=("u", "p"))
    mark = origin.mark()
    plain = request(master.port, get(f"{origin.url}/headers", f"Host: {host_of(origin.url)}",
                                     f"Proxy-Authorization: {AUTH}"))
    assert plain.status == 200
    assert origin.since(mark)[0].header("proxy-authorization") is None
    tls_url = f"{tls_origin.url}/headers"
    by_header = request(master.port, get(tls_url, f"Host: {host_of(tls_origin.url)}",
                                         f"Proxy-Authorization: {AUTH}"))
    assert by_header.status == 200
    with RawConnection(master.port) as connection:
        connection.send(get(host_of(tls_origin.url), f"Proxy-Authorization: {AUTH}",
                            method="CONNECT"))
        assert connection.read_response(method="CONNECT").status == 200
    # The control: without the instance's credentials the same proxy refuses every mode.
    bare = start_master(endpoints=[Endpoint("pa", Address(guarded.host, guarded.port))])
    refused = request(bare.port, get(f"{origin.url}/headers", f"Host: {host_of(origin.url)}"))
    # The instance's 407 is its own business with the master: the scraper gets a 502, never a
    # 407 that would send it chasing its own credentials.
    assert refused.status == 502 and refused.header("x-scrapoxy-error") == "upstream"
    assert "answered 407" in json.loads(refused.body)["message"]
    tunnel = request(bare.port, get(tls_url, f"Host: {host_of(tls_origin.url)}"))
    assert tunnel.status == 502
    assert "refused CONNECT" in json.loads(tunnel.body)["message"]
    assert "answered 407" in json.loads(tunnel.body)["message"]


def test_an_unreachable_target_is_the_masters_502_whatever_the_instance_kind(kind_master):
    """scrapoxy-instance says 502, tinyproxy 500, squid 503 (which reads as a ban): the
    scraper gets one answer, the master's 502 upstream naming the instance and the target."""
    from tests.support import free_port

    port = free_port()
    response = request(kind_master.port, get(f"http://127.0.0.1:{port}/x",
                                             f"Host: 127.0.0.1:{port}"))
    assert response.status == 502, response.head
    assert response.header("x-scrapoxy-error") == "upstream"
    assert response.header("x-cache-proxyname")
    message = json.loads(response.body)["message"]
    assert f"127.0.0.1:{port}" in message and "could not get an answer" in message


def test_an_unreachable_https_target_is_a_502_in_the_instances_words_not_a_refusal(
        kind_master):
    """In HTTPS modes the master asks the instance for a tunnel: an instance that cannot
    reach the target did its job, and the message says what it said, not "refused"."""
    from tests.support import free_port

    port = free_port()
    response = request(kind_master.port, get("http://127.0.0.1/x", "Host: 127.0.0.1",
                                             f"Location: https://127.0.0.1:{port}/x"))
    assert response.status == 502, response.head
    assert response.header("x-scrapoxy-error") == "upstream"
    message = json.loads(response.body)["message"]
    assert f"could not open a tunnel to 127.0.0.1:{port}: " in message, message


# --- H02 ---------------------------------------------------------------------------------


def test_h02_hop_by_hop_and_control_headers_are_dropped_both_ways(kind_master, origin):
    mark = origin.mark()
    response = request(kind_master.port, get(
        f"{origin.url}/hop", f"Host: {host_of(origin.url)}", "Proxy-Connection: keep-alive",
        "Connection: keep-alive, X-Hop", "X-Hop: secret", "Keep-Alive: timeout=5", "TE: trailers",
        "X-Cache-Proxyname: p1", f"Location: {origin.url}/elsewhere", "X-Kept: yes"))
    assert response.status == 200
    (seen,) = origin.since(mark)
    names = {name.lower() for name in seen.header_names()}
    for name in ("proxy-authorization", "proxy-connection", "keep-alive", "x-hop", "te",
                 "x-cache-proxyname", "location", "x-forwarded-for", "forwarded"):
        assert name not in names, name
    assert seen.header("x-kept") == "yes"
    assert seen.client == kind_master.sources["p1"]
    assert response.header("x-origin-hop") is None
    assert response.header("keep-alive") is None
    assert response.header("x-cache-proxyname") == "p1"


# --- H03 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("bad_line", [b"Accept : */*", b"X-A: a\x00b"])
def test_h03_malformed_request_is_400_before_any_instance_and_master_survives(
        kind_master, origin, bad_line):
    mark = origin.mark()
    raw = f"GET {origin.url}/headers HTTP/1.1\r\nHost: {host_of(origin.url)}\r\n".encode()
    response = request(kind_master.port, raw + bad_line + b"\r\n\r\n")
    assert response.status == 400
    assert response.header("x-scrapoxy-error") == "bad_request"
    assert kind_master.stats.per_instance == {}
    ok = request(kind_master.port, get(f"{origin.url}/headers", f"Host: {host_of(origin.url)}"))
    assert ok.status == 200
    assert len(origin.since(mark)) == 1


def test_h03_malformed_response_header_is_dropped_or_502_never_a_crash(kind_master, origin):
    response = request(kind_master.port, get(f"{origin.url}/badheader",
                                             f"Host: {host_of(origin.url)}"))
    assert response.status in (200, 502)
    assert b"X-Bad :" not in response.head
    ok = request(kind_master.port, get(f"{origin.url}/headers", f"Host: {host_of(origin.url)}"))
    assert ok.status == 200


# --- H04 ---------------------------------------------------------------------------------


def test_h04_https_by_header_does_not_follow_redirects(kind_master, tls_origin):
    mark = tls_origin.mark()
    url = f"{tls_origin.url}/redirect?to=/b&code=301"
    response = request(kind_master.port, get(url.replace("https", "http", 1),
                                             f"Host: {host_of(tls_origin.url)}", f"Location: {url}"))
    assert response.status == 301
    assert response.all("location") == ["/b"]
    assert response.header("x-cache-proxyname") in kind_master.sources
    (seen,) = tls_origin.since(mark)
    assert seen.path == "/redirect?to=/b&code=301"
    assert seen.header("location") is None


@pytest.mark.parametrize("location", ["ftp://x/", "junk", "https://", "https://[::1/"])
def test_h04_bad_location_is_400_with_no_upstream_traffic(kind_master, origin, location):
    mark = origin.mark()
    response = request(kind_master.port, get(f"{origin.url}/headers", f"Host: {host_of(origin.url)}",
                                             f"Location: {location}"))
    assert response.status == 400
    assert response.header("x-scrapoxy-error") == "bad_request"
    assert origin.since(mark) == []
    assert kind_master.stats.per_instance == {}


# --- H05 ---------------------------------------------------------------------------------


def test_h05_sticky_routing_any_case_and_rotation_on_one_connection(kind_master, origin):
    first = request(kind_master.port, get(f"{origin.url}/headers", f"Host: {host_of(origin.url)}"))
    pinned = first.header("x-cache-proxyname")
    mark = origin.mark()
    for header in ("X-Cache-Proxyname", "x-cache-proxyname"):
        for _ in range(20):
            response = request(kind_master.port, get(f"{origin.url}/headers",
                                                     f"Host: {host_of(origin.url)}",
                                                     f"{header}: {pinned}"))
            assert response.status == 200
            assert response.header("x-cache-proxyname") == pinned
    seen = origin.since(mark)
    assert len(seen) == 40
    assert {r.client for r in seen} == {kind_master.sources[pinned]}
    assert all(r.header("x-cache-proxyname") is None for r in seen)
    names = set()
    mark = origin.mark()
    with RawConnection(kind_master.port) as connection:
        for _ in range(30):
            connection.send(get(f"{origin.url}/headers", f"Host: {host_of(origin.url)}"))
            response = connection.read_response()
            assert response.status == 200
            names.add(response.header("x-cache-proxyname"))
    assert names == set(kind_master.sources)
    # What the target saw, not only what the master says: every instance's own address.
    assert {r.client for r in origin.since(mark)} == set(kind_master.sources.values())


# --- H06 ---------------------------------------------------------------------------------


def test_h06_no_instance_alive_503_for_everyone_even_with_hangups(start_master, origin):
    master = start_master(endpoints=[], wait_for_instance=0.5)
    results: list[int] = []
    errors: list[BaseException] = []

    def client(hang_up: bool) -> None:
        try:
            with RawConnection(master.port) as connection:
                connection.send(get(f"{origin.url}/headers", f"Host: {host_of(origin.url)}"))
                if hang_up:
                    return
                response = connection.read_response()
                assert response.header("x-scrapoxy-error") == "no_instance"
                assert response.header("retry-after") is not None
                assert json.loads(response.body)["error"] == "no_instance"
                results.append(response.status)
        except BaseException as exc:  # noqa: BLE001 - collected and re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i % 2 == 0,)) for i in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert not errors, errors[:3]
    assert results == [503] * 25
    again = request(master.port, get(f"{origin.url}/headers", f"Host: {host_of(origin.url)}"))
    assert again.status == 503  # same process, still answering


# --- H07 ---------------------------------------------------------------------------------


class MisbehavingInstance:
    """pX: a TCP server that runs ``script(sock)`` for each connection."""

    def __init__(self, script) -> None:
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(16)
        self.port = self.server.getsockname()[1]
        self.script = script
        self.connections = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                sock, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._run, args=(sock,), daemon=True).start()

    def _run(self, sock: socket.socket) -> None:
        with sock:
            try:
                sock.recv(65536)
                self.script(sock)
            except OSError:
                pass

    def endpoint(self):
        from scrapoxy_server.models import Address, Endpoint
        return Endpoint("pX", Address("127.0.0.1", self.port))

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def misbehaving():
    made = []

    def make(script):
        instance = MisbehavingInstance(script)
        made.append(instance)
        return instance

    yield make
    for instance in made:
        instance.close()


def test_h07a_closed_port_is_502_naming_the_instance(start_master, origin):
    from scrapoxy_server.models import Address, Endpoint
    from tests.support import free_port

    master = start_master(endpoints=[Endpoint("pX", Address("127.0.0.1", free_port()))])
    response = request(master.port, get(f"{origin.url}/headers", f"Host: {host_of(origin.url)}"))
    assert response.status == 502
    assert response.header("x-cache-proxyname") == "pX"
    body = json.loads(response.body)
    assert body["error"] == "upstream" and "pX" in body["message"]
    assert "ConnectionRefused" in body["message"] or "refused" in body["message"].lower()


def test_h07b_accept_then_close_is_502(start_master, origin, misbehaving):
    px = misbehaving(lambda sock: None)
    master = start_master(endpoints=[px.endpoint()])
    response = request(master.port, get(f"{origin.url}/headers", f"Host: {host_of(origin.url)}"))
    assert response.status == 502
    assert response.header("x-cache-proxyname") == "pX"
    assert response.header("x-scrapoxy-error") == "upstream"
    message = json.loads(response.body)["message"]
    assert "instance pX" in message and "ConnectionDone" in message, message


def test_h07c_truncated_body_aborts_the_client_with_nothing_appended(start_master, origin, misbehaving):
    px = misbehaving(lambda sock: sock.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789"))
    master = start_master(endpoints=[px.endpoint()])
    with RawConnection(master.port) as connection:
        connection.send(get(f"{origin.url}/headers", f"Host: {host_of(origin.url)}"))
        response = connection.read_response()
        assert response.status == 200
        assert not response.complete
        assert response.body == b"0123456789"
        assert connection.buffer == b""


def test_h07d_stalled_instance_is_504_after_the_idle_timeout(start_master, origin, misbehaving):
    release = threading.Event()
    px = misbehaving(lambda sock: release.wait(10))
    master = start_master(endpoints=[px.endpoint()], idle_timeout=0.5)
    started = time.monotonic()
    try:
        response = request(master.port, get(f"{origin.url}/headers", f"Host: {host_of(origin.url)}"))
    finally:
        release.set()
    assert response.status == 504
    assert response.header("x-scrapoxy-error") == "timeout"
    assert response.header("x-cache-proxyname") == "pX"
    assert time.monotonic() - started < 5


def test_h07_instance_failures_are_reported_for_the_manager(start_master, origin, reactor_thread):
    from scrapoxy_server.models import Address, Endpoint
    from tests.support import free_port

    master = start_master(endpoints=[Endpoint("pX", Address("127.0.0.1", free_port()))])
    reported: list[str] = []
    reactor_thread.call(master.pool.on_failure, reported.append)
    for _ in range(3):
        request(master.port, get(f"{origin.url}/headers", f"Host: {host_of(origin.url)}"))
    assert reported == ["pX"] * 3


def test_h07_target_errors_relayed_by_an_instance_do_not_blame_it(kind_master, reactor_thread):
    """The instance answering 502 for an unreachable target is healthy: no failure report."""
    from tests.support import free_port

    reported: list[str] = []
    reactor_thread.call(kind_master.pool.on_failure, reported.append)
    dead = f"127.0.0.1:{free_port()}"
    plain = request(kind_master.port, get(f"http://{dead}/", f"Host: {dead}"))
    tls = request(kind_master.port, get(f"http://{dead}/", f"Host: {dead}",
                                        f"Location: https://{dead}/"))
    assert plain.status >= 500 and tls.status == 502
    assert reported == []


# --- H08 ---------------------------------------------------------------------------------


def test_h08_chunked_response_streams_with_one_framing_to_http11(kind_master, origin):
    with RawConnection(kind_master.port) as connection:
        started = time.monotonic()
        connection.send(get(f"{origin.url}/chunked?delay=1.0", f"Host: {host_of(origin.url)}"))
        response = connection.read_response()
    assert response.status == 200
    assert response.body == b"abcdef"
    chunked = (response.header("transfer-encoding") or "").lower() == "chunked"
    assert chunked != (response.header("content-length") is not None)
    assert len(response.all("transfer-encoding")) <= 1
    # "ab" leaves the origin at once and the rest 1 s apart: streamed, not buffered.
    assert response.first_body_at is not None and response.first_body_at - started < 1.2
    assert time.monotonic() - started >= 1.9


def test_h08_chunked_response_to_http10_client_has_no_transfer_encoding(kind_master, origin):
    with RawConnection(kind_master.port) as connection:
        connection.send(get(f"{origin.url}/chunked?delay=0.2", f"Host: {host_of(origin.url)}",
                            version="HTTP/1.0"))
        response = connection.read_response(http10=True)
    assert response.status == 200
    assert response.header("transfer-encoding") is None
    assert response.body == b"abcdef"


# --- H09 ---------------------------------------------------------------------------------


def test_h09a_capitalised_chunked_request_body_reaches_the_origin(kind_master, origin):
    mark = origin.mark()
    started = time.monotonic()
    response = request(kind_master.port, get(
        f"{origin.url}/echo", f"Host: {host_of(origin.url)}", "Transfer-Encoding: Chunked",
        method="POST")[:-2] + b"\r\n5\r\nhello\r\n0\r\n\r\n")
    assert response.status == 200
    assert response.body == b"hello"
    assert time.monotonic() - started < 1.0
    assert origin.since(mark)[0].body == b"hello"


@pytest.mark.parametrize("framing", [
    ("Transfer-Encoding: chunked", "Content-Length: 4"),
    ("Transfer-Encoding: chunked, gzip",),
])
def test_h09_ambiguous_request_framing_is_400_and_closed(kind_master, origin, framing):
    mark = origin.mark()
    with RawConnection(kind_master.port) as connection:
        connection.send(get(f"{origin.url}/echo", f"Host: {host_of(origin.url)}", *framing,
                            method="POST") + b"5\r\nhello\r\n0\r\n\r\n")
        response = connection.read_response()
        assert response.status == 400
        assert connection.closed_by_peer()
    assert origin.since(mark) == []


# --- H10 ---------------------------------------------------------------------------------


def test_h10_gzip_passes_through_byte_identical(kind_master, origin):
    response = request(kind_master.port, get(f"{origin.url}/gzip", f"Host: {host_of(origin.url)}",
                                             "Accept-Encoding: gzip"))
    assert response.status == 200
    assert response.header("content-encoding") == "gzip"
    assert hashlib.sha256(response.body).digest() == hashlib.sha256(GZIP_BODY).digest()
    assert gzip.decompress(response.body)


def test_h10_head_keeps_the_connection_usable_and_routing_per_request(kind_master, origin):
    with RawConnection(kind_master.port) as connection:
        connection.send(get(f"{origin.url}/big?n=1048576", f"Host: {host_of(origin.url)}",
                            method="HEAD"))
        head = connection.read_response(method="HEAD")
        assert head.status == 200
        assert head.header("content-length") == "1048576"
        started = time.monotonic()
        connection.send(get(f"{origin.url}/headers", f"Host: {host_of(origin.url)}",
                            "X-Cache-Proxyname: p3"))
        response = connection.read_response()
    assert head.body == b""
    assert response.status == 200
    assert response.header("x-cache-proxyname") == "p3"
    assert time.monotonic() - started < 2
