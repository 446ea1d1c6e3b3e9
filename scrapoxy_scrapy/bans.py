"""BanMiddleware: when the target bans an instance, stop it and retry the request elsewhere.

Where it sits: priority :data:`DEFAULT_PRIORITY` (740), between ProxyMiddleware (745) and
CookiesMiddleware (700). ``process_response`` runs in decreasing order, so it sees the response
after ProxyMiddleware restored the https URL (the retry is the https request, without the
session pin) and before RetryMiddleware (550), whose ``RETRY_TIMES`` a ban does not use up.

On a ban (decided by the policy, see :mod:`scrapoxy_scrapy.policy`):

- ``scrapoxy/ban/count`` and ``scrapoxy/ban/reason_count/<reason>`` count it;
- the banned instance is stopped through the commander (asynchronously, once per instance;
  the manager replaces it with a fresh IP). It is named by the response's
  ``x-cache-proxyname``, or, for https in CONNECT mode where no such header comes back, by the
  session token its tunnel carried (``meta["scrapoxy_session_token"]``; the commander stops
  "the instance of session TOKEN"). Every session pinned to it is unpinned, and in CONNECT mode
  the session (or lane) gets a new token, so its next requests open a new tunnel;
- the request is retried up to ``SCRAPOXY_BAN_RETRY_TIMES`` (per request:
  ``meta["scrapoxy_ban_retry_times"]``); after that the banned response (or exception) goes
  on to the spider, marked ``dont_retry`` so that RetryMiddleware does not send it again.
  The retry waits (without blocking) until the commander answered the stop, so that the master
  no longer routes to the banned instance when it goes out;
- when the commander says no instance is left alive, the pool gate closes: requests wait (with
  backoff polling) for the new instances instead of failing.

Stopping an instance cuts the requests still in flight through it: the master answers them
502 ``upstream``, or cuts a response it was already streaming; in CONNECT mode the tunnel
drops, or the master refuses a CONNECT it was opening through it with 502 (Scrapy raises
``TunnelError``). Those are not the target's doing, so they are retried like a ban
(``scrapoxy/ban/cut_retry_count``, same limit) instead of using up RetryMiddleware's
``RETRY_TIMES``: with a few concurrent requests per instance, a burst of bans would otherwise
lose pages. A 502 naming an instance this crawl stopped, or a failed tunnel whose token it
stopped, is cut for sure; a dropped connection or refused CONNECT names no instance, so it
counts as cut when it comes within :data:`CUT_WINDOW_S` of a stop this crawl asked for.

``meta["scrapoxy_dont_ban"] = True`` turns ban handling off for one request.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from scrapy.exceptions import NotConfigured
from scrapy.http import Request, Response
from scrapy.utils.defer import maybe_deferred_to_future
from twisted.internet import defer
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.web.client import ResponseFailed, ResponseNeverReceived

from scrapoxy_scrapy.commander import StoppedInstance
from scrapoxy_scrapy.policy import MASTER_ERROR_HEADER, Ban, load_ban_policy
from scrapoxy_scrapy.pool import PoolGate
from scrapoxy_scrapy.sessions import SessionPins
from scrapoxy_scrapy.state import crawl_state
from scrapoxy_scrapy.stops import InstanceStopper
from scrapoxy_scrapy.tunnels import TOKEN_KEY, TunnelTokens, caused_by, refused_tunnel_status

if TYPE_CHECKING:
    from typing_extensions import Self

    from scrapy.crawler import Crawler

logger = logging.getLogger(__name__)

DEFAULT_PRIORITY = 740
PROXYNAME_HEADER = b"x-cache-proxyname"
BAN_TIMES = "scrapoxy_ban_times"
UPSTREAM = b"upstream"
# A connection that drops (or a CONNECT refused with 502) this soon after a stop was asked is
# taken as cut by that stop: the failure names no instance.
CUT_WINDOW_S = 5.0
_DROPS = (ResponseNeverReceived, ResponseFailed, ConnectionLost, ConnectionDone)
# meta of a ban retry: the stop it waits for (see InstanceStopper.wait)
_AFTER_STOP = "_scrapoxy_after_stop"


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
                 stop_session: Callable[[str], defer.Deferred[StoppedInstance]] | None = None,
                 sessions: SessionPins | None = None, tunnels: TunnelTokens | None = None,
                 gate: PoolGate | None = None, stats: Any = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self.retry_times = retry_times
        self.sessions = sessions
        self.tunnels = tunnels
        self.gate = gate
        self.stats = stats
        self.stopper = InstanceStopper(stop_instance=stop_instance, stop_session=stop_session,
                                       sessions=sessions, gate=gate, stats=stats, clock=clock)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        state = crawl_state(crawler)
        settings = state.settings
        if not (settings.enabled and settings.master and settings.ban_enabled):
            raise NotConfigured("Scrapoxy ban handling is off")
        stop = stop_session = None
        if state.commander is not None and settings.ban_stop_instance:
            stop = state.commander.stop_instance
            stop_session = state.commander.stop_session
        return cls(policy=load_ban_policy(settings.ban_policy, crawler),
                   retry_times=settings.ban_retry_times, stop_instance=stop,
                   stop_session=stop_session, sessions=state.sessions, tunnels=state.tunnels,
                   gate=state.gate, stats=crawler.stats)

    async def process_request(self, request: Request, spider: Any = None) -> None:
        stop = request.meta.pop(_AFTER_STOP, None)
        waiting = self.stopper.wait(stop) if stop is not None else None
        if waiting is not None:
            self._inc("scrapoxy/ban/retry_held")
            await maybe_deferred_to_future(waiting)
        return None

    def process_response(self, request: Request, response: Response,
                         spider: Any = None) -> Response | Request:
        if request.meta.get("dont_scrapoxy") or request.meta.get("scrapoxy_dont_ban"):
            return response
        proxyname_bytes = response.headers.get(PROXYNAME_HEADER)
        proxyname = proxyname_bytes.decode("latin-1") if proxyname_bytes else None
        ban = self.policy.response_ban(request, response)
        if ban is None:
            if proxyname in self.stopper.stopping and \
                    response.headers.get(MASTER_ERROR_HEADER, b"").strip() == UPSTREAM:
                return self._cut(request) or response
            return response
        return self._banned(request, ban, proxyname) or response

    def process_exception(self, request: Request, exception: Exception,
                          spider: Any = None) -> Request | None:
        if request.meta.get("dont_scrapoxy") or request.meta.get("scrapoxy_dont_ban"):
            return None
        ban = self.policy.exception_ban(request, exception)
        if ban is None:
            token = request.meta.get(TOKEN_KEY)
            if token in self.stopper.stopping_sessions:
                return self._cut(request)  # its tunnel went through an instance we stopped
            if self.stopper.stopped_within(CUT_WINDOW_S) and (
                    caused_by(exception, _DROPS) is not None
                    or refused_tunnel_status(exception) == 502):
                # Another token's tunnel through the same instance, or (any mode) a response
                # the master was streaming from it: cut, with no instance named.
                return self._cut(request)
            return None
        return self._banned(request, ban, None)

    def _cut(self, request: Request) -> Request | None:
        """A request cut by the stop of a banned instance: send it again elsewhere."""
        retry = get_ban_retry_request(request, max_times=self.retry_times)
        if retry is not None:
            self._inc("scrapoxy/ban/cut_retry_count")
        return retry

    def _banned(self, request: Request, ban: Ban, proxyname: str | None) -> Request | None:
        self._inc("scrapoxy/ban/count")
        self._inc(f"scrapoxy/ban/reason_count/{ban.reason}")
        token = request.meta.get(TOKEN_KEY)
        logger.info("scrapoxy: ban (%s) on %s via %s", ban.reason, request.url,
                    proxyname or (f"the instance of session {token}" if token
                                  else "an unknown instance"))
        stop_key = None
        if token is not None and self.tunnels is not None:
            # Its session (or lane) moves to a new token, hence a new instance: in CONNECT
            # mode a session's http requests ride on the token too.
            self.tunnels.renew(token)
        if proxyname is not None:
            if self.sessions is not None:
                self.sessions.forget_instance(proxyname)
            stop_key = self.stopper.stop(proxyname)
        elif token is not None:
            stop_key = self.stopper.stop_session(token)
        retry = get_ban_retry_request(request, max_times=self.retry_times)
        if retry is None:
            self._inc("scrapoxy/ban/max_reached")
            logger.warning("scrapoxy: giving up on %s after %d bans", request.url,
                           request.meta.get(BAN_TIMES, 0) + 1)
            # The banned answer goes to the spider as it is: RetryMiddleware (a 429 or 503 is
            # in its RETRY_HTTP_CODES) would send it again, and each ban would stop another
            # instance past SCRAPOXY_BAN_RETRY_TIMES.
            request.meta["dont_retry"] = True
            return None
        self._inc("scrapoxy/ban/retry_count")
        if stop_key is not None and self.stopper.in_flight(stop_key):
            retry.meta[_AFTER_STOP] = stop_key
        return retry

    def _inc(self, key: str) -> None:
        if self.stats is not None:
            self.stats.inc_value(key)
