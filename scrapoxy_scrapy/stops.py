"""Stopping banned instances through the commander, for BanMiddleware.

:class:`InstanceStopper` asks the commander to stop an instance named by its
``x-cache-proxyname``, or (CONNECT mode) by the session token its tunnel carried; once per
instance or token however many responses report the ban, asynchronously (the commander call
never blocks the reactor). It remembers what it stopped, so the middleware can tell a request
cut by a stop from an ordinary failure, and lets ban retries wait until the stop is answered:
from then on the master no longer routes to the banned instance. When the commander says no
instance is left alive, it closes the pool gate (requests wait for the replacements).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

from scrapoxy_scrapy.commander import CommanderHTTPError, StoppedInstance
from scrapoxy_scrapy.pool import PoolGate
from scrapoxy_scrapy.sessions import SessionPins

logger = logging.getLogger(__name__)


class _PendingStop:
    """A stop call in flight; ban retries wait for it to end (however it ends)."""

    def __init__(self) -> None:
        self._waiters: list[defer.Deferred[None]] = []

    def wait(self) -> defer.Deferred[None]:
        waiter: defer.Deferred[None] = defer.Deferred()
        self._waiters.append(waiter)
        return waiter

    def done(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(None)


class InstanceStopper:
    def __init__(self, *, stop_instance: Callable[[str], defer.Deferred[int]] | None,
                 stop_session: Callable[[str], defer.Deferred[StoppedInstance]] | None = None,
                 sessions: SessionPins | None = None, gate: PoolGate | None = None,
                 stats: Any = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.stop_instance = stop_instance
        self.stop_session_of = stop_session
        self.sessions = sessions
        self.gate = gate
        self.stats = stats
        self.clock = clock
        # Asked already (names, and CONNECT session tokens): each is stopped once.
        self.stopping: set[str] = set()
        self.stopping_sessions: set[str] = set()
        self._pending: dict[str, _PendingStop] = {}
        self._last_stop_at: float | None = None

    def stop(self, proxyname: str) -> str:
        """Ask the commander to stop instance ``proxyname``; returns the stop's key."""
        key = f"name:{proxyname}"
        if self.stop_instance is None or proxyname in self.stopping:
            return key
        self.stopping.add(proxyname)
        self._asked()

        def stopped(alive: int) -> None:
            self._stopped(proxyname, alive)

        def failed(failure: Failure) -> None:
            if self._failed(proxyname, failure):
                self.stopping.discard(proxyname)  # let a later ban of it try again

        self._track(key, self.stop_instance(proxyname).addCallbacks(stopped, failed))
        return key

    def stop_session(self, token: str) -> str:
        """CONNECT mode: stop the instance session ``token`` tunnels through; the stop's key."""
        key = f"session:{token}"
        if self.stop_session_of is None or token in self.stopping_sessions:
            return key
        self.stopping_sessions.add(token)
        self._asked()

        def stopped(result: StoppedInstance) -> None:
            self.stopping.add(result.name)  # a later ban reported by name is not stopped again
            self._stopped(result.name, result.alive)

        def failed(failure: Failure) -> None:
            if self._failed(f"of session {token}", failure):
                self.stopping_sessions.discard(token)

        self._track(key, self.stop_session_of(token).addCallbacks(stopped, failed))
        return key

    def in_flight(self, key: str) -> bool:
        return key in self._pending

    def wait(self, key: str) -> defer.Deferred[None] | None:
        """Fires when the stop ``key`` is answered; None when it is not in flight."""
        pending = self._pending.get(key)
        return None if pending is None else pending.wait()

    def stopped_within(self, window_s: float) -> bool:
        """Whether a stop was asked for or answered in the last ``window_s`` seconds."""
        last = self._last_stop_at
        return last is not None and self.clock() - last <= window_s

    def _asked(self) -> None:
        self._last_stop_at = self.clock()
        self._inc("scrapoxy/ban/stop_requested")

    def _track(self, key: str, call: defer.Deferred[None]) -> None:
        if call.called:
            return  # answered at once: nothing to wait for
        pending = self._pending[key] = _PendingStop()

        def finished(_: object) -> None:
            del self._pending[key]
            pending.done()

        call.addBoth(finished)

    def _stopped(self, proxyname: str, alive: int) -> None:
        self._last_stop_at = self.clock()
        if self.sessions is not None:
            self.sessions.forget_instance(proxyname)
        self._inc("scrapoxy/ban/instance_stopped")
        logger.info("scrapoxy: stopped banned instance %s (%d alive left)", proxyname, alive)
        if alive == 0 and self.gate is not None:
            self.gate.close("all_banned")

    def _failed(self, what: str, failure: Failure) -> bool:
        """Log a failed stop; True if a later ban should ask again."""
        error = failure.value
        if isinstance(error, CommanderHTTPError) and error.status == 404:
            return False  # already gone (replaced by the manager): nothing to stop
        self._inc("scrapoxy/ban/stop_failed")
        logger.warning("scrapoxy: could not stop banned instance %s: %s", what, error)
        return True

    def _inc(self, key: str) -> None:
        if self.stats is not None:
            self.stats.inc_value(key)
