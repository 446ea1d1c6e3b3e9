"""Which instance serves a request: pinned by name, else round-robin per target domain.

O(1) per request. The choice is made per request, never per client connection, so that a
scraper holding a few keep-alive connections still rotates over the whole pool.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

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


class InstanceWait:
    """A request held while the pool wakes (``wait_for_instance``): ``on_chosen(endpoint)``
    once an instance is routable, or ``on_none()`` when ``seconds`` pass first. The client
    keeps being read meanwhile, so one that hangs up is noticed and ``cancel()`` drops this.
    """

    def __init__(self, *, reactor: Any, pool: InstancePool, chooser: InstanceChooser,
                 seconds: float, domain: str, pinned: str | None,
                 on_chosen: Callable[[Endpoint], None], on_none: Callable[[], None]) -> None:
        self._chooser = chooser
        self._domain = domain
        self._pinned = pinned
        self._on_chosen = on_chosen
        self._on_none = on_none
        self._alive = pool.wait_alive()
        self._timer = reactor.callLater(seconds, self._expired)
        self._alive.addCallbacks(self._woken, lambda failure: None)

    def _woken(self, _: object) -> None:
        self._alive = None
        self._stop_timer()
        endpoint = self._chooser.choose(domain=self._domain, pinned=self._pinned)
        if endpoint is None:
            self._on_none()
        else:
            self._on_chosen(endpoint)

    def _expired(self) -> None:
        self._timer = None
        self.cancel()
        self._on_none()

    def cancel(self) -> None:
        self._stop_timer()
        alive, self._alive = self._alive, None
        if alive is not None:
            alive.cancel()

    def _stop_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()


def choose_or_wait(*, reactor: Any, pool: InstancePool, chooser: InstanceChooser,
                   seconds: float, domain: str, pinned: str | None,
                   on_chosen: Callable[[Endpoint], None],
                   on_none: Callable[[], None]) -> InstanceWait | None:
    """Call ``on_chosen`` with an instance now if one is routable (returns None); else wait
    up to ``seconds`` for one (returns the wait, to cancel), or call ``on_none`` at once."""
    endpoint = chooser.choose(domain=domain, pinned=pinned)
    if endpoint is not None:
        on_chosen(endpoint)
        return None
    if seconds <= 0:
        on_none()
        return None
    return InstanceWait(reactor=reactor, pool=pool, chooser=chooser, seconds=seconds,
                        domain=domain, pinned=pinned, on_chosen=on_chosen, on_none=on_none)
