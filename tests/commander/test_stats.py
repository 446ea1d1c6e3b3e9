"""Stats and the once-a-second sampler, on a task.Clock: no sleeps, no reactor."""
from __future__ import annotations

import random

import pytest
from twisted.internet import task

from scrapoxy_server.stats import Stats, StatsSampler


def served(stats: Stats, instance: str | None, *, error: str | None = None,
           duration: float = 0.1, bytes_in: int = 100, bytes_out: int = 10) -> None:
    stats.record(instance=instance, status=502 if error else 200, error=error,
                 bytes_in=bytes_in, bytes_out=bytes_out, duration=duration)


@pytest.fixture
def clock() -> task.Clock:
    clock = task.Clock()
    clock.advance(1_700_000_000)
    return clock


def test_sampler_does_nothing_until_started(clock):
    sampler = StatsSampler(stats=Stats(), clock=clock)
    clock.advance(5)
    assert list(sampler.samples) == []
    assert clock.getDelayedCalls() == []


def test_one_sample_per_second_holds_what_happened_in_that_second(clock):
    stats = Stats(rng=random.Random(1))
    sampler = StatsSampler(stats=stats, clock=clock)
    sampler.start()
    for duration in (0.1, 0.2, 0.3, 0.4):
        served(stats, "i1", duration=duration)
    served(stats, "i2", error="upstream", duration=1.0, bytes_in=0, bytes_out=5)
    served(stats, None, error="no_instance", duration=0.0, bytes_in=0, bytes_out=0)
    clock.advance(1)
    clock.advance(1)

    first, second = sampler.samples
    assert first["t"] == 1_700_000_001
    assert first["global"]["requests"] == 6 and first["global"]["rps"] == 6.0
    assert first["global"]["errors"] == {"upstream": 1, "no_instance": 1}
    assert first["global"]["bytes_in"] == 400 and first["global"]["bytes_out"] == 45
    assert first["global"]["latency"]["p50"] == 0.3
    assert first["global"]["latency"]["p99"] == 1.0
    assert first["instances"]["i1"]["requests"] == 4
    assert first["instances"]["i1"]["latency"]["p90"] == 0.4
    assert first["instances"]["i2"]["errors"] == {"upstream": 1}
    # Nothing happened in the second one: zeros, no percentiles, no idle instance.
    assert second["global"]["requests"] == 0
    assert second["global"]["latency"] == {"p50": None, "p90": None, "p99": None}
    assert second["instances"] == {}


def test_samples_are_kept_for_the_window_only(clock):
    sampler = StatsSampler(stats=Stats(), clock=clock, window=10, interval=1)
    sampler.start()
    clock.pump([1] * 25)
    assert len(sampler.samples) == 10
    assert sampler.samples[0]["t"] == 1_700_000_016
    assert [s["t"] for s in sampler.view(since=1_700_000_023)["samples"]] == [
        1_700_000_024, 1_700_000_025]


def test_instances_started_stopped_and_what_a_stopped_one_served(clock):
    stats = Stats()
    sampler = StatsSampler(stats=stats, clock=clock)
    sampler.start()
    stats.track_instances(["a", "b"], now=clock.seconds())
    served(stats, "a")
    served(stats, "a")
    served(stats, "b")
    clock.advance(1)
    stats.track_instances(["b", "c"], now=clock.seconds())
    clock.advance(1)

    first, second = sampler.samples
    assert first["global"]["instances_started"] == 2
    assert second["global"]["instances_started"] == 1
    assert second["global"]["instances_stopped"] == 1
    snapshot = stats.snapshot()
    assert snapshot["stopped"] == [{"name": "a", "stopped_at": 1_700_000_001, "requests": 2}]
    assert snapshot["global"]["instances_started"] == 3
    # A stopped instance's counters go, so rotation does not grow them without end.
    assert set(snapshot["instances"]) == {"b"}
    assert stats.requests_of("b") == 1


def test_a_failing_listener_does_not_stop_sampling(clock):
    sampler = StatsSampler(stats=Stats(), clock=clock)
    sampler.on_sample(lambda sample: 1 / 0)
    sampler.start()
    clock.pump([1, 1, 1])
    assert len(sampler.samples) == 3


def test_interval_latencies_are_bounded_by_a_reservoir(clock):
    stats = Stats(rng=random.Random(3))
    for i in range(10_000):
        served(stats, None, duration=i / 10_000)
    latencies = stats.take_interval()[None]
    assert len(latencies) == 4096
    assert stats.take_interval() == {}


def test_record_keeps_the_master_contract_and_snapshot_shape():
    stats = Stats()
    served(stats, "x", error="timeout")
    snapshot = stats.snapshot()
    assert snapshot["global"]["requests"] == 1
    assert snapshot["global"]["errors"] == {"timeout": 1}
    assert snapshot["instances"]["x"]["bytes_in"] == 100
    assert set(snapshot["global"]["latency"]) == {"p50", "p90", "p99"}


def test_the_stats_window_can_shrink_and_grow_while_sampling():
    from twisted.internet import task

    from scrapoxy_server.stats import Stats, StatsSampler

    sampler = StatsSampler(stats=Stats(), clock=task.Clock(), window=10.0, interval=1.0)
    for _ in range(10):
        sampler.sample()
    sampler.set_window(4.0)
    assert sampler.view()["window"] == 4.0 and len(sampler.view()["samples"]) == 4
    sampler.set_window(20.0)
    for _ in range(10):
        sampler.sample()
    assert len(sampler.view()["samples"]) == 14
