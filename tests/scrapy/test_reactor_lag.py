"""The middlewares' commander calls never stall the reactor, even against a slow commander.

A LoopingCall ticks every 10 ms on the (real) reactor and records how late each tick ran,
while the reactor-side client, the ban middleware and the pool gate make calls to a commander
that takes 500 ms per answer. The control measurement runs the blocking client on the reactor
thread, which a careless middleware would do, to show the probe does see a stall.
"""
from __future__ import annotations

import gc
import time
from collections.abc import Iterator

import pytest
from scrapy import Request
from scrapy.http import Response
from twisted.internet import defer, task

from scrapoxy_scrapy import BanMiddleware, BanPolicy
from scrapoxy_scrapy.commander import CommanderClient
from scrapoxy_scrapy.pool import PoolGate
from scrapoxy_scrapy.reactor_commander import ReactorCommanderClient
from tests.scrapy.fake_commander import FakeCommander
from tests.support import wait_until

SLOW_S = 0.5
# A shared CI machine can delay any thread by tens of ms; a blocking call stalls by SLOW_S.
MAX_LAG_S = SLOW_S / 3
TICK_S = 0.01


@pytest.fixture
def slow_commander() -> Iterator[FakeCommander]:
    fake = FakeCommander(instances=3, delay_s=SLOW_S).start()
    yield fake
    fake.stop()


class LagProbe:
    """Records the worst lateness of a 10 ms LoopingCall."""

    def __init__(self, reactor) -> None:
        self.reactor = reactor
        self.max_lag_s = 0.0
        self.ticks = 0
        self._last: float | None = None
        self._loop = task.LoopingCall(self._tick)

    def _tick(self) -> None:
        now = time.monotonic()
        if self._last is not None:
            self.max_lag_s = max(self.max_lag_s, now - self._last - TICK_S)
        self._last = now
        self.ticks += 1

    def start(self) -> None:
        self._loop.start(TICK_S)

    def stop(self) -> None:
        self._loop.stop()


async def commander_traffic(client: ReactorCommanderClient, reactor) -> float:
    """What a crawl's middlewares do with the commander; returns the wall time it took."""
    started = time.monotonic()
    # Calls in parallel, as several middlewares and the gate would make them.
    await defer.gatherResults([client.wake(), client.alive_count(), client.scaling()])
    ban = BanMiddleware(policy=BanPolicy(), retry_times=3, stop_instance=client.stop_instance)
    for name in ("inst-1", "inst-2"):
        response = Response("https://e.com/", status=429, headers={"x-cache-proxyname": name})
        assert isinstance(ban.process_response(Request("https://e.com/"), response), Request)
    gate = PoolGate(clock=reactor, alive_count=client.alive_count, backoff_base_s=0.05,
                    backoff_max_s=0.1, wait_timeout_s=5)
    gate.close("test")
    await gate.wait()
    await client.sleep()
    await client.close()
    return time.monotonic() - started


def test_commander_calls_from_middlewares_do_not_stall_the_reactor(reactor_thread,
                                                                    slow_commander):
    reactor = reactor_thread.reactor
    probe = LagProbe(reactor)
    client = ReactorCommanderClient(slow_commander.url, timeout=5, reactor=reactor)
    # Warm-up outside the measurement: first-use imports and the reactor's own start-up are not
    # what this test is about; the steady state of a crawl is.
    reactor_thread.call(client.scaling)
    BanMiddleware(policy=BanPolicy(), retry_times=1, stop_instance=None).process_response(
        Request("https://e.com/"), Response("https://e.com/", status=429))
    gc.collect()
    reactor_thread.call(probe.start)
    elapsed = reactor_thread.call(lambda: defer.ensureDeferred(commander_traffic(client, reactor)))
    # The two ban stops may still be in flight: wait for the fake to see them.
    wait_until(lambda: sum(1 for _m, p, _ in slow_commander.calls
                           if p == "/api/instances/stop") >= 2, timeout=5)
    time.sleep(SLOW_S + 0.1)
    reactor_thread.call(probe.stop)

    assert elapsed >= 3 * SLOW_S  # the calls really were slow...
    assert probe.ticks > elapsed / TICK_S / 2
    # ...the reactor was not:
    assert probe.max_lag_s < MAX_LAG_S, f"reactor stalled {probe.max_lag_s * 1000:.0f} ms"
    print(f"\ncommander traffic {elapsed:.2f} s, max reactor lag {probe.max_lag_s * 1000:.1f} ms")


def test_lag_probe_sees_a_blocking_call_on_the_reactor_thread(reactor_thread, slow_commander):
    """Control: the same probe catches what a requests call on the reactor thread does."""
    probe = LagProbe(reactor_thread.reactor)
    reactor_thread.call(probe.start)
    blocking = CommanderClient(slow_commander.url, timeout=5)
    # The blocking call runs on the reactor thread; the probe's overdue tick fires in the same
    # reactor iteration, before the stop that the test thread queues once the call returned.
    reactor_thread.call(blocking.scaling)
    reactor_thread.call(probe.stop)
    assert probe.max_lag_s >= SLOW_S * 0.8
