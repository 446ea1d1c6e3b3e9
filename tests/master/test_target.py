"""Resolving the target of each request mode, and refusing what is not http(s)."""
import pytest

from scrapoxy_server.master.http1 import HttpError
from scrapoxy_server.master.target import parse_authority, request_target


def test_absolute_form_http_keeps_path_bytes():
    t = request_target(method=b"GET", target=b"http://Example.com:8080/a%2F/b?q=%41#frag", location=None)
    assert (t.tls, t.host, t.port) == (False, "example.com", 8080)
    assert t.path == b"/a%2F/b?q=%41"
    assert t.absolute == b"http://Example.com:8080/a%2F/b?q=%41"


def test_location_https_wins_over_the_request_line():
    t = request_target(method=b"GET", target=b"http://h/a", location=b"https://h:8443/a?x")
    assert (t.tls, t.host, t.port, t.path) == (True, "h", 8443, b"/a?x")


def test_origin_form_with_location_https():
    t = request_target(method=b"GET", target=b"/a", location=b"https://h/a")
    assert (t.tls, t.port, t.authority) == (True, 443, b"h")


def test_absolute_https_request_line_is_tls():
    t = request_target(method=b"GET", target=b"https://h/", location=None)
    assert t.tls and t.port == 443


def test_ipv6_literal():
    t = request_target(method=b"GET", target=b"http://[::1]:8080/x", location=None)
    assert (t.host, t.port, t.authority) == ("::1", 8080, b"[::1]:8080")


def test_default_port_is_dropped_from_authority():
    t = request_target(method=b"GET", target=b"http://h:80/", location=None)
    assert t.authority == b"h"


@pytest.mark.parametrize("target, location", [
    (b"http://h/", b"ftp://x/"),
    (b"http://h/", b"junk"),
    (b"ftp://h/", None),
    (b"/path", None),
    (b"http:///nohost", None),
    (b"http://h:99999/", None),
    (b"http://user@h/", None),
    (b"http://[::1/", None),
])
def test_bad_targets_are_400(target, location):
    with pytest.raises(HttpError) as info:
        request_target(method=b"GET", target=target, location=location)
    assert info.value.status == 400


def test_connect_authority_needs_a_port():
    assert parse_authority(b"h:443", default_port=None) == ("h", 443)
    assert parse_authority(b"[::1]:443", default_port=None) == ("::1", 443)
    with pytest.raises(HttpError):
        parse_authority(b"h", default_port=None)
