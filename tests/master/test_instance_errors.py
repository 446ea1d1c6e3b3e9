"""Which answers are an instance's own errors (read as the master's 502/504), from a table."""
import pytest

from scrapoxy_server.master.http1 import ResponseHead
from scrapoxy_server.master.instance_errors import instance_error


def head(status: int, *headers: tuple[bytes, bytes], reason: bytes = b"R") -> ResponseHead:
    return ResponseHead(b"HTTP/1.1", status, reason, list(headers))


@pytest.mark.parametrize("response, expected", [
    (head(503, (b"X-Squid-Error", b"ERR_CONNECT_FAIL 111")), (502, "squid ERR_CONNECT_FAIL 111")),
    (head(504, (b"x-squid-error", b"ERR_READ_TIMEOUT 0")), (504, "squid ERR_READ_TIMEOUT 0")),
    (head(403, (b"X-Squid-Error", b"ERR_ACCESS_DENIED 0")), (502, "squid ERR_ACCESS_DENIED 0")),
    (head(500, (b"Server", b"tinyproxy/1.11.1"), reason=b"Unable to connect"),
     (502, "tinyproxy 500 Unable to connect")),
    (head(502, (b"x-scrapoxy-error", b"upstream")), (502, "scrapoxy-instance 502 upstream")),
])
def test_an_instances_own_error_is_recognised_by_its_mark(response, expected):
    assert instance_error(response) == expected


@pytest.mark.parametrize("response", [
    head(503, (b"Server", b"nginx")),                       # the site's own 503: a ban, maybe
    head(429),
    head(200, (b"X-Squid-Error", b"ERR_CONNECT_FAIL 111")),  # not an error status
    head(404, (b"Server", b"Apache"), (b"Via", b"1.1 tinyproxy (tinyproxy/1.11.1)")),
])
def test_the_sites_own_answers_pass(response):
    assert instance_error(response) is None


def test_scrapoxy_instances_message_is_kept_when_its_body_came_with_the_head():
    response = head(502, (b"x-scrapoxy-error", b"upstream"))
    body = b'{"error": "upstream", "message": "cannot connect to h:9: ConnectionRefusedError"}'
    assert instance_error(response, body) == (
        502, "scrapoxy-instance 502 cannot connect to h:9: ConnectionRefusedError")
    assert instance_error(response, body[:20]) == (502, "scrapoxy-instance 502 upstream")
