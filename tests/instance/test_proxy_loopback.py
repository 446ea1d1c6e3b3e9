"""Behaviour of ``scrapoxy-instance`` over real loopback sockets, proxy running in-process."""
from __future__ import annotations

import base64
import hashlib
import http.client
import json
import socket

from tests.instance.conftest import SOURCE
from tests.instance.lab import exchange, recv_until, running_origin, running_tcp
from tests.support import free_port


def _get(proxy_port: int, url: str, *, method: str = "GET", body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[http.client.HTTPResponse, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", proxy_port, timeout=10)
    conn.request(method, url, body=body, headers=headers or {})
    response = conn.getresponse()
    payload = response.read()
    conn.close()
    return response, payload


def test_absolute_form_get_reaches_origin_from_the_source_address(proxy_port, origin):
    server, port = origin
    response, body = _get(proxy_port, f"http://127.0.0.1:{port}/a/b?q=1")
    assert response.status == 200
    assert json.loads(body)["path"] == "/a/b?q=1"
    assert server.seen[0].client_host == SOURCE


def test_path_bytes_are_forwarded_exactly_as_received(proxy_port, origin):
    server, port = origin
    raw_path = b"/p%2Fq/%7e;x=1?a=%20&b=/../c"
    reply = exchange(proxy_port, b"GET http://127.0.0.1:%d%s HTTP/1.1\r\nConnection: close\r\n\r\n"
                     % (port, raw_path))
    assert reply.startswith(b"HTTP/1.1 200")
    assert server.seen[0].path.encode() == raw_path


def test_hop_by_hop_and_proxy_authorization_are_not_forwarded(proxy_port, origin):
    server, port = origin
    response, _ = _get(proxy_port, f"http://127.0.0.1:{port}/hop", headers={
        "Proxy-Authorization": "Basic dTpw", "Proxy-Connection": "keep-alive",
        "Connection": "keep-alive, X-Hop", "X-Hop": "secret", "Keep-Alive": "timeout=5",
        "TE": "trailers", "X-Kept": "yes",
    })
    seen = server.seen[0].headers
    for name in ("proxy-authorization", "proxy-connection", "x-hop", "keep-alive", "te"):
        assert name not in seen
    assert seen["x-kept"] == "yes"
    assert "x-forwarded-for" not in seen and "via" not in seen
    # The origin's own hop-by-hop headers do not reach the client either.
    assert response.getheader("X-Origin-Hop") is None
    assert response.getheader("Keep-Alive") is None


def test_two_requests_share_one_keep_alive_client_connection(proxy_port, origin):
    server, port = origin
    conn = http.client.HTTPConnection("127.0.0.1", proxy_port, timeout=10)
    conn.request("GET", f"http://127.0.0.1:{port}/one")
    first = conn.getresponse()
    assert json.loads(first.read())["path"] == "/one"
    assert first.getheader("Connection") is None
    local = conn.sock.getsockname()
    conn.request("GET", f"http://127.0.0.1:{port}/two")
    second = conn.getresponse()
    assert json.loads(second.read())["path"] == "/two"
    assert conn.sock.getsockname() == local
    conn.close()


def test_head_then_get_on_one_connection(proxy_port, origin):
    _, port = origin
    conn = http.client.HTTPConnection("127.0.0.1", proxy_port, timeout=10)
    conn.request("HEAD", f"http://127.0.0.1:{port}/big?n=1048576")
    head = conn.getresponse()
    assert head.getheader("Content-Length") == "1048576"
    assert head.read() == b""
    conn.request("GET", f"http://127.0.0.1:{port}/after")
    assert json.loads(conn.getresponse().read())["path"] == "/after"
    conn.close()


def test_post_body_is_relayed(proxy_port, origin):
    server, port = origin
    body = bytes(range(256)) * 4000  # ~1 MB: exercises back-pressure on the way up
    response, payload = _get(proxy_port, f"http://127.0.0.1:{port}/echo", method="POST", body=body)
    answer = json.loads(payload)
    assert answer["body_length"] == len(body)
    assert answer["sha256"] == hashlib.sha256(body).hexdigest()


def test_chunked_request_body_is_relayed(proxy_port, origin):
    server, port = origin
    reply = exchange(proxy_port, b"POST http://127.0.0.1:%d/echo HTTP/1.1\r\n"
                     b"Transfer-Encoding: Chunked\r\nConnection: close\r\n\r\n"
                     b"5\r\nhello\r\n0\r\n\r\n" % port)
    assert reply.startswith(b"HTTP/1.1 200")
    assert server.seen[0].body == b"hello"


def test_big_response_streams_intact(proxy_port, origin):
    _, port = origin
    size = 8 * 1024 * 1024
    response, payload = _get(proxy_port, f"http://127.0.0.1:{port}/big?n={size}")
    assert len(payload) == size and payload == b"x" * size


def test_chunked_response_keeps_one_framing_and_the_connection(proxy_port, origin):
    _, port = origin
    conn = http.client.HTTPConnection("127.0.0.1", proxy_port, timeout=10)
    conn.request("GET", f"http://127.0.0.1:{port}/chunked")
    response = conn.getresponse()
    assert response.getheader("Transfer-Encoding") == "chunked"
    assert response.getheader("Content-Length") is None
    assert response.read() == b"abcdef"
    conn.request("GET", f"http://127.0.0.1:{port}/next")
    assert conn.getresponse().status == 200
    conn.close()


def test_http10_client_gets_chunked_body_decoded_without_transfer_encoding(proxy_port, origin):
    _, port = origin
    reply = exchange(proxy_port, b"GET http://127.0.0.1:%d/chunked HTTP/1.0\r\n\r\n" % port)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert b"transfer-encoding" not in head.lower()
    assert body == b"abcdef"


def test_read_until_close_response_closes_the_client_connection(proxy_port, origin):
    _, port = origin
    reply = exchange(proxy_port, b"GET http://127.0.0.1:%d/until-close HTTP/1.1\r\n\r\n" % port)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert b"Connection: close" in head
    assert body == b"no length here"


def test_no_body_status_keeps_the_connection(proxy_port, origin):
    _, port = origin
    conn = http.client.HTTPConnection("127.0.0.1", proxy_port, timeout=10)
    for status in (204, 304):
        conn.request("GET", f"http://127.0.0.1:{port}/status/{status}")
        response = conn.getresponse()
        assert (response.status, response.read()) == (status, b"")
    conn.request("GET", f"http://127.0.0.1:{port}/last")
    assert conn.getresponse().status == 200
    conn.close()


def test_connect_tunnel_relays_bytes_both_ways(proxy_port):
    with running_tcp() as echo_port:
        with socket.create_connection(("127.0.0.1", proxy_port), timeout=10) as sock:
            sock.sendall(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: x\r\n\r\n" % echo_port)
            assert recv_until(sock, b"\r\n\r\n") == b"HTTP/1.1 200 Connection established\r\n\r\n"
            payload = b"ping" * 100000
            sock.sendall(payload)
            echoed = b""
            while len(echoed) < len(payload):
                echoed += sock.recv(65536)
            assert echoed == payload


def test_connect_tunnel_carries_http_to_an_origin(proxy_port, origin):
    server, port = origin
    conn = http.client.HTTPConnection("127.0.0.1", proxy_port, timeout=10)
    conn.set_tunnel("127.0.0.1", port)
    conn.request("GET", "/through-tunnel")
    assert json.loads(conn.getresponse().read())["path"] == "/through-tunnel"
    conn.close()
    assert server.seen[0].client_host == SOURCE


def test_tunnel_closes_when_the_target_closes(proxy_port):
    def greet_and_close(sock: socket.socket) -> None:
        sock.sendall(b"bye")

    with running_tcp(greet_and_close) as port:
        reply = exchange(proxy_port, b"CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\n" % port)
    assert reply == b"HTTP/1.1 200 Connection established\r\n\r\nbye"


def test_ipv6_literal_target_works_with_an_ipv4_source(proxy_port):
    with running_origin("::1") as (server, port):
        response, body = _get(proxy_port, f"http://[::1]:{port}/six")
        assert json.loads(body)["path"] == "/six"
        assert server.seen[0].client_host == "::1"


def test_missing_credentials_get_407(start_proxy, origin):
    server, port = origin
    proxy_port = start_proxy(credentials=b"u:p")
    response, _ = _get(proxy_port, f"http://127.0.0.1:{port}/x")
    assert response.status == 407
    assert response.getheader("Proxy-Authenticate").startswith("Basic realm=")
    wrong = "Basic " + base64.b64encode(b"u:wrong").decode()
    response, _ = _get(proxy_port, f"http://127.0.0.1:{port}/x",
                       headers={"Proxy-Authorization": wrong})
    assert response.status == 407
    assert server.seen == []


def test_right_credentials_pass_and_are_not_forwarded(start_proxy, origin):
    server, port = origin
    proxy_port = start_proxy(credentials=b"u:p")
    good = "Basic " + base64.b64encode(b"u:p").decode()
    response, _ = _get(proxy_port, f"http://127.0.0.1:{port}/x",
                       headers={"Proxy-Authorization": good})
    assert response.status == 200
    assert "proxy-authorization" not in server.seen[0].headers


def test_connect_requires_credentials_too(start_proxy):
    proxy_port = start_proxy(credentials=b"u:p")
    reply = exchange(proxy_port, b"CONNECT 127.0.0.1:9 HTTP/1.1\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 407")


def test_closed_port_gets_502_with_a_short_text(proxy_port):
    closed = free_port()
    response, body = _get(proxy_port, f"http://127.0.0.1:{closed}/")
    assert response.status == 502
    assert b"ConnectionRefused" in body and len(body) < 200
    reply = exchange(proxy_port, b"CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\n" % closed)
    assert reply.startswith(b"HTTP/1.1 502")


def test_target_closing_without_answer_gets_502(proxy_port):
    def close_at_once(sock: socket.socket) -> None:
        sock.recv(65536)

    with running_tcp(close_at_once) as port:
        response, _ = _get(proxy_port, f"http://127.0.0.1:{port}/")
    assert response.status == 502


def test_truncated_response_is_cut_not_patched(proxy_port):
    def truncate(sock: socket.socket) -> None:
        sock.recv(65536)
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")

    with running_tcp(truncate) as port:
        reply = exchange(proxy_port, b"GET http://127.0.0.1:%d/ HTTP/1.1\r\n\r\n" % port)
    assert reply.count(b"HTTP/1.1") == 1
    assert reply.endswith(b"\r\n\r\n0123456789")


def test_malformed_requests_get_400_and_the_proxy_keeps_serving(proxy_port, origin):
    server, port = origin
    bad_requests = [
        b"GET http://127.0.0.1:%d/ HTTP/1.1\r\nAccept : */*\r\n\r\n" % port,
        b"GET http://127.0.0.1:%d/ HTTP/1.1\r\nX-A: a\x00b\r\n\r\n" % port,
        b"GET /origin-form HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET https://127.0.0.1:%d/ HTTP/1.1\r\n\r\n" % port,
        b"garbage\r\n\r\n",
        b"POST http://127.0.0.1:%d/ HTTP/1.1\r\nContent-Length: 4\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" % port,
        b"POST http://127.0.0.1:%d/ HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n" % port,
        b"CONNECT nohost HTTP/1.1\r\n\r\n",
    ]
    for raw in bad_requests:
        reply = exchange(proxy_port, raw)
        assert reply.startswith(b"HTTP/1.1 400"), raw
    assert server.seen == []
    response, _ = _get(proxy_port, f"http://127.0.0.1:{port}/still-alive")
    assert response.status == 200
