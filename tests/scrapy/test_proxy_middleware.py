"""ProxyMiddleware: routing to the master, HTTPS by header, credentials, stickiness, settings."""
from __future__ import annotations

import base64

import pytest
from scrapy import Request, Spider
from scrapy.exceptions import NotConfigured
from scrapy.http import HtmlResponse, Response
from scrapy.utils.test import get_crawler

from scrapoxy_scrapy import ProxyMiddleware
from scrapoxy_scrapy.proxy import https_by_header, parse_master
from tests.scrapy.chain import MASTER, Chain


def page(status: int = 200, proxyname: str | None = "inst-1", **headers: str):
    """A download function answering every request with a small HTML page."""

    def answer(request: Request) -> Response:
        all_headers = dict(headers)
        if proxyname is not None:
            all_headers["x-cache-proxyname"] = proxyname
        return HtmlResponse(request.url, status=status, headers=all_headers,
                            body=b"<html><a href='next'>next</a></html>", request=request)

    return answer


def basic(user_pass: str, encoding: str = "latin-1") -> str:
    return "Basic " + base64.b64encode(user_pass.encode(encoding)).decode()


# --- HTTPS by header -------------------------------------------------------------------------

def test_https_request_is_downloaded_as_http_through_master_with_real_url_in_location():
    chain = Chain()
    chain.fetch(Request("https://example.com:8443/a/b?q=1&r=%20#frag"), page())
    [sent] = chain.downloaded
    assert sent.url == "http://example.com:8443/a/b?q=1&r=%20"
    assert sent.header("Location") == "https://example.com:8443/a/b?q=1&r=%20"
    assert sent.meta["proxy"] == MASTER


def test_https_request_without_port_keeps_no_port():
    assert https_by_header("https://example.com/x?y") == ("http://example.com/x?y",
                                                          "https://example.com/x?y")


def test_spider_gets_response_with_original_https_url_and_request():
    chain = Chain()
    request = Request("https://example.com/a?q=1")
    response = chain.fetch(request, page())
    assert response.url == "https://example.com/a?q=1"
    assert response.request is request
    assert request.url == "https://example.com/a?q=1"
    assert "Location" not in request.headers
    assert response.urljoin("next") == "https://example.com/next"


def test_http_request_goes_to_master_unchanged():
    chain = Chain()
    response = chain.fetch(Request("http://example.com/a"), page())
    [sent] = chain.downloaded
    assert sent.url == "http://example.com/a"
    assert sent.header("Location") is None
    assert sent.meta["proxy"] == MASTER
    assert response.url == "http://example.com/a"


def test_dont_scrapoxy_sends_request_directly():
    chain = Chain()
    chain.fetch(Request("https://example.com/", meta={"dont_scrapoxy": True}), page())
    [sent] = chain.downloaded
    assert sent.url == "https://example.com/"
    assert "proxy" not in sent.meta
    assert sent.header("Location") is None


def test_copy_of_a_rewritten_request_is_rewritten_afresh():
    """A request copied mid-flight (e.g. by a middleware above this one) does not stack rewrites."""
    middleware = ProxyMiddleware(MASTER)
    request = Request("https://example.com/a")
    middleware.process_request(request)
    copy = request.copy()
    middleware.process_request(copy)
    assert copy.url == "http://example.com/a"
    assert copy.headers.getlist("Location") == [b"https://example.com/a"]
    middleware.process_response(copy, Response(copy.url))
    assert copy.url == "https://example.com/a"


# --- cooperation with Scrapy's own middlewares -----------------------------------------------

def test_redirect_from_https_page_resolves_against_https():
    chain = Chain()
    result = chain.fetch(Request("https://example.com/old"), page(status=302, Location="/new"))
    assert isinstance(result, Request)
    assert result.url == "https://example.com/new"
    assert "Location" not in result.headers


def test_redirected_request_is_rewritten_again():
    chain = Chain()
    redirect = chain.fetch(Request("https://example.com/old"), page(status=301, Location="/new"))
    chain.fetch(redirect, page())
    assert chain.downloaded[1].url == "http://example.com/new"
    assert chain.downloaded[1].header("Location") == "https://example.com/new"


def test_retry_of_failed_download_retries_the_https_request():
    chain = Chain()
    result = chain.fetch(Request("https://example.com/a"), ConnectionRefusedError())
    assert isinstance(result, Request)
    assert result.url == "https://example.com/a"
    assert "Location" not in result.headers


def test_retry_of_retryable_status_retries_the_https_request():
    chain = Chain()
    result = chain.fetch(Request("https://example.com/a"), page(status=503))
    assert isinstance(result, Request)
    assert result.url == "https://example.com/a"
    assert "Location" not in result.headers


def test_secure_cookie_from_https_page_is_sent_on_next_https_request():
    """Cookies are stored and selected for the https URL, not for the rewritten http one."""
    chain = Chain()
    chain.fetch(Request("https://example.com/login"),
                page(**{"Set-Cookie": "sid=42; Secure; Path=/"}))
    chain.fetch(Request("https://example.com/account"), page())
    assert chain.downloaded[1].header("Cookie") == "sid=42"


# --- credentials -----------------------------------------------------------------------------

def test_percent_encoded_credentials_become_basic_proxy_authorization():
    chain = Chain({"SCRAPOXY_MASTER": "http://a%40b:p%3Aw%2F%25@127.0.0.1:8888"})
    chain.fetch(Request("https://example.com/"), page())
    chain.fetch(Request("http://example.com/"), page())
    for sent in chain.downloaded:
        assert sent.header("Proxy-Authorization") == basic("a@b:p:w/%")
        # HttpProxyMiddleware (750) keeps the header: the proxy URL it sees has no credentials.
        assert sent.meta["proxy"] == MASTER


def test_credentials_work_with_httpproxy_middleware_disabled():
    chain = Chain({"SCRAPOXY_MASTER": "http://user:secret@127.0.0.1:8888",
                   "HTTPPROXY_ENABLED": False})
    chain.fetch(Request("https://example.com/"), page())
    assert chain.downloaded[0].header("Proxy-Authorization") == basic("user:secret")


def test_credentials_outside_latin1_are_sent_as_utf8():
    master = parse_master("http://%E2%82%AC:%C3%A9t%C3%A9@127.0.0.1:8888")
    assert master.authorization == basic("€:été", "utf-8").encode()
    assert master.url == MASTER


def test_latin1_credentials_follow_httpproxy_auth_encoding():
    assert parse_master("http://%C3%A9:x@h:1").authorization == basic("é:x", "latin-1").encode()
    assert parse_master("http://%C3%A9:x@h:1", auth_encoding="utf-8").authorization == \
        basic("é:x", "utf-8").encode()


def test_no_proxy_authorization_without_credentials():
    chain = Chain()
    chain.fetch(Request("https://example.com/"), page())
    assert chain.downloaded[0].header("Proxy-Authorization") is None


def test_ipv6_master_keeps_brackets():
    assert parse_master("http://u:p@[::1]:8888").url == "http://[::1]:8888"


@pytest.mark.parametrize("url", ["127.0.0.1:8888", "ftp://h:1", "http://", "http://h:notaport",
                                 "https://127.0.0.1:8888", "socks5://127.0.0.1:1080"])
def test_unusable_master_url_is_an_error(url):
    with pytest.raises(ValueError, match="SCRAPOXY_MASTER"):
        parse_master(url)


@pytest.mark.parametrize("url", ["https://u:Hunter2@127.0.0.1:8888", "http://u:Hunter2@h:nope",
                                 "ftp://u:Hunter2@h:1"])
def test_an_unusable_master_url_is_named_without_its_password(url):
    with pytest.raises(ValueError) as info:
        parse_master(url)
    assert "Hunter2" not in str(info.value) and "u:***@" in str(info.value)


def test_an_https_master_is_refused_saying_the_master_speaks_http():
    with pytest.raises(ValueError, match="must be http://, not https://"):
        parse_master("https://127.0.0.1:8888")


# --- stickiness ------------------------------------------------------------------------------

def test_response_proxyname_is_readable_from_response_meta():
    chain = Chain()
    response = chain.fetch(Request("https://example.com/"), page(proxyname="inst-7"))
    assert response.meta["scrapoxy_proxyname"] == "inst-7"


def test_a_response_that_names_no_instance_drops_the_name_a_redirect_copied():
    chain = Chain()
    hop = chain.fetch(Request("http://example.com/"), page(proxyname="inst-3"))
    follow = Request("https://example.com/", meta=dict(hop.meta))  # as a redirect copies meta
    assert chain.fetch(follow, page(proxyname=None)).meta.get("scrapoxy_proxyname") is None


def test_the_masters_407_is_logged_once_as_an_error_saying_where_credentials_go(caplog):
    chain = Chain()
    refused = page(status=407, proxyname=None, **{"x-scrapoxy-error": "auth"})
    for k in range(3):
        assert chain.fetch(Request(f"http://example.com/{k}"), refused).status == 407
    errors = [r.getMessage() for r in caplog.records
              if r.name == "scrapoxy_scrapy.proxy" and r.levelname == "ERROR"]
    assert len(errors) == 1 and "SCRAPOXY_MASTER as http://user:password@host:port" in errors[0]


def test_session_requests_send_proxyname_of_sessions_last_response():
    chain = Chain()
    chain.fetch(Request("https://example.com/1", meta={"scrapoxy_session": "s"}),
                page(proxyname="inst-1"))
    chain.fetch(Request("https://example.com/2", meta={"scrapoxy_session": "s"}),
                page(proxyname="inst-2"))  # the master substituted a dead inst-1
    chain.fetch(Request("https://example.com/3", meta={"scrapoxy_session": "s"}), page())
    first, second, third = chain.downloaded
    assert first.header("x-cache-proxyname") is None
    assert second.header("x-cache-proxyname") == "inst-1"
    assert third.header("x-cache-proxyname") == "inst-2"


def test_sessions_are_independent():
    chain = Chain()
    chain.fetch(Request("http://example.com/1", meta={"scrapoxy_session": ("acct", 1)}),
                page(proxyname="inst-1"))
    chain.fetch(Request("http://example.com/2", meta={"scrapoxy_session": ("acct", 2)}),
                page(proxyname="inst-2"))
    chain.fetch(Request("http://example.com/3", meta={"scrapoxy_session": ("acct", 2)}), page())
    assert chain.downloaded[2].header("x-cache-proxyname") == "inst-2"


def test_requests_without_session_send_no_proxyname():
    chain = Chain()
    chain.fetch(Request("https://example.com/1", meta={"scrapoxy_session": "s"}),
                page(proxyname="inst-1"))
    chain.fetch(Request("https://example.com/2"), page())
    assert chain.downloaded[1].header("x-cache-proxyname") is None


# --- settings --------------------------------------------------------------------------------

def test_not_configured_without_master():
    crawler = get_crawler(Spider, {})
    with pytest.raises(NotConfigured):
        ProxyMiddleware.from_crawler(crawler)


def test_not_configured_when_disabled():
    crawler = get_crawler(Spider, {"SCRAPOXY_MASTER": MASTER, "SCRAPOXY_ENABLED": False})
    with pytest.raises(NotConfigured):
        ProxyMiddleware.from_crawler(crawler)


def test_enabled_by_default_when_master_is_set():
    crawler = get_crawler(Spider, {"SCRAPOXY_MASTER": "http://u:p@10.0.0.1:8888"})
    middleware = ProxyMiddleware.from_crawler(crawler)
    assert middleware.master.url == "http://10.0.0.1:8888"
