"""HTTP/1.1 parsing, header hygiene and framing on bytes (pure helpers of the master)."""
import pytest

from scrapoxy_server.master import http1
from scrapoxy_server.master.http1 import HttpError


def head(raw: bytes) -> http1.RequestHead:
    return http1.parse_request_head(raw)


def test_request_head_keeps_target_bytes_and_header_case():
    parsed = head(b"GET http://h/a%2Fb?x=%zz HTTP/1.1\r\nX-Mixed-Case: v\r\nHost: h")
    assert parsed.target == b"http://h/a%2Fb?x=%zz"
    assert parsed.headers == [(b"X-Mixed-Case", b"v"), (b"Host", b"h")]


@pytest.mark.parametrize("raw", [
    b"GET http://h/ HTTP/1.1\r\nAccept : */*",          # H03a: space before the colon
    b"GET http://h/ HTTP/1.1\r\nX-A: a\x00b",            # H03b: NUL in a value
    b"GET http://h/ HTTP/1.1\r\nX-A: a\rb",              # bare CR
    b"GET http://h/ HTTP/1.1\r\nX-A: a\r\n b",           # obsolete folding
    b"GET http://h/  HTTP/1.1",                          # extra space
    b"G(T http://h/ HTTP/1.1",                           # bad method
    b"GET http://h/\x01 HTTP/1.1",                       # control byte in the target
    b"GET http://h/",                                    # no version
    b"GET http://h/ HTTP/1.1\r\nX-A: 1\nbad line X-B: 2",     # a bad line ending in a valid-looking one
    b"GET http://h/ HTTP/1.1\r\nX-A: 1\r\r\nX-B: 2",          # CR CR LF
    b"GET http://h/ HTTP/1.1\r\nX-A: 1\r\n\r\nX-B: 2",       # an empty line inside the head
])
def test_malformed_requests_are_refused_with_400(raw):
    with pytest.raises(HttpError) as info:
        head(raw)
    assert info.value.status == 400


def test_header_pairs_keep_order_and_lose_surrounding_spaces_with_either_line_end():
    parsed = head(b"GET http://h/ HTTP/1.1\r\nA: 1\nB:  two words \t\r\nC:\r\nA: 3")
    assert parsed.headers == [(b"A", b"1"), (b"B", b"two words"), (b"C", b""), (b"A", b"3")]


def test_unknown_http_version_is_505():
    with pytest.raises(HttpError) as info:
        head(b"GET http://h/ HTTP/2.0")
    assert info.value.status == 505


def test_filter_drops_hop_by_hop_and_names_listed_in_connection():
    headers = [
        (b"Proxy-Connection", b"keep-alive"), (b"Connection", b"keep-alive, X-Hop"),
        (b"X-Hop", b"secret"), (b"Keep-Alive", b"timeout=5"), (b"TE", b"trailers"),
        (b"Proxy-Authorization", b"Basic dTpw"), (b"X-Cache-Proxyname", b"p1"),
        (b"Location", b"http://o/"), (b"Accept", b"*/*"),
    ]
    kept = http1.forwarded_headers(headers, drop=frozenset({b"x-cache-proxyname", b"location"}))
    assert kept == b"Accept: */*\r\n"


@pytest.mark.parametrize("headers, expected", [
    ([], (http1.NO_BODY, 0)),
    ([(b"Content-Length", b"5")], (http1.LENGTH, 5)),
    ([(b"Content-Length", b"5, 5")], (http1.LENGTH, 5)),
    ([(b"Transfer-Encoding", b"Chunked")], (http1.CHUNKED, 0)),   # H09a: case-insensitive
])
def test_request_framing(headers, expected):
    assert http1.request_framing(http1.RequestHead(b"POST", b"http://h/", b"HTTP/1.1", headers)) == expected


@pytest.mark.parametrize("headers", [
    [(b"Transfer-Encoding", b"chunked"), (b"Content-Length", b"4")],   # H09b
    [(b"Transfer-Encoding", b"chunked, gzip")],                          # H09c
    [(b"Transfer-Encoding", b"gzip")],
    [(b"Content-Length", b"4"), (b"Content-Length", b"5")],
    [(b"Content-Length", b"-1")],
    [(b"Content-Length", b"0x10")],
])
def test_ambiguous_request_framing_is_refused(headers):
    with pytest.raises(HttpError):
        http1.request_framing(http1.RequestHead(b"POST", b"http://h/", b"HTTP/1.1", headers))


def test_transfer_encoding_from_http10_client_is_refused():
    with pytest.raises(HttpError):
        http1.request_framing(http1.RequestHead(
            b"POST", b"http://h/", b"HTTP/1.0", [(b"Transfer-Encoding", b"chunked")]))


@pytest.mark.parametrize("method, status, headers, expected", [
    (b"HEAD", 200, [(b"Content-Length", b"1048576")], (http1.NO_BODY, 0)),
    (b"GET", 204, [], (http1.NO_BODY, 0)),
    (b"GET", 304, [(b"Content-Length", b"10")], (http1.NO_BODY, 0)),
    (b"GET", 200, [(b"Content-Length", b"10")], (http1.LENGTH, 10)),
    (b"GET", 200, [(b"Transfer-Encoding", b"chunked")], (http1.CHUNKED, 0)),
    (b"GET", 200, [], (http1.UNTIL_CLOSE, 0)),
    (b"GET", 200, [(b"Transfer-Encoding", b"gzip")], (http1.UNTIL_CLOSE, 0)),
])
def test_response_framing(method, status, headers, expected):
    response = http1.ResponseHead(b"HTTP/1.1", status, b"", headers)
    assert http1.response_framing(response, request_method=method) == expected


def test_chunked_reader_finds_the_end_across_pieces_and_leaves_the_next_message():
    body = b"2\r\nab\r\n2;ext=1\r\ncd\r\n0\r\nTrailer: x\r\n\r\n"
    reader = http1.ChunkedReader(decode=True)
    used = 0
    for i in range(len(body)):
        used += reader.feed(body[i:i + 1])
    assert reader.done and used == len(body)
    assert b"".join(reader.decoded) == b"abcd"
    reader2 = http1.ChunkedReader()
    assert reader2.feed(body + b"GET /next") == len(body)


@pytest.mark.parametrize("bad", [b"zz\r\n", b"2\r\nabX\r\n", b"1" * 20 + b"\r\n"])
def test_chunked_reader_refuses_garbage(bad):
    with pytest.raises(HttpError):
        http1.ChunkedReader().feed(bad)


def test_response_head_with_bad_header_is_an_upstream_error():
    with pytest.raises(HttpError) as info:
        http1.parse_response_head(b"HTTP/1.1 200 OK\r\nX-Bad : 1")
    assert info.value.status == 502 and info.value.code == "upstream"
