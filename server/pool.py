"""The master's view of the instances it may route through.

The manager publishes the routable instances here after each health check; the master reads
them per request. Kept behind this small class so that a shared implementation (Redis, for
several master processes) can replace it without touching either side.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

from twisted.internet import defer

from .models import Endpoint


class InstancePool:
    def __init__(self) -> None:
        self._alive: tuple[Endpoint, ...] = ()
        self._by_name: dict[str, Endpoint] = {}
        self._waiters: list[defer.Deferred] = []
        self._inflight: dict[str, int] = {}
        self._activity_listeners: list[Callable[[], None]] = []
        self._failure_listeners: list[Callable[[str], None]] = []
        self._publish_listeners: list[Callable[[tuple[Endpoint, ...]], None]] = []
        # In-flight counts of other processes serving this pool (master workers), by source.
        self._remote_inflight: dict[str, dict[str, int]] = {}
        self._generation = 0
        self._served: set[str] = set()

    # --- written by the manager --------------------------------------------------------

    def publish(self, endpoints: Sequence[Endpoint]) -> None:
        """Replace the set of routable instances (alive and not retiring)."""
        self._alive = tuple(endpoints)
        self._by_name = {e.name: e for e in self._alive}
        self._generation += 1
        if self._alive:
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                waiter.callback(None)
        for listener in self._publish_listeners:
            listener(self._alive)

    def on_publish(self, listener: Callable[[tuple[Endpoint, ...]], None]) -> None:
        """``listener(endpoints)`` runs after each ``publish`` (feeds master workers)."""
        self._publish_listeners.append(listener)

    def inflight(self, name: str) -> int:
        """Requests in flight through ``name``, in this process and in reporting workers."""
        count = self._inflight.get(name, 0)
        for counts in self._remote_inflight.values():
            count += counts.get(name, 0)
        return count

    def set_remote_inflight(self, source: str, counts: dict[str, int]) -> None:
        """The in-flight counts another process (``source``) last reported; ``{}`` clears."""
        if counts:
            self._remote_inflight[source] = dict(counts)
        else:
            self._remote_inflight.pop(source, None)

    def on_activity(self, listener: Callable[[], None]) -> None:
        """``listener()`` runs on every request the master receives (wakes the pool)."""
        self._activity_listeners.append(listener)

    def on_failure(self, listener: Callable[[str], None]) -> None:
        """``listener(name)`` runs when the master could not reach an instance."""
        self._failure_listeners.append(listener)

    # --- read by the master ------------------------------------------------------------

    @property
    def generation(self) -> int:
        """Changes whenever the routable set changes (lets choosers cache)."""
        return self._generation

    def alive(self) -> tuple[Endpoint, ...]:
        return self._alive

    def get(self, name: str) -> Endpoint | None:
        return self._by_name.get(name)

    def wait_alive(self) -> defer.Deferred:
        """A Deferred that fires once at least one instance is routable."""
        if self._alive:
            return defer.succeed(None)
        waiter: defer.Deferred = defer.Deferred(lambda d: self._cancel_waiter(d))
        self._waiters.append(waiter)
        return waiter

    def _cancel_waiter(self, waiter: defer.Deferred) -> None:
        if waiter in self._waiters:
            self._waiters.remove(waiter)

    def activity(self) -> None:
        for listener in self._activity_listeners:
            listener()

    def acquire(self, name: str) -> None:
        self._inflight[name] = self._inflight.get(name, 0) + 1

    def release(self, name: str) -> None:
        left = self._inflight.get(name, 0) - 1
        if left > 0:
            self._inflight[name] = left
        else:
            self._inflight.pop(name, None)

    def inflight_counts(self) -> dict[str, int]:
        """This process's own in-flight counts (non-zero only), a copy."""
        return dict(self._inflight)

    def served(self, name: str) -> None:
        """The master relayed a complete answer (or opened a tunnel) through ``name``.

        Evidence that the instance works, as good as a health check: the manager skips the
        active check of an instance that served since its last round (``take_served``), so a
        busy pool of a thousand instances is not also probed a thousand times per round.
        """
        self._served.add(name)

    def take_served(self) -> set[str]:
        """The names ``served`` since the last call (the manager's health round)."""
        served, self._served = self._served, set()
        return served

    def report_failure(self, name: str) -> None:
        for listener in self._failure_listeners:
            listener(name)
