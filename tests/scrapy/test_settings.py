"""Settings: SCRAPOXY_ names, the original's deprecated names, CONNECT mode, sessions helper."""
from __future__ import annotations

import base64

import pytest
from scrapy import Request, Spider
from scrapy.exceptions import ScrapyDeprecationWarning
from scrapy.http import Response
from scrapy.settings import Settings
from scrapy.utils.test import get_crawler

from scrapoxy_scrapy import ProxyMiddleware, ScaleMiddleware
from scrapoxy_scrapy.sessions import SessionSpiderMiddleware, session_token
from scrapoxy_scrapy.settings import read_settings
from scrapoxy_scrapy.state import crawl_state
from tests.scrapy.chain import MASTER, Chain


def test_defaults():
    settings = read_settings(Settings({"SCRAPOXY_MASTER": MASTER}))
    assert settings.https_mode == "location" and settings.api is None
    assert settings.ban_policy == "scrapoxy_scrapy.policy.BanPolicy"
    assert settings.ban_retry_times == 5


@pytest.mark.parametrize(("old", "new", "attribute"), [
    ("PROXY", "SCRAPOXY_MASTER", "master"),
    ("API_SCRAPOXY", "SCRAPOXY_API", "api"),
    ("API_SCRAPOXY_PASSWORD", "SCRAPOXY_PASSWORD", "password"),
])
def test_original_setting_names_work_with_a_deprecation_warning(old, new, attribute):
    with pytest.warns(ScrapyDeprecationWarning, match=new):
        settings = read_settings(Settings({old: "http://127.0.0.1:1/api"}))
    assert getattr(settings, attribute) == "http://127.0.0.1:1/api"


def test_new_name_wins_over_the_original_without_warning(recwarn):
    settings = read_settings(Settings({"PROXY": "http://old:1", "SCRAPOXY_MASTER": MASTER}))
    assert settings.master == MASTER
    assert not [w for w in recwarn if issubclass(w.category, ScrapyDeprecationWarning)]


def test_originals_proxy_with_noconnect_suffix_still_routes_to_master():
    with pytest.warns(ScrapyDeprecationWarning):
        middleware = ProxyMiddleware.from_crawler(
            get_crawler(Spider, {"PROXY": "http://127.0.0.1:8888/?noconnect"}))
    assert middleware.master.url == MASTER


@pytest.mark.parametrize(("name", "value"), [("SCRAPOXY_HTTPS_MODE", "tunnel"),
                                             ("SCRAPOXY_BAN_RETRY_TIMES", -1)])
def test_bad_values_name_the_setting(name, value):
    with pytest.raises(ValueError, match=name):
        read_settings(Settings({name: value}))


def test_middlewares_of_one_crawl_share_sessions_and_gate():
    crawler = get_crawler(Spider, {"SCRAPOXY_MASTER": MASTER})
    proxy = ProxyMiddleware.from_crawler(crawler)
    scale = ScaleMiddleware.from_crawler(crawler)
    assert proxy.sessions is crawl_state(crawler).sessions
    assert scale.gate is crawl_state(crawler).gate


# --- CONNECT mode ----------------------------------------------------------------------------

def ok(request: Request) -> Response:
    return Response(request.url, request=request, headers={"x-cache-proxyname": "inst-1"})


def proxy_username(sent) -> tuple[str, str]:
    value = sent.header("Proxy-Authorization")
    assert value is not None and value.startswith("Basic ")
    username, _, password = base64.b64decode(value[len("Basic "):]).decode().partition(":")
    return username, password


def test_connect_mode_leaves_https_to_scrapys_tunnel_with_a_token_naming_it():
    chain = Chain({"SCRAPOXY_HTTPS_MODE": "connect", "SCRAPOXY_MASTER": "http://u:p@127.0.0.1:8888"})
    chain.fetch(Request("https://example.com/a"), ok)
    [sent] = chain.downloaded
    assert sent.url == "https://example.com/a"
    assert sent.header("Location") is None
    assert sent.meta["proxy"] == MASTER
    token = sent.meta["scrapoxy_session_token"]
    assert token.isalnum()
    assert proxy_username(sent) == (f"u;session={token}", "p")


def test_connect_mode_session_rides_in_proxy_username_not_in_a_header():
    chain = Chain({"SCRAPOXY_HTTPS_MODE": "connect", "SCRAPOXY_MASTER": "http://u:p@127.0.0.1:8888"})
    for _ in range(2):
        chain.fetch(Request("https://example.com/", meta={"scrapoxy_session": ("acct", 1)}), ok)
    chain.fetch(Request("https://example.com/", meta={"scrapoxy_session": ("acct", 2)}), ok)
    first, second, other = chain.downloaded
    token = first.meta["scrapoxy_session_token"]
    for sent in (first, second):
        assert sent.header("x-cache-proxyname") is None
        assert proxy_username(sent) == (f"u;session={token}", "p")
    assert other.meta["scrapoxy_session_token"] != token


def test_connect_mode_session_http_requests_carry_the_session_token_too():
    """One pin per session: http pinned by x-cache-proxyname and https by the token would put
    a session on two instances (two IPs) as soon as it mixes http and https pages."""
    chain = Chain({"SCRAPOXY_HTTPS_MODE": "connect", "SCRAPOXY_MASTER": "http://u:p@127.0.0.1:8888"})
    session = {"scrapoxy_session": ("acct", 1)}
    chain.fetch(Request("https://example.com/", meta=dict(session)), ok)
    chain.fetch(Request("http://example.com/", meta=dict(session)), ok)
    chain.fetch(Request("http://example.com/free"), ok)
    tunnel, plain, free = chain.downloaded
    token = tunnel.meta["scrapoxy_session_token"]
    assert proxy_username(plain) == (f"u;session={token}", "p")
    assert plain.header("x-cache-proxyname") is None
    assert proxy_username(free) == ("u", "p")  # no session: rotation, no token


def test_connect_mode_requests_without_session_take_lane_tokens_in_turn():
    chain = Chain({"SCRAPOXY_HTTPS_MODE": "connect", "SCRAPOXY_CONNECT_LANES": 2})
    for k in range(4):
        chain.fetch(Request(f"https://example.com/{k}"), ok)
    tokens = [proxy_username(sent)[0] for sent in chain.downloaded]
    assert tokens[0] == tokens[2] != tokens[1] == tokens[3]
    assert tokens[0].startswith(";session=")


def test_connect_mode_without_lanes_sends_plain_credentials_for_sessionless_requests():
    chain = Chain({"SCRAPOXY_HTTPS_MODE": "connect", "SCRAPOXY_CONNECT_LANES": 0,
                   "SCRAPOXY_MASTER": "http://u:p@127.0.0.1:8888"})
    chain.fetch(Request("https://example.com/a"), ok)
    [sent] = chain.downloaded
    assert proxy_username(sent) == ("u", "p")
    assert "scrapoxy_session_token" not in sent.meta


def test_connect_mode_still_sends_http_absolute_form_with_stickiness():
    chain = Chain({"SCRAPOXY_HTTPS_MODE": "connect"})
    chain.fetch(Request("http://example.com/1", meta={"scrapoxy_session": "s"}), ok)
    chain.fetch(Request("http://example.com/2", meta={"scrapoxy_session": "s"}), ok)
    first, second = chain.downloaded
    assert second.url == "http://example.com/2" and second.meta["proxy"] == MASTER
    assert proxy_username(first) == proxy_username(second)
    assert proxy_username(second)[0].startswith(";session=")


def test_session_token_is_safe_in_a_proxy_username():
    token = session_token("a:b;session=c")
    assert token.isalnum() and token == session_token("a:b;session=c")


# --- the session spider middleware -----------------------------------------------------------

def test_follow_up_requests_inherit_the_session_unless_they_set_their_own():
    request = Request("https://e.com/", meta={"scrapoxy_session": "acct"})
    response = Response("https://e.com/", request=request)
    out = list(SessionSpiderMiddleware().process_spider_output(response, [
        Request("https://e.com/next"),
        Request("https://e.com/own", meta={"scrapoxy_session": None}),
        {"item": 1},
    ]))
    assert out[0].meta["scrapoxy_session"] == "acct"
    assert out[1].meta["scrapoxy_session"] is None
    assert out[2] == {"item": 1}
