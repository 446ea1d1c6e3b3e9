"""BanMiddleware: when the target bans an instance, stop it and retry the request elsewhere.

Where it sits: priority :data:`DEFAULT_PRIORITY` (740), between ProxyMiddleware (745) and
CookiesMiddleware (700). ``process_response`` runs in decreasing order, so it sees the response
after ProxyMiddleware restored the https URL (the retry is the https request, without the
session pin) and before RetryMiddleware (550), whose ``RETRY_TIMES`` a ban does not use up.

On a ban (decided by the policy, see :mod:`scrapoxy_scrapy.policy`):

- ``scrapoxy/ban/count`` and ``scrapoxy/ban/reason_count/<reason>`` count it;
- the instance named by the response's ``x-cache-proxyname`` is stopped through the commander
  (asynchronously, once per name; the manager replaces it with a fresh IP), and every session
  pinned to it is unpinned;
- the request is retried up to ``SCRAPOXY_BAN_RETRY_TIMES`` (per request:
  ``meta["scrapoxy_ban_retry_times"]``); after that the banned response goes on to the spider;
- when the commander says no instance is left alive, the pool gate closes: requests wait (with
  backoff polling) for the new instances instead of failing.

``meta["scrapoxy_dont_ban"] = True`` turns ban handling off for one request.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from scrapy.exceptions import NotConfigured
from scrapy.http import Request, Response
from twisted.internet import defer
from twisted.python.failure import Failure

from scrapoxy_scrapy.commander import CommanderHTTPError
from scrapoxy_scrapy.policy import Ban, load_ban_policy
from scrapoxy_scrapy.pool import PoolGate
from scrapoxy_scrapy.sessions import SessionPins
from scrapoxy_scrapy.state import crawl_state

if TYPE_CHECKING:
    from typing_extensions import Self

    from scrapy.crawler import Crawler

logger = logging.getLogger(__name__)

DEFAULT_PRIORITY = 740
PROXYNAME_HEADER = b"x-cache-proxyname"
BAN_TIMES = "scrapoxy_ban_times"


def get_ban_retry_request(request: Request, *, max_times: int) -> Request | None:
    """A copy of ``request`` to send again after a ban, or None when it was retried enough."""
    times = request.meta.get(BAN_TIMES, 0) + 1
    limit = request.meta.get("scrapoxy_ban_retry_times", max_times)
    if times > limit:
        return None
    retry = request.copy()
    retry.meta[BAN_TIMES] = times
    retry.dont_filter = True
    return retry


class BanMiddleware:
    def __init__(self, *, policy: Any, retry_times: int,
                 stop_instance: Callable[[str], defer.Deferred[int]] | None,
                 sessions: SessionPins | None = None, gate: PoolGate | None = None,
                 stats: Any = None) -> None:
        self.policy = policy
        self.retry_times = retry_times
        self.stop_instance = stop_instance
        self.sessions = sessions
        self.gate = gate
        self.stats = stats
        # Names already reported: each banned instance is stopped once, not once per response.
        self.stopping: set[str] = set()

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        state = crawl_state(crawler)
        settings = state.settings
        if not (settings.enabled and settings.master and settings.ban_enabled):
            raise NotConfigured("Scrapoxy ban handling is off")
        stop = None
        if state.commander is not None and settings.ban_stop_instance:
            stop = state.commander.stop_instance
        return cls(policy=load_ban_policy(settings.ban_policy, crawler),
                   retry_times=settings.ban_retry_times, stop_instance=stop,
                   sessions=state.sessions, gate=state.gate, stats=crawler.stats)

    def process_response(self, request: Request, response: Response,
                         spider: Any = None) -> Response | Request:
        if request.meta.get("dont_scrapoxy") or request.meta.get("scrapoxy_dont_ban"):
            return response
        ban = self.policy.response_ban(request, response)
        if ban is None:
            return response
        proxyname_bytes = response.headers.get(PROXYNAME_HEADER)
        proxyname = proxyname_bytes.decode("latin-1") if proxyname_bytes else None
        return self._banned(request, ban, proxyname) or response

    def process_exception(self, request: Request, exception: Exception,
                          spider: Any = None) -> Request | None:
        if request.meta.get("dont_scrapoxy") or request.meta.get("scrapoxy_dont_ban"):
            return None
        ban = self.policy.exception_ban(request, exception)
        if ban is None:
            return None
        return self._banned(request, ban, None)

    def _banned(self, request: Request, ban: Ban, proxyname: str | None) -> Request | None:
        self._inc("scrapoxy/ban/count")
        self._inc(f"scrapoxy/ban/reason_count/{ban.reason}")
        logger.info("scrapoxy: ban (%s) on %s via %s", ban.reason, request.url,
                    proxyname or "an unknown instance")
        if proxyname is not None:
            if self.sessions is not None:
                self.sessions.forget_instance(proxyname)
            self._stop(proxyname)
        retry = get_ban_retry_request(request, max_times=self.retry_times)
        if retry is None:
            self._inc("scrapoxy/ban/max_reached")
            logger.warning("scrapoxy: giving up on %s after %d bans", request.url,
                           request.meta.get(BAN_TIMES, 0) + 1)
            return None
        self._inc("scrapoxy/ban/retry_count")
        return retry

    def _stop(self, proxyname: str) -> None:
        if self.stop_instance is None or proxyname in self.stopping:
            return
        self.stopping.add(proxyname)
        self._inc("scrapoxy/ban/stop_requested")

        def stopped(alive: int) -> None:
            self._inc("scrapoxy/ban/instance_stopped")
            logger.info("scrapoxy: stopped banned instance %s (%d alive left)", proxyname, alive)
            if alive == 0 and self.gate is not None:
                self.gate.close("all_banned")

        def failed(failure: Failure) -> None:
            error = failure.value
            if isinstance(error, CommanderHTTPError) and error.status == 404:
                return  # already gone (replaced by the manager): nothing to stop
            # Let a later ban of the same instance try again.
            self.stopping.discard(proxyname)
            self._inc("scrapoxy/ban/stop_failed")
            logger.warning("scrapoxy: could not stop banned instance %s: %s", proxyname, error)

        self.stop_instance(proxyname).addCallbacks(stopped, failed)

    def _inc(self, key: str) -> None:
        if self.stats is not None:
            self.stats.inc_value(key)
