"""Holding requests while the pool has no alive instance, without blocking the reactor.

:class:`PoolGate` is open while the pool is believed to serve. The scale and ban middlewares
close it when the pool is empty (spider just opened and the pool asleep, the master answered
``no_instance``, the last instance was banned); requests then wait on Deferreds, never on
``time.sleep``, while one polling loop asks the commander for the alive count with backoff and
opens the gate at the first alive instance. Without a commander it reopens after the backoff
delay and lets the master, which also holds requests while the pool wakes, decide; so it does
when the commander cannot be asked (down, or refusing the credentials: logged as an error
naming the settings).

It never keeps a crawl waiting forever: after ``wait_timeout_s`` it opens anyway (the master's
``no_instance`` answers then count against each request's bounded no-instance retries).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, task

from scrapoxy_scrapy.commander import CommanderHTTPError

logger = logging.getLogger(__name__)


def backoff_delay(attempt: int, *, base_s: float, max_s: float) -> float:
    """``base_s * 2**attempt`` capped at ``max_s`` (attempt counts from 0)."""
    if attempt < 0:
        attempt = 0
    return min(max_s, base_s * (2 ** min(attempt, 32)))


class PoolGate:
    """Open: requests pass. Closed: requests wait until the poller sees an alive instance."""

    def __init__(self, *, clock: Any = None, alive_count: Callable[[], defer.Deferred[int]] | None,
                 backoff_base_s: float, backoff_max_s: float, wait_timeout_s: float,
                 stats: Any = None) -> None:
        self._clock = clock  # None: the global reactor, looked up on first use, not at import
        self.alive_count = alive_count
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.wait_timeout_s = wait_timeout_s
        self.stats = stats
        self.ready = True
        self.closes = 0  # consecutive closes without a served response: grows the delay
        self._waiters: list[defer.Deferred[None]] = []
        self._poller: defer.Deferred[None] | None = None
        self._sleep: defer.Deferred[None] | None = None
        self._stopped = False

    @property
    def clock(self) -> Any:
        if self._clock is None:
            from twisted.internet import reactor
            self._clock = reactor
        return self._clock

    def wait(self) -> defer.Deferred[None]:
        """Fires when the gate is open (at once if it is)."""
        if self.ready:
            return defer.succeed(None)
        waiter: defer.Deferred[None] = defer.Deferred()
        self._waiters.append(waiter)
        return waiter

    def close(self, reason: str) -> None:
        """Hold new requests until an instance is alive; starts the poller if needed."""
        if self._stopped:
            return
        if self.ready:
            logger.info("scrapoxy: holding requests until an instance is alive (%s)", reason)
            self.ready = False
            self.closes += 1
            if self.stats is not None:
                self.stats.inc_value(f"scrapoxy/pool/wait_count/{reason}")
        if self._poller is None:
            self._poller = defer.ensureDeferred(self._poll())

    def served(self) -> None:
        """A response came through an instance: the next close starts from the short delay."""
        self.closes = 0

    def stop(self) -> None:
        """Release every waiter and stop polling (spider closed)."""
        self._stopped = True
        if self._sleep is not None:
            self._sleep.cancel()
        self._open()

    def _open(self) -> None:
        self.ready = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(None)

    async def _pause(self, delay_s: float) -> None:
        self._sleep = task.deferLater(self.clock, delay_s, lambda: None)
        try:
            await self._sleep
        finally:
            self._sleep = None

    async def _poll(self) -> None:
        started = self.clock.seconds()
        attempt = 0
        try:
            while not self.ready and not self._stopped:
                if self.alive_count is None:
                    await self._pause(backoff_delay(self.closes - 1, base_s=self.backoff_base_s,
                                                    max_s=self.backoff_max_s))
                    break
                alive = await self._alive()
                if alive is None:
                    # No answer to trust: do as without a commander. The master holds each
                    # request while the pool wakes; waiting here for SCRAPOXY_WAIT_TIMEOUT
                    # would stall the crawl on a setting's typo.
                    await self._pause(backoff_delay(self.closes - 1, base_s=self.backoff_base_s,
                                                    max_s=self.backoff_max_s))
                    break
                if alive > 0:
                    logger.info("scrapoxy: %d alive instance(s), releasing requests", alive)
                    break
                if self.clock.seconds() - started >= self.wait_timeout_s:
                    logger.error("scrapoxy: no alive instance after %.0f s, releasing requests "
                                 "anyway (SCRAPOXY_WAIT_TIMEOUT)", self.wait_timeout_s)
                    break
                await self._pause(backoff_delay(attempt, base_s=self.backoff_base_s,
                                                max_s=self.backoff_max_s))
                attempt += 1
        except defer.CancelledError:
            pass
        except Exception:  # never leave requests waiting on a crashed poller
            logger.exception("scrapoxy: the pool poller failed; releasing requests")
        finally:
            self._poller = None
            self._open()

    async def _alive(self) -> int | None:
        """The alive count, or None when the commander gives none (logged with the cause)."""
        assert self.alive_count is not None
        try:
            return await self.alive_count()
        except CommanderHTTPError as error:
            # It answered, and refused: credentials or address are wrong, not the pool.
            logger.error("scrapoxy: the commander refused to give the alive count (%s): check "
                         "SCRAPOXY_API, SCRAPOXY_USERNAME and SCRAPOXY_PASSWORD; requests go "
                         "on to the master, which holds them while the pool wakes",
                         _short(error))
        except Exception as error:  # never raised into Scrapy
            logger.warning("scrapoxy: cannot ask the commander for alive instances (%s); "
                           "requests go on to the master, which holds them while the pool "
                           "wakes", _short(error))
        return None


def _short(error: Exception) -> str:
    """One line, bounded: a commander URL pointing at a web page answers a whole HTML page."""
    text = " ".join(str(error).split())
    return text if len(text) <= 200 else text[:200] + "..."
