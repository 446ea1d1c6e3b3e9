"""``GET /metrics``: Prometheus text exposition, via ``prometheus_client``.

The metrics live in the app's own ``CollectorRegistry`` (never the process-global one, so
two servers in one process, or a test run, never mix), with one custom collector that reads
the cumulative ``Stats`` and the manager's state when scraped. Reading happens on the
reactor thread (one ``call_in_reactor`` copies plain numbers); formatting happens in the
WSGI thread.

Auth: ``/metrics`` is behind the commander's password like the API (it names instances and
their traffic). Prometheus scrapes it with ``basic_auth`` in the scrape config; the bare
token of the original's clients works too.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily)

from scrapoxy_server.stats import LATENCY_BUCKETS, Stats

__all__ = ["CONTENT_TYPE", "gather", "metrics_registry", "render"]

# The classic text format, which every Prometheus version parses (our names need none of
# the escaping that format 1.0.0 adds).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def gather(stats: Stats | None, control: Any) -> dict:
    """Plain numbers for one scrape; runs on the reactor thread."""
    if stats is None:
        stats = Stats()  # no live feed: the counters read as zero
    total = stats.total
    data: dict[str, Any] = {
        "requests": total.requests,
        "errors": dict(total.errors),
        "bytes_in": total.bytes_in,
        "bytes_out": total.bytes_out,
        "latency_sum": total.latency_sum,
        "latency_buckets": list(total.latency_buckets),
        "started": stats.instances_started,
        "stopped": stats.instances_stopped,
        "per_instance": {name: (c.requests, c.bytes_in, c.bytes_out, dict(c.errors))
                         for name, c in stats.per_instance.items()},
        "instances": None,
        "scaling": None,
        "providers": None,
    }
    if control is not None:
        data["instances"] = [(i["name"], i["provider"], str(i["status"]), bool(i["alive"]))
                             for i in control.list_instances()]
        data["scaling"] = control.get_scaling().as_dict()
        status = getattr(control, "provider_status", None)
        if status is not None:
            data["providers"] = [
                (p["name"], p.get("type") or "", p["instances"], p["alive"],
                 None if p["error"] is None else (p["error"]["action"], p["error"]["since"]))
                for p in status()]
    return data


class _ScrapoxyCollector:
    def __init__(self, read: Callable[[], dict]) -> None:
        self._read = read

    def describe(self) -> list:
        # No description up front: the registry must not collect (and reach the reactor)
        # when the collector is registered.
        return []

    def collect(self):  # noqa: ANN201 - prometheus_client's protocol
        data = self._read()
        requests = CounterMetricFamily("scrapoxy_requests", "Requests the master served.")
        requests.add_metric([], data["requests"])
        yield requests
        errors = CounterMetricFamily("scrapoxy_errors", "Requests that failed, by error kind.",
                                     labels=["kind"])
        for kind, count in sorted(data["errors"].items()):
            errors.add_metric([kind], count)
        yield errors
        for direction, help_text in (
                ("in", "Bytes received from targets (downstream) through the master."),
                ("out", "Bytes sent to targets (upstream) through the master.")):
            family = CounterMetricFamily(f"scrapoxy_bytes_{direction}", help_text)
            family.add_metric([], data[f"bytes_{direction}"])
            yield family
        cumulative, buckets = 0, []
        for bound, count in zip((*LATENCY_BUCKETS, float("inf")), data["latency_buckets"]):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        latency = HistogramMetricFamily("scrapoxy_request_duration_seconds",
                                        "Time from a request's arrival to its last byte.")
        latency.add_metric([], buckets, sum_value=data["latency_sum"])
        yield latency
        started = CounterMetricFamily("scrapoxy_instances_started",
                                      "Instances that appeared in the pool.")
        started.add_metric([], data["started"])
        yield started
        stopped = CounterMetricFamily("scrapoxy_instances_stopped",
                                      "Instances that left the pool.")
        stopped.add_metric([], data["stopped"])
        yield stopped
        per_requests = CounterMetricFamily("scrapoxy_instance_requests",
                                           "Requests served per current instance.",
                                           labels=["instance"])
        per_in = CounterMetricFamily("scrapoxy_instance_bytes_in",
                                     "Body bytes received per current instance.",
                                     labels=["instance"])
        per_out = CounterMetricFamily("scrapoxy_instance_bytes_out",
                                      "Body bytes sent per current instance.",
                                      labels=["instance"])
        per_errors = CounterMetricFamily("scrapoxy_instance_errors",
                                         "Failed requests per current instance and kind.",
                                         labels=["instance", "kind"])
        for name, (count, bytes_in, bytes_out, kinds) in sorted(data["per_instance"].items()):
            per_requests.add_metric([name], count)
            per_in.add_metric([name], bytes_in)
            per_out.add_metric([name], bytes_out)
            for kind, n in sorted(kinds.items()):
                per_errors.add_metric([name, kind], n)
        yield from (per_requests, per_in, per_out, per_errors)
        if data["instances"] is not None:
            by_status = GaugeMetricFamily("scrapoxy_instances", "Instances by provider and status.",
                                          labels=["provider", "status"])
            counts: dict[tuple[str, str], int] = {}
            for _, provider, status, _alive in data["instances"]:
                counts[(provider, status)] = counts.get((provider, status), 0) + 1
            for (provider, status), n in sorted(counts.items()):
                by_status.add_metric([provider, status], n)
            yield by_status
            alive = GaugeMetricFamily("scrapoxy_instances_alive",
                                      "Instances passing their health check.")
            alive.add_metric([], sum(1 for *_, is_alive in data["instances"] if is_alive))
            yield alive
        if data["providers"] is not None:
            yield from _provider_families(data["providers"])
        if data["scaling"] is not None:
            scaling = GaugeMetricFamily("scrapoxy_scaling", "The scaling bounds.",
                                        labels=["bound"])
            for bound in ("min", "required", "max"):
                scaling.add_metric([bound], data["scaling"][bound])
            yield scaling


def _provider_families(providers: list) -> list:
    labels = ["provider", "type"]
    instances = GaugeMetricFamily("scrapoxy_provider_instances",
                                  "Instances listed per provider.", labels=labels)
    alive = GaugeMetricFamily("scrapoxy_provider_instances_alive",
                              "Routable instances per provider.", labels=labels)
    up = GaugeMetricFamily("scrapoxy_provider_up",
                           "1 when the provider's calls work, 0 while they fail (see "
                           "GET /api/providers for the error).", labels=labels)
    since = GaugeMetricFamily("scrapoxy_provider_failing_since_seconds",
                              "Epoch time the provider's current run of failures began.",
                              labels=[*labels, "action"])
    for name, kind, count, alive_count, error in sorted(providers):
        instances.add_metric([name, kind], count)
        alive.add_metric([name, kind], alive_count)
        up.add_metric([name, kind], 1 if error is None else 0)
        if error is not None and error[1] is not None:
            since.add_metric([name, kind, error[0]], error[1])
    return [instances, alive, up, since]


def metrics_registry(read: Callable[[], dict]) -> CollectorRegistry:
    """A registry of its own, whose one collector calls ``read()`` at each scrape."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_ScrapoxyCollector(read))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
