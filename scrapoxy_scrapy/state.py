"""What the Scrapoxy middlewares of one crawl share: settings, session pins, CONNECT-mode
tokens, the pool gate and the commander client.

Scrapy builds each middleware on its own; :func:`crawl_state` builds the shared part once per
crawler (from its settings) and hands the same object to all of them, so a ban seen by
BanMiddleware unpins sessions (or renews their CONNECT tokens) in ProxyMiddleware and closes the
gate ScaleMiddleware waits on.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

from scrapoxy_scrapy.pool import PoolGate
from scrapoxy_scrapy.reactor_commander import ReactorCommanderClient
from scrapoxy_scrapy.sessions import SessionPins
from scrapoxy_scrapy.settings import ScrapoxySettings, read_settings
from scrapoxy_scrapy.tunnels import TunnelTokens


@dataclass
class CrawlState:
    settings: ScrapoxySettings
    sessions: SessionPins
    gate: PoolGate
    commander: ReactorCommanderClient | None
    tunnels: TunnelTokens
    # Instances this crawl asked the commander to stop: asked once each, and never re-pinned.
    stopped_instances: set[str] = field(default_factory=set)


_states: weakref.WeakKeyDictionary[Any, CrawlState] = weakref.WeakKeyDictionary()


def build_state(settings: ScrapoxySettings, *, clock: Any = None, stats: Any = None,
                commander: ReactorCommanderClient | None = None) -> CrawlState:
    if commander is None and settings.api:
        commander = ReactorCommanderClient(settings.api, username=settings.username,
                                           password=settings.password,
                                           timeout=settings.api_timeout_s)
    alive_count = commander.alive_count if commander is not None else None
    gate = PoolGate(clock=clock, alive_count=alive_count, backoff_base_s=settings.backoff_base_s,
                    backoff_max_s=settings.backoff_max_s, wait_timeout_s=settings.wait_timeout_s,
                    stats=stats)
    tunnels = TunnelTokens(lanes=settings.connect_lanes, lane_ttl_s=settings.connect_lane_ttl_s)
    return CrawlState(settings=settings, sessions=SessionPins(), gate=gate, commander=commander,
                      tunnels=tunnels)


def crawl_state(crawler: Any) -> CrawlState:
    """The state shared by the Scrapoxy middlewares of ``crawler`` (built on first call)."""
    state = _states.get(crawler)
    if state is None:
        state = build_state(read_settings(crawler.settings), stats=crawler.stats)
        _states[crawler] = state
    return state
