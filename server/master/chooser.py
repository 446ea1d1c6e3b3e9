"""Which instance serves a request: pinned by name, else round-robin per target domain.

O(1) per request. The choice is made per request, never per client connection, so that a
scraper holding a few keep-alive connections still rotates over the whole pool.
"""
from __future__ import annotations

from collections import OrderedDict

from ..models import Endpoint
from ..pool import InstancePool

_MAX_DOMAINS = 50_000


class InstanceChooser:
    def __init__(self, pool: InstancePool) -> None:
        self._pool = pool
        self._next_by_domain: dict[str, int] = {}
        # New domains start where the last one did, so one-off domains spread too.
        self._fresh = 0

    def choose(self, *, domain: str, pinned: str | None = None) -> Endpoint | None:
        if pinned is not None:
            endpoint = self._pool.get(pinned)
            if endpoint is not None:
                return endpoint
        alive = self._pool.alive()
        if not alive:
            return None
        counters = self._next_by_domain
        index = counters.get(domain)
        if index is None:
            if len(counters) >= _MAX_DOMAINS:
                counters.clear()
            index = self._fresh
            self._fresh += 1
        counters[domain] = index + 1
        return alive[index % len(alive)]


class SessionPins:
    """Session token (``USER;session=TOKEN`` in the proxy credentials) -> instance name.

    A scraper may use a token per item, so the map is bounded: the least recently used
    tokens are forgotten first, and a forgotten or stale token simply gets a new instance.
    """

    def __init__(self, *, limit: int = 100_000) -> None:
        self._limit = limit
        self._names: OrderedDict[str, str] = OrderedDict()

    def get(self, token: str) -> str | None:
        name = self._names.get(token)
        if name is not None:
            self._names.move_to_end(token)
        return name

    def pin(self, token: str, name: str) -> None:
        self._names[token] = name
        self._names.move_to_end(token)
        if len(self._names) > self._limit:
            self._names.popitem(last=False)

    def __len__(self) -> int:
        return len(self._names)
