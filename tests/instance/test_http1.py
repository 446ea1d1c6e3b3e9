"""Pure HTTP/1.1 helpers of ``scrapoxy-instance``: parsing, framing, header hygiene, auth."""
from __future__ import annotations

import base64

import pytest

from scrapoxy_server.instance import http1
from scrapoxy_server.instance.http1 import Framing, HttpError


def request(raw: bytes) -> http1.RequestHead:
    return http1.parse_request_head(raw)


def response(raw: bytes) -> http1.ResponseHead:
    return http1.parse_response_head(raw)


@pytest.mark.parametrize("raw", [
    b"GET http://a/ HTTP/1.1\r\nAccept : */*\r\n\r\n",
    b"GET http://a/ HTTP/1.1\r\nX: a\x00b\r\n\r\n",
    b"GET http://a/ HTTP/1.1\r\nX: a\rb\r\n\r\n",
    b"GET http://a/ HTTP/1.1\r\nX: a\r\n  folded\r\n\r\n",
    b"GET http://a/ HTTP/2.0\r\n\r\n",
    b"GET  http://a/ HTTP/1.1\r\n\r\n",
    b"G(T http://a/ HTTP/1.1\r\n\r\n",
    b"GET http://a/\x01 HTTP/1.1\r\n\r\n",
    b"no colon header line\r\n\r\n",
])
def test_malformed_request_heads_raise_400(raw):
    with pytest.raises(HttpError) as caught:
        request(raw)
    assert caught.value.status == 400


def test_request_head_tolerates_leading_blank_lines_and_bare_lf():
    head = request(b"\r\nGET http://a/ HTTP/1.1\nHost: a\n\n")
    assert (head.method, head.target, head.headers) == (b"GET", b"http://a/", ((b"Host", b"a"),))


def test_head_end_is_found_only_when_complete():
    assert http1.find_head_end(b"GET / HTTP/1.1\r\nHost: a\r\n") is None
    assert http1.find_head_end(b"GET / HTTP/1.1\r\n\r\nbody") == len(b"GET / HTTP/1.1\r\n\r\n")


@pytest.mark.parametrize(("target", "host", "port", "path"), [
    (b"http://example.com/a?b=1", "example.com", 80, b"/a?b=1"),
    (b"HTTP://example.com:8080", "example.com", 8080, b"/"),
    (b"http://example.com?x", "example.com", 80, b"/?x"),
    (b"http://[::1]:9000/p%2F", "::1", 9000, b"/p%2F"),
    (b"http://127.0.0.1:1/../%7e", "127.0.0.1", 1, b"/../%7e"),
])
def test_proxy_targets_split_into_host_port_and_exact_path(target, host, port, path):
    parsed = http1.parse_proxy_target(target)
    assert (parsed.host, parsed.port, parsed.path) == (host, port, path)


@pytest.mark.parametrize("target", [
    b"/origin-form", b"https://a/", b"ftp://a/", b"http://u:p@a/", b"http://a:0/",
    b"http://a:99999/", b"http://[::1/", b"http://[zz]/", b"http:///", b"http://a b/",
])
def test_unusable_proxy_targets_raise_400(target):
    with pytest.raises(HttpError):
        http1.parse_proxy_target(target)


def test_connect_targets_need_a_port():
    assert http1.parse_connect_target(b"a.test:443") == ("a.test", 443)
    assert http1.parse_connect_target(b"[::1]:8443") == ("::1", 8443)
    with pytest.raises(HttpError):
        http1.parse_connect_target(b"a.test")


def test_hop_by_hop_headers_and_those_connection_lists_are_dropped():
    headers = (
        (b"Connection", b"keep-alive, X-Hop"), (b"X-Hop", b"1"), (b"Keep-Alive", b"t=5"),
        (b"Proxy-Connection", b"keep-alive"), (b"Proxy-Authorization", b"Basic x"),
        (b"TE", b"trailers"), (b"Trailer", b"X"), (b"Upgrade", b"h2c"), (b"X-Kept", b"2"),
    )
    assert http1.strip_hop_by_hop(headers) == ((b"X-Kept", b"2"),)


def test_upstream_head_replaces_host_and_asks_to_close():
    head = request(b"POST http://a.test:81/x HTTP/1.1\r\nHost: other\r\nContent-Length: 2\r\n"
                   b"Proxy-Authorization: Basic eA==\r\n\r\n")
    upstream = http1.upstream_request_head(head, http1.parse_proxy_target(head.target))
    assert upstream == (b"POST /x HTTP/1.1\r\nHost: a.test:81\r\nContent-Length: 2\r\n"
                        b"Connection: close\r\n\r\n")


@pytest.mark.parametrize(("raw", "expected"), [
    (b"GET http://a/ HTTP/1.1\r\n\r\n", http1.BodyFraming(Framing.NONE)),
    (b"POST http://a/ HTTP/1.1\r\nContent-Length: 5\r\n\r\n", http1.BodyFraming(Framing.LENGTH, 5)),
    (b"POST http://a/ HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n",
     http1.BodyFraming(Framing.LENGTH, 5)),
    (b"POST http://a/ HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n",
     http1.BodyFraming(Framing.CHUNKED)),
])
def test_request_framing(raw, expected):
    assert http1.request_framing(request(raw)) == expected


@pytest.mark.parametrize("raw", [
    b"POST http://a/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n",
    b"POST http://a/ HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
    b"POST http://a/ HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n",
    b"POST http://a/ HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
])
def test_ambiguous_request_framing_is_refused(raw):
    with pytest.raises(HttpError) as caught:
        http1.request_framing(request(raw))
    assert caught.value.status == 400


@pytest.mark.parametrize(("raw", "method", "kind"), [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", b"HEAD", Framing.NONE),
    (b"HTTP/1.1 204 No Content\r\n\r\n", b"GET", Framing.NONE),
    (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", b"GET", Framing.NONE),
    (b"HTTP/1.1 100 Continue\r\n\r\n", b"GET", Framing.NONE),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", b"GET", Framing.LENGTH),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 9\r\n\r\n", b"GET",
     Framing.CHUNKED),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", b"GET", Framing.UNTIL_CLOSE),
    (b"HTTP/1.0 200 OK\r\n\r\n", b"GET", Framing.UNTIL_CLOSE),
])
def test_response_framing(raw, method, kind):
    assert http1.response_framing(response(raw), request_method=method).kind is kind


def test_bad_response_heads_raise_502():
    bad = (b"HTTP/1.1 2OO OK\r\n\r\n", b"ICY 200 OK\r\n\r\n",
           b"HTTP/1.1 200 OK\r\nX-Bad : 1\r\n\r\n")
    for raw in bad:
        with pytest.raises(HttpError) as caught:
            response(raw)
        assert caught.value.status == 502


def test_client_response_head_keeps_one_framing():
    head = response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n"
                    b"Connection: X-O\r\nX-O: 1\r\n\r\n")
    assert http1.client_response_head(head, decode_chunked=False, close=False) == (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert http1.client_response_head(head, decode_chunked=True, close=True) == (
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")


def test_chunked_reader_finds_the_end_across_any_split():
    body = b"5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT"
    for split in range(1, len(body)):
        reader = http1.ChunkedReader()
        consumed_a, payload_a = reader.feed(body[:split])
        rest = body[consumed_a:]
        consumed_b, payload_b = reader.feed(rest) if not reader.done else (0, b"")
        assert reader.done
        assert consumed_a + consumed_b == len(body) - len(b"NEXT")
        assert payload_a + payload_b == b"hello0123456789"


@pytest.mark.parametrize("body", [b"zz\r\n", b"2\r\nabc\r\n", b"1" * 20 + b"\r\n"])
def test_chunked_reader_rejects_bad_chunks(body):
    with pytest.raises(HttpError):
        http1.ChunkedReader().feed(body)


def test_length_reader_stops_at_the_length():
    reader = http1.LengthReader(3)
    assert reader.feed(b"ab") == (2, b"ab")
    assert reader.feed(b"cdef") == (1, b"c")
    assert reader.done


def _basic(value: bytes) -> http1.Headers:
    return ((b"Proxy-Authorization", b"Basic " + base64.b64encode(value)),)


def test_proxy_authorization_must_match_exactly():
    assert http1.check_proxy_authorization(_basic(b"u:p"), b"u:p")
    assert not http1.check_proxy_authorization(_basic(b"u:q"), b"u:p")
    assert not http1.check_proxy_authorization((), b"u:p")
    assert not http1.check_proxy_authorization(((b"Proxy-Authorization", b"Basic !!"),), b"u:p")
    assert not http1.check_proxy_authorization(((b"Proxy-Authorization", b"Bearer dTpw"),), b"u:p")


def test_error_response_is_short_text_that_closes():
    reply = http1.error_response(502, "cannot connect")
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 502 Bad Gateway")
    assert b"Connection: close" in head
    assert b"Content-Length: %d" % len(body) in head
