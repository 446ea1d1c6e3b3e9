"""Ban handling: the policy's decisions, the retry, instance stops, session unpinning, stats."""
from __future__ import annotations

import pytest
from scrapy import Request, Spider
from scrapy.exceptions import NotConfigured
from scrapy.http import HtmlResponse, Response
from scrapy.core.downloader.handlers.http11 import TunnelError
from scrapy.utils.test import get_crawler
from twisted.internet import defer
from twisted.internet.error import ConnectionLost
from twisted.python.failure import Failure
from twisted.web.client import ResponseFailed, ResponseNeverReceived

from scrapoxy_scrapy import BanMiddleware, BanPolicy, DOWNLOADER_MIDDLEWARES
from scrapoxy_scrapy.commander import CommanderHTTPError, StoppedInstance
from scrapoxy_scrapy.policy import Ban, load_ban_policy
from scrapoxy_scrapy.pool import PoolGate
from scrapoxy_scrapy.sessions import SessionPins
from scrapoxy_scrapy.tunnels import TOKEN_KEY, TunnelTokens
from tests.scrapy.chain import MASTER, Chain


def answer(status: int = 200, body: bytes = b"<html>ok</html>", proxyname: str = "inst-1",
           **headers: str):
    def download(request: Request) -> Response:
        return HtmlResponse(request.url, status=status, body=body, request=request,
                            headers={"x-cache-proxyname": proxyname, **headers})
    return download


class FakeStats:
    def __init__(self) -> None:
        self.values: dict[str, int] = {}

    def inc_value(self, key: str, count: int = 1) -> None:
        self.values[key] = self.values.get(key, 0) + count


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeStopper:
    """Records stop calls; each returns a Deferred the test fires."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.pending: list[defer.Deferred[int]] = []

    def __call__(self, name: str) -> defer.Deferred[int]:
        self.calls.append(name)
        d: defer.Deferred[int] = defer.Deferred()
        self.pending.append(d)
        return d


def middleware(**kwargs) -> tuple[BanMiddleware, FakeStopper, FakeStats]:
    stopper, stats = FakeStopper(), FakeStats()
    options = {"policy": BanPolicy(), "retry_times": 2, "stop_instance": stopper,
               "sessions": SessionPins(), "gate": PoolGate(alive_count=None, backoff_base_s=1,
                                                           backoff_max_s=1, wait_timeout_s=1),
               "stats": stats, **kwargs}
    return BanMiddleware(**options), stopper, stats


def response(status: int = 200, body: bytes = b"ok", proxyname: str | None = "inst-1",
             **headers: str) -> HtmlResponse:
    if proxyname:
        headers["x-cache-proxyname"] = proxyname
    return HtmlResponse("https://example.com/", status=status, body=body, headers=headers)


# --- policy ----------------------------------------------------------------------------------

@pytest.mark.parametrize("status", [429, 503])
def test_default_policy_bans_429_and_503(status):
    assert BanPolicy().response_ban(Request("https://e.com/"), response(status)) == \
        Ban(f"http_{status}")


def test_master_503_no_instance_is_not_a_ban():
    master_error = response(503, proxyname=None, **{"x-scrapoxy-error": "no_instance"})
    assert BanPolicy().response_ban(Request("https://e.com/"), master_error) is None


def test_success_is_not_a_ban():
    assert BanPolicy().response_ban(Request("https://e.com/"), response(200)) is None


def test_body_patterns_ban_by_name():
    policy = BanPolicy(body_patterns={"captcha": r"(?i)are you a robot"})
    assert policy.response_ban(Request("https://e.com/"),
                               response(200, b"<p>Are you a ROBOT?</p>")) == Ban("body/captcha")


def test_exceptions_ban_by_class_or_dotted_path():
    policy = BanPolicy(exceptions=["builtins.ConnectionResetError", TimeoutError])
    assert policy.exception_ban(Request("https://e.com/"), ConnectionResetError()) == \
        Ban("exception/ConnectionResetError")
    assert policy.exception_ban(Request("https://e.com/"), ValueError()) is None


class OnlyTeapots:
    def response_ban(self, request, response):
        return Ban("teapot") if response.status == 418 else None

    def exception_ban(self, request, exception):
        return None


def test_custom_policy_loads_by_dotted_path():
    crawler = get_crawler(Spider, {})
    policy = load_ban_policy("tests.scrapy.test_bans.OnlyTeapots", crawler)
    assert isinstance(policy, OnlyTeapots)


@pytest.mark.parametrize("path, words", [
    ("tests.scrapy.test_bans.NoSuchPolicy", "names no class that can be imported"),
    ("tests.scrapy.no_such_module.Policy", "names no class that can be imported"),
    ("tests.scrapy", "is not a class (module)"),
    ("OnlyTeapots", "names no class that can be imported"),
], ids=["no-such-class", "no-such-module", "a-module", "not-dotted"])
def test_a_ban_policy_path_that_names_no_class_is_an_error_naming_the_setting(path, words):
    with pytest.raises(ValueError) as info:
        load_ban_policy(path, get_crawler(Spider, {}))
    assert str(info.value).startswith(f"SCRAPOXY_BAN_POLICY = {path!r} ")
    assert words in str(info.value)


def test_policy_reads_settings():
    crawler = get_crawler(Spider, {"SCRAPOXY_BAN_HTTP_CODES": [403],
                                   "SCRAPOXY_BAN_BODY_PATTERNS": ["blocked"]})
    policy = BanPolicy.from_crawler(crawler)
    assert policy.http_codes == {403}
    assert policy.response_ban(Request("https://e.com/"), response(200, b"you are blocked")) \
        == Ban("body/blocked")


# --- middleware ------------------------------------------------------------------------------

def test_ban_retries_request_counts_reason_and_stops_instance_once():
    mw, stopper, stats = middleware()
    request = Request("https://example.com/a")
    retry = mw.process_response(request, response(429))
    assert isinstance(retry, Request) and retry.url == request.url and retry.dont_filter
    again = mw.process_response(retry, response(429))
    assert isinstance(again, Request)
    assert stopper.calls == ["inst-1"]  # asked once for the same instance
    assert stats.values["scrapoxy/ban/reason_count/http_429"] == 2
    assert stats.values["scrapoxy/ban/retry_count"] == 2


def test_ban_retries_are_bounded_then_the_response_goes_on():
    mw, _, stats = middleware(retry_times=1)
    banned = response(503)
    retry = mw.process_response(Request("https://example.com/a"), banned)
    assert mw.process_response(retry, banned) is banned
    assert stats.values["scrapoxy/ban/max_reached"] == 1


def test_ban_unpins_sessions_on_the_banned_instance():
    sessions = SessionPins()
    sessions.pin("acct", "inst-1")
    sessions.pin("other", "inst-2")
    mw, _, _ = middleware(sessions=sessions)
    mw.process_response(Request("https://example.com/", meta={"scrapoxy_session": "acct"}),
                        response(429))
    assert sessions.get("acct") is None and sessions.get("other") == "inst-2"


def test_last_instance_banned_closes_the_gate():
    mw, stopper, _ = middleware()
    mw.process_response(Request("https://example.com/"), response(429))
    assert mw.gate.ready
    stopper.pending[0].callback(0)
    assert not mw.gate.ready
    mw.gate.stop()


def test_failed_stop_is_logged_and_tried_again_on_next_ban():
    mw, stopper, stats = middleware()
    mw.process_response(Request("https://example.com/"), response(429))
    stopper.pending[0].errback(CommanderHTTPError(status=500))
    mw.process_response(Request("https://example.com/"), response(429))
    assert stopper.calls == ["inst-1", "inst-1"]
    assert stats.values["scrapoxy/ban/stop_failed"] == 1


def test_stop_of_already_replaced_instance_is_not_an_error():
    mw, stopper, stats = middleware()
    mw.process_response(Request("https://example.com/"), response(429))
    stopper.pending[0].errback(CommanderHTTPError(status=404, code="not_found"))
    assert "scrapoxy/ban/stop_failed" not in stats.values


def test_dont_ban_meta_skips_ban_handling():
    mw, stopper, _ = middleware()
    banned = response(429)
    assert mw.process_response(Request("https://e.com/", meta={"scrapoxy_dont_ban": True}),
                               banned) is banned
    assert stopper.calls == []


def test_ban_retry_does_not_use_up_retry_times_and_is_the_https_request():
    chain = Chain({"DOWNLOADER_MIDDLEWARES": DOWNLOADER_MIDDLEWARES, "RETRY_TIMES": 0,
                   "SCRAPOXY_BAN_RETRY_TIMES": 3})
    request = Request("https://example.com/a", meta={"scrapoxy_session": "s"})
    chain.fetch(Request("https://example.com/0", meta={"scrapoxy_session": "s"}), answer())
    retry = chain.fetch(request, answer(429))
    assert isinstance(retry, Request)
    assert retry.url == "https://example.com/a"
    assert "retry_times" not in retry.meta
    # Neither the rewrite nor the pin to the banned instance leaks into the retry.
    assert "Location" not in retry.headers and "x-cache-proxyname" not in retry.headers
    chain.fetch(retry, answer(proxyname="inst-2"))
    assert chain.downloaded[-1].header("x-cache-proxyname") is None


def test_not_configured_when_ban_handling_is_off():
    crawler = get_crawler(Spider, {"SCRAPOXY_MASTER": MASTER, "SCRAPOXY_BAN_ENABLED": False})
    with pytest.raises(NotConfigured):
        BanMiddleware.from_crawler(crawler)


# --- CONNECT mode: no x-cache-proxyname, the session token names the instance ------------------

def connect_middleware(**kwargs):
    session_stopper = FakeStopper()
    tunnels = TunnelTokens(lanes=2, lane_ttl_s=60.0, salt="s")
    mw, stopper, stats = middleware(stop_session=session_stopper, tunnels=tunnels, **kwargs)
    return mw, stopper, session_stopper, tunnels, stats


def tunnelled(meta: dict | None = None, tunnels: TunnelTokens | None = None) -> Request:
    request = Request("https://example.com/a", meta=dict(meta or {}))
    if tunnels is not None:
        tunnels.assign(request.meta)  # what ProxyMiddleware does in CONNECT mode
    return request


def test_connect_mode_ban_stops_the_instance_of_the_session_token():
    mw, stopper, session_stopper, tunnels, stats = connect_middleware()
    request = tunnelled({"scrapoxy_session": "acct"}, tunnels)
    token = request.meta[TOKEN_KEY]

    retry = mw.process_response(request, response(429, proxyname=None))

    assert isinstance(retry, Request)
    assert session_stopper.calls == [token] and stopper.calls == []
    session_stopper.pending[0].callback(StoppedInstance(name="inst-7", alive=1))
    assert stats.values["scrapoxy/ban/instance_stopped"] == 1
    assert "inst-7" in mw.stopper.stopping  # a later ban by name is not stopped again


def test_connect_mode_ban_retry_goes_out_on_a_new_token_hence_a_new_tunnel():
    mw, _, session_stopper, tunnels, _ = connect_middleware()
    request = tunnelled({"scrapoxy_session": "acct"}, tunnels)
    banned = request.meta[TOKEN_KEY]
    retry = mw.process_response(request, response(429, proxyname=None))
    # Another response of the old tunnel: reported once, renewed once.
    mw.process_response(tunnelled({"scrapoxy_session": "acct", TOKEN_KEY: banned}),
                        response(429, proxyname=None))

    assert session_stopper.calls == [banned]
    assert tunnels.assign(retry.meta) != banned
    assert tunnels.assign({"scrapoxy_session": "acct"}) == retry.meta[TOKEN_KEY]


def test_connect_mode_stop_of_an_unknown_session_is_not_an_error():
    mw, _, session_stopper, tunnels, stats = connect_middleware()
    mw.process_response(tunnelled({}, tunnels), response(429, proxyname=None))
    session_stopper.pending[0].errback(CommanderHTTPError(status=404, code="not_found"))
    assert "scrapoxy/ban/stop_failed" not in stats.values


def test_ban_retry_waits_until_the_commander_answered_the_stop():
    mw, stopper, _ = middleware()
    retry = mw.process_response(Request("https://example.com/a"), response(429))
    held = defer.ensureDeferred(mw.process_request(retry))
    assert not held.called  # the master may still route to the banned instance
    stopper.pending[0].callback(1)
    assert held.called
    # A later request is not held.
    assert defer.ensureDeferred(mw.process_request(Request("https://example.com/b"))).called


def test_ban_retry_is_released_when_the_stop_fails_too():
    mw, stopper, _ = middleware()
    retry = mw.process_response(Request("https://example.com/a"), response(429))
    held = defer.ensureDeferred(mw.process_request(retry))
    stopper.pending[0].errback(CommanderHTTPError(status=500))
    assert held.called


def test_requests_cut_by_the_stop_of_a_banned_instance_are_sent_again():
    mw, _, stats = middleware()
    mw.process_response(Request("https://example.com/a"), response(429))  # stops inst-1
    cut = response(502, b'{"error": "upstream"}', **{"x-scrapoxy-error": "upstream"})
    retry = mw.process_response(Request("https://example.com/b"), cut)
    assert isinstance(retry, Request) and retry.url == "https://example.com/b"
    assert stats.values["scrapoxy/ban/cut_retry_count"] == 1
    # The same error from an instance nobody stopped is RetryMiddleware's business.
    other = response(502, proxyname="inst-2", **{"x-scrapoxy-error": "upstream"})
    assert mw.process_response(Request("https://example.com/c"), other) is other


def test_connect_mode_tunnels_dropped_by_the_stop_are_sent_again():
    mw, _, _, tunnels, stats = connect_middleware()
    banned = tunnelled({"scrapoxy_session": "acct"}, tunnels)
    mw.process_response(banned, response(429, proxyname=None))
    in_flight = tunnelled({"scrapoxy_session": "acct", TOKEN_KEY: banned.meta[TOKEN_KEY]})
    retry = mw.process_exception(in_flight, ConnectionResetError())
    assert isinstance(retry, Request)
    assert stats.values["scrapoxy/ban/cut_retry_count"] == 1
    assert mw.process_exception(tunnelled({}, tunnels), ConnectionResetError()) is None


def refused_connect(status: int, reason: bytes) -> TunnelError:
    # What Scrapy raises when the master answers the CONNECT itself.
    return TunnelError(f"Could not open CONNECT tunnel with proxy 127.0.0.1:8888 "
                       f"[{{'status': {status}, 'reason': {reason!r}}}]")


def test_connect_mode_failures_right_after_a_stop_are_sent_again_later_they_are_not():
    clock = FakeClock()
    mw, _, _, tunnels, stats = connect_middleware(clock=clock)
    mw.process_response(tunnelled({}, tunnels), response(429, proxyname=None))
    # Another lane's CONNECT was being opened through the instance just stopped.
    assert isinstance(mw.process_exception(tunnelled({}, tunnels),
                                           refused_connect(502, b"Bad Gateway")), Request)
    assert stats.values["scrapoxy/ban/cut_retry_count"] == 1
    # So was a tunnel of another token through it, which drops before its answer.
    dropped = ResponseNeverReceived([Failure(ConnectionLost())])
    assert isinstance(mw.process_exception(tunnelled({}, tunnels), dropped), Request)
    wrapped = RuntimeError("download failed")  # Scrapy 2.14+ wraps it: DownloadFailedError
    wrapped.__cause__ = dropped
    assert isinstance(mw.process_exception(tunnelled({}, tunnels), wrapped), Request)
    clock.now += 60
    assert mw.process_exception(tunnelled({}, tunnels),
                                refused_connect(502, b"Bad Gateway")) is None
    assert mw.process_exception(tunnelled({}, tunnels), dropped) is None


def test_a_response_cut_mid_stream_right_after_a_stop_is_sent_again():
    clock = FakeClock()
    mw, _, stats = middleware(clock=clock)
    mw.process_response(Request("https://example.com/a"), response(429))  # stops inst-1
    cut = ResponseFailed([Failure(ConnectionLost())])  # the master aborts what it streamed
    assert isinstance(mw.process_exception(Request("https://example.com/b"), cut), Request)
    assert stats.values["scrapoxy/ban/cut_retry_count"] == 1
    clock.now += 60
    assert mw.process_exception(Request("https://example.com/c"), cut) is None


def test_after_the_last_ban_retry_scrapys_retry_middleware_does_not_send_it_again():
    """With Scrapy's real chain: a page banned every time is fetched 1 + SCRAPOXY_BAN_RETRY_TIMES
    times, then reaches the spider; RetryMiddleware (429 is one of its codes) must not add
    RETRY_TIMES more attempts, each of which would stop one more instance."""
    from tests.scrapy.chain import Chain

    chain = Chain({"DOWNLOADER_MIDDLEWARES": {**DOWNLOADER_MIDDLEWARES},
                   "SCRAPOXY_BAN_RETRY_TIMES": 1, "RETRY_TIMES": 2})
    banned = lambda req: Response(req.url, status=429, request=req,  # noqa: E731
                                  headers={"x-cache-proxyname": f"inst-{len(chain.downloaded)}"})
    result = chain.fetch(Request("https://example.com/a"), banned)
    while isinstance(result, Request):
        result = chain.fetch(result, banned)
    assert result.status == 429
    assert len(chain.downloaded) == 2
    assert chain.crawler.stats.get_value("scrapoxy/ban/max_reached") == 1
    assert chain.crawler.stats.get_value("retry/count") is None
