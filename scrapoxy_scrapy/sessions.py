"""Sessions: opt-in stickiness of a series of requests to one instance.

A session is any hashable value in ``request.meta["scrapoxy_session"]`` (an account, a cart, a
search). :class:`SessionPins` remembers, per session, the instance that served its last
response; ProxyMiddleware pins the session's next requests to it (``x-cache-proxyname``, or in
CONNECT mode a session token in the proxy username, see :mod:`scrapoxy_scrapy.tunnels`).

Fallback when the instance is gone: the master serves a pinned request through another alive
instance and names it in the response, and the session follows that one from then on. When the
instance is banned, BanMiddleware drops every pin to it (:meth:`SessionPins.forget_instance`)
so the retried request is not sent back to the banned IP; in CONNECT mode the session gets a
new token instead, hence a new tunnel through another instance.

:class:`SessionSpiderMiddleware` carries the session of a response to the requests its callback
yields, so a spider sets the session once on the first request of a series.
"""
from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Hashable, Iterable, Iterator
from typing import Any

from scrapy.http import Request, Response

SESSION_KEY = "scrapoxy_session"


class SessionPins:
    """Session key -> name of the instance that served the session's last response."""

    def __init__(self) -> None:
        # Grows with the number of sessions a spider opens, expected to be small (accounts...).
        self._pins: dict[Hashable, str] = {}

    def get(self, session: Hashable) -> str | None:
        return self._pins.get(session)

    def pin(self, session: Hashable, proxyname: str) -> None:
        self._pins[session] = proxyname

    def forget_instance(self, proxyname: str) -> int:
        """Unpin every session pinned to ``proxyname``; returns how many there were."""
        sessions = [key for key, name in self._pins.items() if name == proxyname]
        for key in sessions:
            del self._pins[key]
        return len(sessions)

    def __len__(self) -> int:
        return len(self._pins)


def session_token(session: Hashable, *, salt: str = "") -> str:
    """A token for ``USER;session=TOKEN``: stable for a key (and salt), and made only of hex
    digits, so neither ``:`` nor ``;session=`` inside the key can break the proxy username.
    CONNECT mode salts it per crawl (:class:`scrapoxy_scrapy.tunnels.TunnelTokens`)."""
    material = repr((salt, session)) if salt else repr(session)
    return hashlib.sha256(material.encode("utf-8", "backslashreplace")).hexdigest()[:24]


def with_session(response: Response, result: Any) -> Any:
    """``result`` (an item or a request) with the session of ``response`` carried over."""
    if not isinstance(result, Request):
        return result
    session = response.meta.get(SESSION_KEY) if response.request is not None else None
    if session is not None and SESSION_KEY not in result.meta:
        # An explicit meta["scrapoxy_session"] (None included) on the new request wins.
        result.meta[SESSION_KEY] = session
    return result


class SessionSpiderMiddleware:
    """Spider middleware: follow-up requests inherit the session of the response they came from.

    Enable with ``SPIDER_MIDDLEWARES = {"scrapoxy_scrapy.SessionSpiderMiddleware": 800}``.
    A request that sets ``meta["scrapoxy_session"]`` itself (even to None) keeps its own value.
    """

    def process_spider_output(self, response: Response, result: Iterable[Any],
                              spider: Any = None) -> Iterator[Any]:
        for element in result:
            yield with_session(response, element)

    async def process_spider_output_async(self, response: Response, result: AsyncIterator[Any],
                                          spider: Any = None) -> AsyncIterator[Any]:
        async for element in result:
            yield with_session(response, element)
