"""CONNECT-mode tokens: one per session, lanes for the rest, a new one after a ban."""
from __future__ import annotations

from scrapoxy_scrapy.tunnels import LANE_KEY, TOKEN_KEY, TunnelTokens


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def tokens(**options) -> TunnelTokens:
    return TunnelTokens(**{"lanes": 2, "lane_ttl_s": 60.0, "salt": "s", **options})


def test_a_session_keeps_its_token_and_records_it_in_meta():
    tunnels = tokens()
    meta: dict = {"scrapoxy_session": "acct"}
    token = tunnels.assign(meta)
    assert meta[TOKEN_KEY] == token
    assert tunnels.assign({"scrapoxy_session": "acct"}) == token
    assert tunnels.assign({"scrapoxy_session": "other"}) != token


def test_a_ban_renews_the_session_token_once_however_many_responses_report_it():
    tunnels = tokens()
    banned = tunnels.assign({"scrapoxy_session": "acct"})
    assert tunnels.renew(banned) is True
    assert tunnels.renew(banned) is False  # a second response of the same tunnel
    renewed = tunnels.assign({"scrapoxy_session": "acct"})
    assert renewed != banned
    assert tunnels.assign({"scrapoxy_session": "acct"}) == renewed


def test_a_retried_request_keeps_its_lane_and_gets_the_lanes_new_token():
    tunnels = tokens()
    first: dict = {}
    banned = tunnels.assign(first)
    tunnels.assign({})  # the other lane
    tunnels.renew(banned)
    retry = dict(first)  # request.copy() carries meta, the lane included
    assert tunnels.assign(retry) not in (None, banned)
    assert retry[LANE_KEY] == first[LANE_KEY]


def test_lane_tokens_change_after_their_ttl_so_a_grown_pool_gets_used():
    clock = FakeClock()
    tunnels = tokens(lanes=1, clock=clock)
    before = tunnels.assign({})
    clock.now += 61
    assert tunnels.assign({}) != before


def test_two_crawls_never_share_a_token_for_the_same_session_key():
    one, two = TunnelTokens(lanes=0, lane_ttl_s=0), TunnelTokens(lanes=0, lane_ttl_s=0)
    assert one.assign({"scrapoxy_session": "acct"}) != two.assign({"scrapoxy_session": "acct"})


def test_no_lanes_means_no_token_for_requests_without_session():
    tunnels = tokens(lanes=0)
    meta = {TOKEN_KEY: "stale"}
    assert tunnels.assign(meta) is None
    assert TOKEN_KEY not in meta
