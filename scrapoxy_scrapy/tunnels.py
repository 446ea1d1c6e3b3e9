"""CONNECT mode: which session token each https request carries in its proxy username.

In CONNECT mode (``SCRAPOXY_HTTPS_MODE = "connect"``) Scrapy tunnels https through the master
and keeps the tunnels open for later requests: the instance is chosen once per tunnel, the
master sees no header inside it, and the ``x-cache-proxyname`` of the CONNECT reply never
reaches the middlewares. A token in the proxy username (``USER;session=TOKEN``) is then the
only handle on the instance:

- the master sends every tunnel of one token through one instance, and the commander can stop
  "the instance of session TOKEN" (``POST /api/instances/stop {"session": TOKEN}``);
- Scrapy pools tunnels per proxy credentials, so a new token means a new tunnel, through an
  instance chosen afresh.

So every https request gets a token: a request with ``meta["scrapoxy_session"]`` the token of
its session; any other request the token of one of ``lanes`` lanes, taken in turn (traffic
spreads over about ``lanes`` instances, as it spread over Scrapy's few pooled tunnels before).
A lane's token is renewed every ``lane_ttl_s`` seconds so that a pool that grew is used. On a
ban, :meth:`TunnelTokens.renew` gives the session (or lane) a new token: its retry and its later
requests open a new tunnel instead of reusing the one through the banned instance.

With ``lanes = 0`` requests without a session carry no token (Scrapy's plain pooled tunnels);
a ban on them can neither stop the instance nor be sure to avoid it.
"""
from __future__ import annotations

import itertools
import re
import secrets
import time
from collections.abc import Callable, Hashable, MutableMapping
from typing import Any

from scrapy.core.downloader.handlers.http11 import TunnelError

from scrapoxy_scrapy.sessions import SESSION_KEY, session_token

TOKEN_KEY = "scrapoxy_session_token"  # meta: the token the request's tunnel carried
LANE_KEY = "_scrapoxy_lane"  # meta: a request keeps its lane across retries and redirects


_TUNNEL_STATUS = re.compile(r"'status': (\d{3})")


def caused_by(exception: BaseException, types: type[BaseException] | tuple[type[BaseException], ...]
              ) -> BaseException | None:
    """``exception`` or the first of its causes that is one of ``types``: Scrapy 2.14+ wraps
    Twisted's download errors (``DownloadFailedError`` from ``ResponseFailed``...)."""
    seen: BaseException | None = exception
    for _ in range(8):  # a cause chain is short; never loop on a cycle
        if seen is None:
            return None
        if isinstance(seen, types):
            return seen
        seen = seen.__cause__
    return None


def refused_tunnel_status(exception: BaseException) -> int | None:
    """The status the master answered a CONNECT with, when it refused to open the tunnel
    (Scrapy raises ``TunnelError`` and only keeps the status in its message): 503 means
    ``no_instance``, 502 ``upstream``, 504 ``timeout``, as in the master's error table."""
    refusal = caused_by(exception, TunnelError)
    if refusal is None:
        return None
    match = _TUNNEL_STATUS.search(str(refusal))
    return int(match.group(1)) if match else None


class TunnelTokens:
    """Session and lane tokens of one crawl, with renewal after a ban."""

    def __init__(self, *, lanes: int, lane_ttl_s: float, salt: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.lanes = lanes
        self.lane_ttl_s = lane_ttl_s
        # Per crawl: two crawls using the same session key must not share (or stop) an instance.
        self.salt = secrets.token_hex(8) if salt is None else salt
        self.clock = clock
        self._turn = itertools.count()
        self._generation: dict[Hashable, int] = {}
        self._key_of: dict[str, Hashable] = {}  # token -> (key, generation), for renew()

    def assign(self, meta: MutableMapping[str, Any]) -> str | None:
        """The token for the request of ``meta`` (recorded in ``meta[TOKEN_KEY]``), or None."""
        session = meta.get(SESSION_KEY)
        if session is not None:
            key: Hashable = ("session", session)
        elif self.lanes > 0:
            lane = meta.get(LANE_KEY)
            if not isinstance(lane, int):
                lane = next(self._turn) % self.lanes
                meta[LANE_KEY] = lane
            key = ("lane", lane, self._lane_epoch(lane))
        else:
            meta.pop(TOKEN_KEY, None)
            return None
        generation = self._generation.get(key, 0)
        token = session_token((key, generation), salt=self.salt)
        self._key_of[token] = (key, generation)
        meta[TOKEN_KEY] = token
        return token

    def renew(self, token: str) -> bool:
        """After a ban on ``token``'s instance: its session or lane gets a new token (once, even
        if several responses of the old token report the ban). True if it was renewed."""
        known = self._key_of.get(token)
        if known is None:
            return False
        key, generation = known
        if self._generation.get(key, 0) != generation:
            return False
        self._generation[key] = generation + 1
        return True

    def _lane_epoch(self, lane: int) -> int:
        if self.lane_ttl_s <= 0:
            return 0
        # Staggered, so that the lanes do not all open new tunnels at the same moment.
        offset = self.lane_ttl_s * lane / max(self.lanes, 1)
        return int((self.clock() + offset) // self.lane_ttl_s)
