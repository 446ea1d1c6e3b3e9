"""Where the master reports each request it served; read by the commander.

``StatsSink`` is the interface the master writes to; ``Stats`` is the in-process
implementation. Counters are cumulative; the commander samples them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


class StatsSink(Protocol):
    def record(self, *, instance: str | None, status: int, error: str | None,
               bytes_in: int, bytes_out: int, duration: float) -> None: ...


@dataclass
class Counters:
    requests: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    bytes_in: int = 0
    bytes_out: int = 0

    def add(self, *, error: str | None, bytes_in: int, bytes_out: int) -> None:
        self.requests += 1
        if error is not None:
            self.errors[error] = self.errors.get(error, 0) + 1
        self.bytes_in += bytes_in
        self.bytes_out += bytes_out

    def as_dict(self) -> dict:
        return {"requests": self.requests, "errors": dict(self.errors),
                "bytes_in": self.bytes_in, "bytes_out": self.bytes_out}


class Stats:
    """In-process stats: global and per-instance counters plus recent latencies."""

    def __init__(self, *, latency_window: int = 2048) -> None:
        self.total = Counters()
        self.per_instance: dict[str, Counters] = {}
        self._latencies: list[float] = []
        self._latency_window = latency_window

    def record(self, *, instance: str | None, status: int, error: str | None,
               bytes_in: int, bytes_out: int, duration: float) -> None:
        self.total.add(error=error, bytes_in=bytes_in, bytes_out=bytes_out)
        if instance is not None:
            counters = self.per_instance.get(instance)
            if counters is None:
                counters = self.per_instance[instance] = Counters()
            counters.add(error=error, bytes_in=bytes_in, bytes_out=bytes_out)
        self._latencies.append(duration)
        if len(self._latencies) > self._latency_window:
            del self._latencies[: len(self._latencies) - self._latency_window]

    def requests_of(self, instance: str) -> int:
        counters = self.per_instance.get(instance)
        return counters.requests if counters else 0

    def latency_percentiles(self) -> dict[str, float | None]:
        values = sorted(self._latencies)
        if not values:
            return {"p50": None, "p90": None, "p99": None}

        def pick(q: float) -> float:
            return values[min(len(values) - 1, int(q * len(values)))]

        return {"p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99)}

    def snapshot(self) -> dict:
        return {
            "global": {**self.total.as_dict(), "latency": self.latency_percentiles()},
            "instances": {name: c.as_dict() for name, c in self.per_instance.items()},
        }
