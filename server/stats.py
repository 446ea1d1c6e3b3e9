"""Where the master reports each request it served; read by the commander.

``StatsSink`` is the interface the master writes to; ``Stats`` is the in-process
implementation. It keeps cumulative counters (what Prometheus scrapes), the instance
lifecycle (started, stopped, requests served before stopping), and the latencies of the
current interval; ``StatsSampler`` turns those into one sample per second, kept for a
window, which ``GET /api/stats`` and the event stream show.

Everything here runs on the reactor thread: the master records there, the sampler ticks
there, and the commander reads through ``call_in_reactor``.
"""
from __future__ import annotations

import bisect
import logging
import random
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from twisted.internet import task

log = logging.getLogger(__name__)

# Upper bounds of the latency histogram, in seconds (Prometheus' ``le``); +Inf is implicit.
LATENCY_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                                      10.0, 30.0, 60.0)
# Latencies kept per interval for its percentiles; past this, a uniform reservoir sample.
INTERVAL_LATENCY_CAP = 4096
# Stopped instances remembered with what they served (for the API; the totals are counters).
STOPPED_MEMORY = 200


class StatsSink(Protocol):
    def record(self, *, instance: str | None, status: int, error: str | None,
               bytes_in: int, bytes_out: int, duration: float) -> None: ...


@dataclass
class Counters:
    """Cumulative counts for the whole server or one instance."""

    requests: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    bytes_in: int = 0
    bytes_out: int = 0
    latency_sum: float = 0.0
    # latency_buckets[i] counts durations <= LATENCY_BUCKETS[i] but above the previous bound;
    # the last slot is above every bound. Cumulated when exported.
    latency_buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))

    def add(self, *, error: str | None, bytes_in: int, bytes_out: int,
            duration: float = 0.0) -> None:
        self.requests += 1
        if error is not None:
            self.errors[error] = self.errors.get(error, 0) + 1
        self.bytes_in += bytes_in
        self.bytes_out += bytes_out
        self.latency_sum += duration
        self.latency_buckets[bisect.bisect_left(LATENCY_BUCKETS, duration)] += 1

    def as_dict(self) -> dict:
        return {"requests": self.requests, "errors": dict(self.errors),
                "bytes_in": self.bytes_in, "bytes_out": self.bytes_out}


@dataclass(frozen=True)
class StoppedInstance:
    name: str
    stopped_at: float
    requests: int


class _Reservoir:
    """At most ``cap`` values, a uniform sample of all those offered (Vitter's algorithm R)."""

    def __init__(self, cap: int, rng: random.Random) -> None:
        self.values: list[float] = []
        self.seen = 0
        self._cap = cap
        self._rng = rng

    def offer(self, value: float) -> None:
        self.seen += 1
        if len(self.values) < self._cap:
            self.values.append(value)
            return
        slot = self._rng.randrange(self.seen)
        if slot < self._cap:
            self.values[slot] = value


def percentiles(values: Iterable[float]) -> dict[str, float | None]:
    """p50/p90/p99 (nearest rank) of ``values``; None each when there is none."""
    ordered = sorted(values)
    if not ordered:
        return {"p50": None, "p90": None, "p99": None}

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99)}


class Stats:
    """In-process stats: cumulative counters, instance lifecycle, current-interval latencies."""

    def __init__(self, *, latency_window: int = 2048, rng: random.Random | None = None) -> None:
        self.total = Counters()
        self.per_instance: dict[str, Counters] = {}
        self.instances_started = 0
        self.instances_stopped = 0
        self.stopped: deque[StoppedInstance] = deque(maxlen=STOPPED_MEMORY)
        self._known: set[str] = set()
        self._latencies: deque[float] = deque(maxlen=latency_window)
        self._rng = rng if rng is not None else random.Random()
        self._interval: dict[str | None, _Reservoir] = {}

    # --- what the master calls -----------------------------------------------------------

    def record(self, *, instance: str | None, status: int, error: str | None,
               bytes_in: int, bytes_out: int, duration: float) -> None:
        self.total.add(error=error, bytes_in=bytes_in, bytes_out=bytes_out, duration=duration)
        self._latencies.append(duration)
        self._offer(None, duration)
        if instance is not None:
            counters = self.per_instance.get(instance)
            if counters is None:
                counters = self.per_instance[instance] = Counters()
            counters.add(error=error, bytes_in=bytes_in, bytes_out=bytes_out, duration=duration)
            self._offer(instance, duration)

    # --- what the manager and the commander call -----------------------------------------

    def requests_of(self, instance: str) -> int:
        counters = self.per_instance.get(instance)
        return counters.requests if counters else 0

    def track_instances(self, names: Iterable[str], *, now: float) -> None:
        """Tell the stats which instances exist now (after every instance change).

        A name not seen before counts as started; a known name now missing counts as
        stopped, with the requests it served, and its per-instance counters are dropped so
        that rotation does not grow them (and the metrics' label set) without end.
        """
        current = set(names)
        for name in sorted(current - self._known):
            self.instances_started += 1
        for name in sorted(self._known - current):
            self.instances_stopped += 1
            self.stopped.append(StoppedInstance(name=name, stopped_at=now,
                                                requests=self.requests_of(name)))
        # Counters of names that are not listed (gone, or a late record after they went).
        for name in [n for n in self.per_instance if n not in current]:
            del self.per_instance[name]
        self._known = current

    def latency_percentiles(self) -> dict[str, float | None]:
        """Percentiles over the last ``latency_window`` requests."""
        return percentiles(self._latencies)

    def take_interval(self) -> dict[str | None, list[float]]:
        """The latencies recorded since the last call, per instance (None: all); resets."""
        taken = {name: reservoir.values for name, reservoir in self._interval.items()}
        self._interval = {}
        return taken

    def snapshot(self) -> dict:
        """Cumulative totals, as plain data."""
        return {
            "global": {**self.total.as_dict(), "latency": self.latency_percentiles(),
                       "instances_started": self.instances_started,
                       "instances_stopped": self.instances_stopped},
            "instances": {name: c.as_dict() for name, c in self.per_instance.items()},
            "stopped": [{"name": s.name, "stopped_at": s.stopped_at, "requests": s.requests}
                        for s in self.stopped],
        }

    def _offer(self, key: str | None, duration: float) -> None:
        reservoir = self._interval.get(key)
        if reservoir is None:
            reservoir = self._interval[key] = _Reservoir(INTERVAL_LATENCY_CAP, self._rng)
        reservoir.offer(duration)


def _delta_errors(now: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {kind: n - before.get(kind, 0) for kind, n in now.items() if n != before.get(kind, 0)}


@dataclass
class _Mark:
    """Counter values at the previous sample, to compute the interval's deltas."""

    requests: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    bytes_in: int = 0
    bytes_out: int = 0

    @classmethod
    def of(cls, counters: Counters) -> _Mark:
        return cls(counters.requests, dict(counters.errors), counters.bytes_in,
                   counters.bytes_out)


class StatsSampler:
    """One sample of ``stats`` every ``interval`` seconds, the last ``window`` seconds kept.

    A sample holds what happened during its interval: requests (and per second), errors by
    kind, bytes in and out, latency percentiles, instances started and stopped; globally
    and for each instance that served something. ``start()`` begins sampling on ``clock``
    (the reactor, or a ``task.Clock`` in tests); nothing runs before it.
    """

    def __init__(self, *, stats: Stats, clock: Any, window: float = 900.0,
                 interval: float = 1.0) -> None:
        if interval <= 0 or window < interval:
            raise ValueError("need 0 < interval <= window")
        self.stats = stats
        self.interval = interval
        self.window = window
        self._clock = clock
        self.samples: deque[dict] = deque(maxlen=int(window / interval))
        self._listeners: list[Callable[[dict], None]] = []
        self._global = _Mark()
        self._instances: dict[str, _Mark] = {}
        self._started = 0
        self._stopped = 0
        self._loop: task.LoopingCall | None = None

    def set_window(self, window: float) -> None:
        """Keep ``window`` seconds of samples from now on (a config change made through the
        API); shrinking drops the oldest samples at once."""
        if window < self.interval:
            raise ValueError("need interval <= window")
        self.window = window
        self.samples = deque(self.samples, maxlen=int(window / self.interval))

    def on_sample(self, listener: Callable[[dict], None]) -> None:
        self._listeners.append(listener)

    def start(self) -> None:
        if self._loop is not None:
            return
        self._global = _Mark.of(self.stats.total)
        self._started = self.stats.instances_started
        self._stopped = self.stats.instances_stopped
        self.stats.take_interval()
        self._loop = task.LoopingCall(self._tick)
        self._loop.clock = self._clock
        self._loop.start(self.interval, now=False)

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def _tick(self) -> None:
        # A LoopingCall stops for good when its function raises: never let it.
        try:
            self.sample()
        except Exception:  # noqa: BLE001
            log.exception("stats sampling failed")

    def sample(self) -> dict:
        """Take one sample now, keep it, tell the listeners; returns it."""
        stats = self.stats
        latencies = stats.take_interval()
        total = stats.total
        sample = {
            "t": self._clock.seconds(),
            "interval": self.interval,
            "global": {
                **self._delta(total, self._global, latencies.get(None, [])),
                "instances_started": stats.instances_started - self._started,
                "instances_stopped": stats.instances_stopped - self._stopped,
            },
            "instances": {},
        }
        self._global = _Mark.of(total)
        self._started = stats.instances_started
        self._stopped = stats.instances_stopped
        marks: dict[str, _Mark] = {}
        for name, counters in stats.per_instance.items():
            before = self._instances.get(name, _Mark())
            if counters.requests != before.requests:
                sample["instances"][name] = {
                    **self._delta(counters, before, latencies.get(name, [])),
                    "requests_total": counters.requests,
                }
            marks[name] = _Mark.of(counters)
        self._instances = marks
        self.samples.append(sample)
        for listener in list(self._listeners):
            try:
                listener(sample)
            except Exception:  # noqa: BLE001 - a broken listener must not stop sampling
                log.exception("stats listener failed")
        return sample

    def _delta(self, counters: Counters, before: _Mark, latencies: list[float]) -> dict:
        requests = counters.requests - before.requests
        return {
            "requests": requests,
            "rps": requests / self.interval,
            "errors": _delta_errors(counters.errors, before.errors),
            "bytes_in": counters.bytes_in - before.bytes_in,
            "bytes_out": counters.bytes_out - before.bytes_out,
            "latency": percentiles(latencies),
        }

    def view(self, *, since: float | None = None) -> dict:
        """What ``GET /api/stats`` answers: the window's samples (newer than ``since``)
        and the cumulative totals."""
        samples = [s for s in self.samples if since is None or s["t"] > since]
        return {"interval": self.interval, "window": self.window,
                "totals": self.stats.snapshot(), "samples": samples}
