"""ScaleMiddleware: wake the pool when the spider opens, hold requests while it has no alive
instance, put it to sleep when the spider closes, and retry the master's ``no_instance``.

Where it sits: priority :data:`DEFAULT_PRIORITY` (730). Its ``process_request`` (an ``async``
method) waits on the shared :class:`~scrapoxy_scrapy.pool.PoolGate` just before
ProxyMiddleware (745) routes the request; waiting is a Deferred, never ``time.sleep``, so the
rest of the crawl (and Scrapy's engine) keeps running. Its ``process_response`` runs before
RetryMiddleware (550): a 503 ``x-scrapoxy-error: no_instance`` closes the gate and is retried
up to ``SCRAPOXY_NO_INSTANCE_RETRY_TIMES`` (per request: ``meta["scrapoxy_no_instance_retry_times"]``)
without using up ``RETRY_TIMES``; after that it goes on as an ordinary 503. In CONNECT mode the
same answer to a CONNECT reaches Scrapy as a ``TunnelError`` (status 503), handled the same way.

Commander calls (wake, sleep, alive count) need ``SCRAPOXY_API``; without it only the
``no_instance`` retry with backoff is active.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from scrapy import signals
from scrapy.exceptions import NotConfigured
from scrapy.http import Request, Response
from scrapy.utils.defer import maybe_deferred_to_future
from twisted.python.failure import Failure

from scrapoxy_scrapy.policy import MASTER_ERROR_HEADER
from scrapoxy_scrapy.pool import PoolGate
from scrapoxy_scrapy.reactor_commander import ReactorCommanderClient
from scrapoxy_scrapy.state import crawl_state
from scrapoxy_scrapy.tunnels import refused_tunnel_status

if TYPE_CHECKING:
    from typing_extensions import Self

    from scrapy.crawler import Crawler

logger = logging.getLogger(__name__)

DEFAULT_PRIORITY = 730
NO_INSTANCE = b"no_instance"
NO_INSTANCE_TIMES = "scrapoxy_no_instance_times"


def get_no_instance_retry_request(request: Request, *, max_times: int) -> Request | None:
    """A copy of ``request`` to send once the pool has an instance, or None if retried enough."""
    times = request.meta.get(NO_INSTANCE_TIMES, 0) + 1
    limit = request.meta.get("scrapoxy_no_instance_retry_times", max_times)
    if times > limit:
        return None
    retry = request.copy()
    retry.meta[NO_INSTANCE_TIMES] = times
    retry.dont_filter = True
    return retry


class ScaleMiddleware:
    def __init__(self, *, gate: PoolGate, commander: ReactorCommanderClient | None,
                 scale_on_open: bool = True, scale_on_close: bool = True,
                 wait_on_open: bool = True, no_instance_retry_times: int = 20,
                 stats: Any = None) -> None:
        self.gate = gate
        self.commander = commander
        self.scale_on_open = scale_on_open
        self.scale_on_close = scale_on_close
        self.wait_on_open = wait_on_open
        self.no_instance_retry_times = no_instance_retry_times
        self.stats = stats

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        state = crawl_state(crawler)
        settings = state.settings
        if not (settings.enabled and settings.master):
            raise NotConfigured("Scrapoxy is off (SCRAPOXY_MASTER unset or SCRAPOXY_ENABLED off)")
        middleware = cls(gate=state.gate, commander=state.commander,
                         scale_on_open=settings.scale_on_open,
                         scale_on_close=settings.scale_on_close,
                         wait_on_open=settings.wait_enabled,
                         no_instance_retry_times=settings.no_instance_retry_times,
                         stats=crawler.stats)
        crawler.signals.connect(middleware.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(middleware.spider_closed, signal=signals.spider_closed)
        return middleware

    # --- signals (the engine awaits them: spider close waits for sleep()) -------------------

    async def spider_opened(self, spider: Any = None) -> None:
        if self.commander is None:
            return
        if self.wait_on_open:
            self.gate.close("spider_opened")
        if not self.scale_on_open:
            return
        d = self.commander.wake()
        d.addCallbacks(lambda scaling: logger.info("scrapoxy: pool woken up (%s)", scaling),
                       self._log_failure("wake the pool up"))
        await maybe_deferred_to_future(d)

    async def spider_closed(self, spider: Any = None, reason: str | None = None) -> None:
        self.gate.stop()
        if self.commander is None:
            return
        commander = self.commander
        if self.scale_on_close:
            d = commander.sleep()
            d.addCallbacks(lambda scaling: logger.info("scrapoxy: pool put to sleep (%s)", scaling),
                           self._log_failure("put the pool to sleep"))
            await maybe_deferred_to_future(d)
        await maybe_deferred_to_future(commander.close())

    @staticmethod
    def _log_failure(what: str) -> Any:
        def log(failure: Failure) -> None:
            logger.warning("scrapoxy: could not %s through the commander: %s", what,
                           failure.value)
        return log

    # --- downloader middleware hooks ---------------------------------------------------------

    async def process_request(self, request: Request, spider: Any = None) -> None:
        if request.meta.get("dont_scrapoxy") or self.gate.ready:
            return None
        self._inc("scrapoxy/pool/held_request_count")
        await maybe_deferred_to_future(self.gate.wait())
        return None

    def process_response(self, request: Request, response: Response,
                         spider: Any = None) -> Response | Request:
        if request.meta.get("dont_scrapoxy"):
            return response
        error = response.headers.get(MASTER_ERROR_HEADER)
        if error is None:
            self.gate.served()
            return response
        if error.strip().lower() != NO_INSTANCE:
            return response
        return self._no_instance(request) or response

    def process_exception(self, request: Request, exception: Exception,
                          spider: Any = None) -> Request | None:
        if request.meta.get("dont_scrapoxy") or refused_tunnel_status(exception) != 503:
            return None
        return self._no_instance(request)

    def _no_instance(self, request: Request) -> Request | None:
        self._inc("scrapoxy/no_instance/count")
        self.gate.close("no_instance")
        retry = get_no_instance_retry_request(request, max_times=self.no_instance_retry_times)
        if retry is None:
            self._inc("scrapoxy/no_instance/max_reached")
            logger.error("scrapoxy: no instance for %s after %d tries; giving up", request.url,
                         request.meta.get(NO_INSTANCE_TIMES, 0) + 1)
            return None
        self._inc("scrapoxy/no_instance/retry_count")
        return retry

    def _inc(self, key: str) -> None:
        if self.stats is not None:
            self.stats.inc_value(key)
