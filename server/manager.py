"""The manager: keeps the instance pool at the wanted size and healthy.

Two loops run on the reactor (started by ``Manager.start``, never by the constructor):

- the *tick*, every ``check_interval``: observe (``list_instances`` on every provider, in
  parallel), update one record per instance, ask the pure ``planner.plan`` what must change,
  execute it (create, terminate, start retiring), publish the routable instances to the pool;
- the *health* round, every ``alive_check_interval``: fetch the check URL through every instance
  that has an address (``HealthChecker``), update alive/failures/fingerprint, publish. An
  alive instance that relayed traffic since the last round with no fault reported
  (``pool.take_served``) counts as checked without a probe: under load the master's own
  requests are the health checks, and a large pool costs no probe traffic. A round does not
  wait for its checks: each verdict lands when its check answers, and an instance whose
  check is still in flight is skipped, so a hung instance delays nobody else.

Both loops catch their own errors: a ``LoopingCall`` stops for good the first time its
function fails. A provider whose call fails is logged with the cause and backed off
exponentially (capped at ``BACKOFF_CAP`` seconds); its previous observation is kept meanwhile,
and nothing is created on it until it lists again.

Awake/asleep: a request through the master (``pool.on_activity``) wakes the pool
(``required = max``) when it was asleep; ``downscale_delay`` seconds without a request put it
to sleep (``required = min``). Only these transitions touch ``required``, so a value set
through the commander holds while the pool stays awake. A commander change of ``required``
counts as activity: it holds for at least ``downscale_delay``, and setting it to ``min`` makes
the next request wake the pool again.

The facade the commander calls (``list_instances``, ``get_scaling``, ``update_scaling``,
``stop_instance``, ``alive_count``, ``provider_errors``, ``provider_status``, ``on_change``,
``reconfigure``) runs on the reactor thread. All time comes from ``reactor.seconds()``.
"""
from __future__ import annotations

import ipaddress
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer, task
from twisted.python.failure import Failure

from . import config as config_module
from .config import ConfigError, ManagerConfig
from .health import HealthChecker
from .models import Endpoint, ProviderInstance, Scaling, Status
from .planner import InstanceState, Limits, Plan, Reason, plan
from .pool import InstancePool
from .providers.base import Provider, ProviderError
from .stats import Stats

log = logging.getLogger(__name__)

# Longest wait before a failing provider is tried again, in seconds.
BACKOFF_CAP = 60.0
# A provider call that has not answered after this many seconds counts as failed.
PROVIDER_CALL_TIMEOUT = 120.0
# A terminated instance still listed as running after this many seconds is planned again
# (the terminate call may have been lost).
TERMINATE_RETRY_AFTER = 60.0
# Seconds past ``check_timeout`` after which a health check that never answered is failed.
CHECK_TIMEOUT_SLACK = 1.0
# Health probes started per reactor turn, and the seconds between such bursts.
PROBE_BURST = 25
PROBE_SPACING = 0.01

SCALING_KEYS = ("min", "required", "max")


class _Backoff:
    """Exponential backoff for one kind of call to one provider."""

    def __init__(self, *, base: float, cap: float) -> None:
        self._base = base
        self._cap = cap
        self.failures = 0
        self.until = 0.0
        self.error: str | None = None
        # When the current run of failures began (shown by the API next to the error).
        self.since: float | None = None

    def ready(self, now: float) -> bool:
        return now >= self.until

    def failed(self, now: float, error: str, *, retryable: bool = True) -> float:
        if self.failures == 0:
            self.since = now
        self.failures += 1
        self.error = error
        # A capacity or limit error will not clear in seconds: wait the full cap at once.
        delay = self._cap if not retryable else min(self._cap, self._base * 2 ** (self.failures - 1))
        self.until = now + delay
        return delay

    def succeeded(self) -> None:
        self.failures = 0
        self.until = 0.0
        self.error = None
        self.since = None


@dataclass(frozen=True)
class ShutdownReport:
    """What ``Manager.stop`` did: names terminated (this server created them), names released
    (proxies it only used), and providers whose instances it could not terminate."""

    terminated: tuple[str, ...] = ()
    released: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()

    def summary(self) -> str:
        """One line for the user, e.g. ``terminated 2 instance(s): a, b; released 1 ...``."""
        parts = [f"terminated {len(self.terminated)} instance(s)"
                 + (f": {', '.join(self.terminated)}" if self.terminated else "")]
        if self.released:
            parts.append(f"released {len(self.released)} proxy(ies) it did not create: "
                         + ", ".join(self.released))
        if self.failed:
            parts.append(f"COULD NOT terminate the instances of {', '.join(self.failed)} "
                         "(see the log): they may still be running")
        return "; ".join(parts)


@dataclass
class _Record:
    """The manager's mutable knowledge of one instance (one per listed id)."""

    instance: ProviderInstance
    first_seen_at: float
    expires_at: float | None
    alive: bool = False
    last_alive_at: float | None = None
    failures: int = 0
    fingerprint: str | None = None
    check_error: str | None = None
    retiring_since: float | None = None
    terminating_since: float | None = None
    # A health check of this instance is in flight.
    checking: bool = False

    @property
    def name(self) -> str:
        return self.instance.id

    @property
    def routable(self) -> bool:
        return (self.alive and self.instance.address is not None
                and self.instance.status is Status.STARTED
                and self.retiring_since is None and self.terminating_since is None)

    def endpoint(self) -> Endpoint:
        assert self.instance.address is not None
        return Endpoint(name=self.name, address=self.instance.address,
                        credentials=self.instance.credentials)


class Manager:
    """The reconcile loop and the commander's facade.

    :param reactor: provides ``seconds()`` and ``callLater`` (a ``task.Clock`` in tests).
    :param providers: where instances come from; names must be distinct.
    :param pool: where routable instances are published; its activity and failure callbacks
        are subscribed to here.
    :param stats: read for the per-instance request counts of ``list_instances``.
    :param health: the health checker used by the health loop.
    :param manager_config: intervals, limits and the living limit.
    :param scaling: the initial ``min/required/max`` (from the config or the saved state).
    :param downscale_delay: seconds without a request before ``required`` drops to ``min``.
    :param rng: draws living limits; pass a seeded one in tests.
    """

    def __init__(self, *, reactor: Any, providers: Sequence[Provider], pool: InstancePool,
                 stats: Stats, health: HealthChecker, manager_config: ManagerConfig,
                 scaling: Scaling, downscale_delay: float,
                 rng: random.Random | None = None) -> None:
        self._reactor = reactor
        self._providers: dict[str, Provider] = {}
        for provider in providers:
            if provider.name in self._providers:
                raise ValueError(f"duplicate provider name {provider.name!r}")
            self._providers[provider.name] = provider
        self._pool = pool
        self._stats = stats
        self._health = health
        self._config = manager_config
        self._scaling = scaling
        self._downscale_delay = downscale_delay
        self._rng = rng if rng is not None else random.Random()
        self._limits = _limits_of(manager_config)
        base = min(manager_config.check_interval, BACKOFF_CAP)
        self._list_backoff = {n: _Backoff(base=base, cap=BACKOFF_CAP) for n in self._providers}
        self._create_backoff = {n: _Backoff(base=base, cap=BACKOFF_CAP) for n in self._providers}
        self._terminate_backoff = {n: _Backoff(base=base, cap=BACKOFF_CAP) for n in self._providers}
        # Last successful listing per provider, kept while the provider fails.
        self._observed: dict[str, tuple[ProviderInstance, ...]] = {}
        self._records: dict[str, _Record] = {}
        self._round_robin = 0
        # The shortfall last logged as impossible to create (0: none), to log changes only.
        self._shortfall_logged = 0
        self._published: tuple[Endpoint, ...] | None = None
        self._last_signature: tuple = ()
        self._listeners: list[Callable[[str], None]] = []
        # Asleep when required sits at min: the first request then wakes the pool.
        self._awake = scaling.required > scaling.min
        self._last_activity = reactor.seconds()
        self._tick_loop: task.LoopingCall | None = None
        self._health_loop: task.LoopingCall | None = None
        pool.on_activity(self._on_activity)
        pool.on_failure(self._on_instance_failure)

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Start the tick and health loops (each runs once at once)."""
        if self._tick_loop is not None:
            return
        self._last_activity = self._now()
        self._tick_loop = task.LoopingCall(self.tick)
        self._tick_loop.clock = self._reactor
        self._health_loop = task.LoopingCall(self.check_health)
        self._health_loop.clock = self._reactor
        self._tick_loop.start(self._config.check_interval, now=True).addErrback(
            self._log_failure, "tick loop")
        self._health_loop.start(self._config.alive_check_interval, now=True).addErrback(
            self._log_failure, "health loop")

    def stop(self, terminate: bool) -> defer.Deferred:
        """Stop both loops; if ``terminate``, terminate the instances this server created.

        Instances of providers that do not create them (``static``: proxies the user has) are
        released, not terminated: no call is made for them. Providers are not shut down here:
        whoever built them (the composition root) calls their ``shutdown`` afterwards. Fires
        with a ``ShutdownReport``.
        """
        return defer.ensureDeferred(self._stop(terminate))

    async def _stop(self, terminate: bool) -> ShutdownReport:
        for loop in (self._tick_loop, self._health_loop):
            if loop is not None and loop.running:
                loop.stop()
        report = ShutdownReport()
        if terminate:
            released = [r.name for r in sorted(self._records.values(), key=lambda r: r.name)
                        if not self._creates(r.instance.provider)]
            owners = [p for p in self._providers.values() if self._creates(p.name)]
            calls = [defer.ensureDeferred(self._terminate_everything(p)) for p in owners]
            terminated: list[str] = []
            failed: list[str] = []
            for provider, (ok, value) in zip(
                    owners, await defer.DeferredList(calls, consumeErrors=True)):
                if ok and value is not None:
                    terminated.extend(value)
                else:
                    failed.append(provider.name)
            report = ShutdownReport(terminated=tuple(terminated), released=tuple(released),
                                    failed=tuple(failed))
        self._records.clear()
        self._publish()
        return report

    async def _terminate_everything(self, provider: Provider) -> list[str] | None:
        """Terminate what ``provider`` lists; the names, or None if the call failed."""
        try:
            instances = await self._call(provider.list_instances)
        except Exception as exc:
            log.warning("provider %s: listing before shutdown failed (%s); terminating the "
                        "instances seen last", provider.name, _describe(exc))
            instances = self._observed.get(provider.name, ())
        ids = [i.id for i in instances if i.status is not Status.STOPPED]
        if not ids:
            return []
        try:
            await self._call(provider.terminate_instances, ids)
        except Exception as exc:
            log.error("provider %s: terminating %s at shutdown failed: %s",
                      provider.name, ", ".join(ids), _describe(exc))
            return None
        log.info("provider %s: terminated %s at shutdown", provider.name, ", ".join(ids))
        return ids

    # --- the tick ------------------------------------------------------------------------

    def tick(self) -> defer.Deferred:
        """One reconcile pass: observe, plan, execute, publish. Never fails."""
        d = defer.ensureDeferred(self._tick())
        d.addErrback(self._log_failure, "tick")
        return d

    async def _tick(self) -> None:
        await self._observe()
        now = self._now()
        self._update_records(now)
        self._maybe_sleep(now)
        states = [self._state_of(record, now) for record in self._records.values()]
        decision = plan(instances=states, required=self._scaling.required, now=now,
                        limits=self._limits)
        commands = self._execute(decision, now)
        self._publish()
        self._maybe_notify_instances()
        if commands:
            await defer.DeferredList(commands, consumeErrors=True)
            self._maybe_notify_instances()

    async def _observe(self) -> None:
        now = self._now()
        due = [p for p in self._providers.values() if self._list_backoff[p.name].ready(now)]
        calls = [self._call(p.list_instances) for p in due]
        results = await defer.DeferredList(calls, consumeErrors=True)
        for provider, (ok, value) in zip(due, results):
            backoff = self._list_backoff[provider.name]
            if ok:
                if backoff.failures:
                    log.info("provider %s: listing works again", provider.name)
                backoff.succeeded()
                self._observed[provider.name] = tuple(value)
            else:
                error = _describe(value)
                delay = backoff.failed(self._now(), error, retryable=_retryable(value))
                log.warning("provider %s: listing instances failed (%s); retrying in %.1f s",
                            provider.name, error, delay)

    def _update_records(self, now: float) -> None:
        listed: dict[str, ProviderInstance] = {}
        for provider_name in self._providers:
            for instance in self._observed.get(provider_name, ()):
                listed[instance.id] = instance
        for name in list(self._records):
            if name not in listed:
                log.info("instance %s is gone", name)
                del self._records[name]
        for name, instance in listed.items():
            record = self._records.get(name)
            if record is None:
                self._records[name] = _Record(instance=instance, first_seen_at=now,
                                              expires_at=self._draw_expiry(now))
                log.info("instance %s (%s) appeared: %s", name, instance.provider,
                         instance.status.value)
                continue
            if record.instance.address != instance.address:
                # Health so far was about another address; judge the new one afresh.
                record.alive = False
                record.failures = 0
            if record.terminating_since is not None and \
                    now - record.terminating_since >= TERMINATE_RETRY_AFTER:
                record.terminating_since = None
            record.instance = instance

    def _draw_expiry(self, now: float) -> float | None:
        limit = self._config.autorestart
        if limit.max <= 0:
            return None
        return now + self._rng.uniform(limit.min, limit.max)

    def _state_of(self, record: _Record, now: float) -> InstanceState:
        status = record.instance.status
        if record.terminating_since is not None:
            # Asked to terminate already: on its way out whatever the provider still says.
            status = Status.STOPPING
        return InstanceState(
            name=record.name,
            provider=record.instance.provider,
            status=status,
            has_address=record.instance.address is not None,
            alive=record.alive,
            first_seen_at=record.first_seen_at,
            last_alive_at=record.last_alive_at,
            failures=record.failures,
            expires_at=record.expires_at,
            retiring=record.retiring_since is not None,
            retiring_since=record.retiring_since,
            inflight=self._pool.inflight(record.name),
        )

    def _execute(self, decision: Plan, now: float) -> list[defer.Deferred]:
        commands: list[defer.Deferred] = []
        by_provider: dict[str, list[str]] = {}
        for name, reason in decision.terminate:
            record = self._records[name]
            log.info("terminating instance %s: %s", name, _explain(reason, record))
            if reason in (Reason.DEAD, Reason.ERROR):
                # Dead by dead_after may still carry the verdict of its last passing check;
                # the API must not show it alive while it stops.
                record.alive = False
            by_provider.setdefault(record.instance.provider, []).append(name)
        for provider_name, names in by_provider.items():
            # After a failed terminate, the planner asks again every tick: wait out the backoff.
            if self._terminate_backoff[provider_name].ready(now):
                commands.append(self._terminate(provider_name, names))
        for name in decision.retire:
            log.info("instance %s reached its living limit: retiring (draining)", name)
            self._records[name].retiring_since = now
        if decision.create:
            commands.extend(self._create(decision.create, now))
        else:
            self._shortfall_logged = 0
        return commands

    def _creates(self, provider_name: str) -> bool:
        return getattr(self._providers[provider_name], "creates_instances", True)

    def _terminate(self, provider_name: str, names: Sequence[str]) -> defer.Deferred:
        now = self._now()
        for name in names:
            self._records[name].terminating_since = now
        provider = self._providers.get(provider_name)
        if provider is None:
            log.error("instances %s belong to unknown provider %s", ", ".join(names), provider_name)
            return defer.succeed(None)

        backoff = self._terminate_backoff[provider_name]

        def terminated(_: Any) -> None:
            if backoff.failures:
                log.info("provider %s: terminating works again", provider_name)
            backoff.succeeded()

        def failed(failure: Failure) -> None:
            error = _describe(failure)
            delay = backoff.failed(self._now(), error, retryable=_retryable(failure))
            log.warning("provider %s: terminating %s failed (%s); retrying in %.1f s",
                        provider_name, ", ".join(names), error, delay)
            for name in names:
                record = self._records.get(name)
                if record is not None:
                    record.terminating_since = None
            self._notify("instances")

        d = self._call(provider.terminate_instances, list(names))
        d.addCallbacks(terminated, failed)
        return d

    def _create(self, count: int, now: float) -> list[defer.Deferred]:
        # Only on providers that list fine: creating on one we cannot observe would create
        # again on every tick.
        candidates = [
            name for name in self._providers
            if self._creates(name) and self._create_backoff[name].ready(now)
            and name in self._observed and self._list_backoff[name].failures == 0
        ]
        if not candidates:
            # Every tick asks again while the shortfall lasts: say it once per change, not
            # once per tick.
            if count != self._shortfall_logged:
                self._shortfall_logged = count
                log.info("%d instance(s) wanted but no provider can create them now%s", count,
                         "" if any(self._creates(n) for n in self._providers)
                         else " (static proxies only: the pool is their list)")
            return []
        self._shortfall_logged = 0
        start = self._round_robin % len(candidates)
        candidates = candidates[start:] + candidates[:start]
        self._round_robin += 1
        load = {name: 0 for name in candidates}
        for record in self._records.values():
            if record.instance.provider in load and record.terminating_since is None:
                load[record.instance.provider] += 1
        assigned = {name: 0 for name in candidates}
        for _ in range(count):
            # Fewest first; ties go to the earliest in the rotated (round-robin) order.
            name = min(candidates, key=lambda n: load[n])
            load[name] += 1
            assigned[name] += 1
        commands = []
        for name, n in assigned.items():
            if n:
                log.info("provider %s: creating %d instance(s)", name, n)
                commands.append(self._create_on(name, n))
        return commands

    def _create_on(self, provider_name: str, count: int) -> defer.Deferred:
        provider = self._providers[provider_name]
        backoff = self._create_backoff[provider_name]

        def created(_: Any) -> None:
            if backoff.failures:
                log.info("provider %s: creating works again", provider_name)
            backoff.succeeded()

        def failed(failure: Failure) -> None:
            error = _describe(failure)
            delay = backoff.failed(self._now(), error, retryable=_retryable(failure))
            log.warning("provider %s: creating %d instance(s) failed (%s); retrying in %.1f s",
                        provider_name, count, error, delay)
            self._notify("instances")

        d = self._call(provider.create_instances, count)
        d.addCallbacks(created, failed)
        return d

    def _maybe_sleep(self, now: float) -> None:
        if self._awake and now - self._last_activity >= self._downscale_delay:
            self._awake = False
            if self._scaling.required != self._scaling.min:
                log.info("no request for %.0f s: scaling down to %d", now - self._last_activity,
                         self._scaling.min)
                self._set_scaling(Scaling(min=self._scaling.min, required=self._scaling.min,
                                          max=self._scaling.max))

    def _on_activity(self) -> None:
        # Runs on every request through the master: keep it cheap.
        self._last_activity = self._reactor.seconds()
        if not self._awake:
            self._awake = True
            if self._scaling.required != self._scaling.max:
                log.info("request received: waking up, scaling to %d", self._scaling.max)
                self._set_scaling(Scaling(min=self._scaling.min, required=self._scaling.max,
                                          max=self._scaling.max))

    # --- health --------------------------------------------------------------------------

    def check_health(self) -> defer.Deferred:
        """Start one health round over every instance with an address. Never fails.

        The round does not wait for its checks: each verdict lands when its own check answers,
        and the next round starts on time. An instance whose previous check is still in
        flight (a hung instance waits ``check_timeout``) is skipped, so one slow instance
        neither delays the others' verdicts nor piles up checks of its own.
        """
        d = defer.maybeDeferred(self._check_health)
        d.addErrback(self._log_failure, "health round")
        return d

    def _check_health(self) -> None:
        served = self._pool.take_served()
        probes = []
        for record in list(self._records.values()):
            if (record.instance.address is None or record.terminating_since is not None
                    or record.instance.status not in (Status.STARTING, Status.STARTED)
                    or record.checking):
                continue
            if record.alive and record.failures == 0 and record.name in served:
                # It relayed traffic since the last round without a fault: alive, no probe.
                record.last_alive_at = self._now()
                continue
            record.checking = True
            probes.append(record)
        # A large pool is probed in small bursts, not all at once: a thousand connections
        # opened in one reactor turn stall the master's requests for a fifth of a second.
        for start in range(0, len(probes), PROBE_BURST):
            burst = probes[start:start + PROBE_BURST]
            if start == 0:
                self._probe(burst)
            else:
                self._reactor.callLater(PROBE_SPACING * start / PROBE_BURST, self._probe, burst)
        self._publish()
        self._maybe_notify_instances()

    def _probe(self, records: list[_Record]) -> None:
        for record in records:
            if self._records.get(record.name) is not record or record.instance.address is None:
                record.checking = False  # gone (or moved) while it waited for its turn
                continue
            endpoint = record.endpoint()
            d = defer.maybeDeferred(self._health.check, endpoint)
            # The checker has its own timeout; this one only guards against a checker that
            # never answers, which would leave the instance unchecked for good.
            d.addTimeout(self._config.check_timeout + CHECK_TIMEOUT_SLACK, self._reactor)
            d.addCallbacks(self._check_passed, self._check_failed,
                           callbackArgs=(record, endpoint), errbackArgs=(record, endpoint))
            d.addBoth(_checked, record)
            d.addErrback(self._log_failure, "health check")

    def _current(self, record: _Record, endpoint: Endpoint) -> bool:
        # The instance may have gone, or moved, while the check was in flight.
        return self._records.get(record.name) is record and record.instance.address == endpoint.address

    def _check_passed(self, body: str, record: _Record, endpoint: Endpoint) -> None:
        if not self._current(record, endpoint):
            return
        became_alive = not record.alive
        if became_alive:
            log.info("instance %s is alive (fingerprint %s)", record.name, body or "-")
        fingerprint = _as_ip(body)
        changed = became_alive or fingerprint != record.fingerprint
        record.alive = True
        record.failures = 0
        record.last_alive_at = self._now()
        record.check_error = None
        record.fingerprint = fingerprint
        if changed:
            # Only a change reaches the pool and the listeners: both are O(pool), and checks
            # land one by one.
            self._publish()
            self._maybe_notify_instances()

    def _check_failed(self, failure: Failure, record: _Record, endpoint: Endpoint) -> None:
        if not self._current(record, endpoint):
            return
        self._count_failure(record, _describe(failure))

    def _on_instance_failure(self, name: str) -> None:
        record = self._records.get(name)
        if record is None:
            return
        self._count_failure(record, "the master could not reach it")
        self._maybe_notify_instances()

    def _count_failure(self, record: _Record, error: str) -> None:
        if record.terminating_since is not None:
            return  # on its way out: its port closing is expected, not a death to report
        record.failures += 1
        record.check_error = error
        # One failure does not flap an instance out of the pool; a few in a row do.
        if record.alive and record.failures >= self._config.dead_after_failures:
            record.alive = False
            log.warning("instance %s is dead after %d failed checks: %s",
                        record.name, record.failures, error)
            self._publish()
            self._maybe_notify_instances()

    def _publish(self) -> None:
        endpoints = tuple(sorted((r.endpoint() for r in self._records.values() if r.routable),
                                 key=lambda e: e.name))
        if endpoints != self._published:
            self._published = endpoints
            self._pool.publish(endpoints)

    # --- commander facade ----------------------------------------------------------------

    def list_instances(self) -> list[dict[str, Any]]:
        """The instances as the API shows them (DESIGN's shape plus ``retiring``/``error``)."""
        out = []
        for record in sorted(self._records.values(), key=lambda r: r.name):
            instance = record.instance
            status = Status.STOPPING if record.terminating_since is not None else instance.status
            address = instance.address
            out.append({
                "name": record.name,
                "provider": instance.provider,
                "status": status.value,
                "alive": record.alive,
                "fingerprint": record.fingerprint,
                "address": None if address is None else {"hostname": address.hostname,
                                                          "port": address.port},
                "region": instance.region,
                "started_at": record.first_seen_at,
                "requests": self._stats.requests_of(record.name),
                "retiring": record.retiring_since is not None,
                "error": instance.error if instance.error is not None else record.check_error,
            })
        return out

    def get_scaling(self) -> Scaling:
        return self._scaling

    def update_scaling(self, changes: dict[str, Any]) -> Scaling | None:
        """Merge ``changes`` into the scaling; None if nothing changed.

        Raises ``ConfigError`` naming the field for an unknown key or an invalid value. When
        ``required`` is not given but ``min``/``max`` move, ``required`` is clamped into them.
        """
        if not isinstance(changes, dict):
            raise ConfigError("", "scaling changes must be an object")
        for key in changes:
            if key not in SCALING_KEYS:
                raise ConfigError(str(key), f"unknown key (known: {', '.join(SCALING_KEYS)})")
        merged = config_module.merge_scaling(self._scaling.as_dict(), changes)
        config_module.validate_scaling(merged)
        scaling = Scaling(min=merged["min"], required=merged["required"], max=merged["max"])
        if scaling == self._scaling:
            return None
        if "required" in changes:
            # The user's choice holds for a downscale_delay; set to min, the pool sleeps.
            self._last_activity = self._now()
            self._awake = scaling.required > scaling.min
        log.info("scaling changed to min=%d required=%d max=%d",
                 scaling.min, scaling.required, scaling.max)
        self._set_scaling(scaling)
        return scaling

    def stop_instance(self, name: str) -> int:
        """Terminate instance ``name`` now (a replacement follows on the next tick).

        Raises KeyError if no such instance; returns the alive count after.
        """
        record = self._records.get(name)
        if record is None:
            raise KeyError(name)
        if record.terminating_since is None:
            log.info("terminating instance %s: asked through the API", name)
            self._terminate(record.instance.provider, [name])
            self._publish()
            self._maybe_notify_instances()
        return self.alive_count()

    def alive_count(self) -> int:
        return sum(1 for r in self._records.values() if r.routable)

    def provider_errors(self) -> dict[str, str]:
        """The last error of each provider currently failing (listing, creating or terminating)."""
        out = {}
        for name in self._providers:
            error = (self._list_backoff[name].error or self._create_backoff[name].error
                     or self._terminate_backoff[name].error)
            if error is not None:
                out[name] = error
        return out

    def reconfigure(self, *, manager_config: ManagerConfig, downscale_delay: float) -> None:
        """New intervals and limits (``PATCH /api/config``), in force from now on.

        A loop whose next run is further away than its new interval runs after the new
        interval instead. Living limits already drawn stay; new instances draw from the new
        ``autorestart`` range.
        """
        self._config = manager_config
        self._downscale_delay = downscale_delay
        self._limits = _limits_of(manager_config)
        for loop, interval in ((self._tick_loop, manager_config.check_interval),
                               (self._health_loop, manager_config.alive_check_interval)):
            if loop is None or loop.interval == interval:
                continue
            loop.interval = interval
            pending = loop.call
            if pending is not None and pending.active() and \
                    pending.getTime() - self._now() > interval:
                pending.reset(interval)

    def provider_status(self) -> list[dict[str, Any]]:
        """Each provider with its instance counts and, while its calls fail, the error: what
        ``GET /api/providers`` shows, so a capacity or image error is seen outside the log.

        ``error`` is None or ``{action ("list" | "create" | "terminate"), message, since, failures,
        retry_at}`` (times in the reactor's epoch seconds).
        """
        counts = {name: [0, 0] for name in self._providers}
        for record in self._records.values():
            count = counts.get(record.instance.provider)
            if count is not None:
                count[0] += 1
                count[1] += record.routable
        out = []
        for name in self._providers:
            error = None
            for action, backoff in (("list", self._list_backoff[name]),
                                    ("create", self._create_backoff[name]),
                                    ("terminate", self._terminate_backoff[name])):
                if backoff.error is not None:
                    error = {"action": action, "message": backoff.error, "since": backoff.since,
                             "failures": backoff.failures, "retry_at": backoff.until}
                    break
            out.append({"name": name, "instances": counts[name][0], "alive": counts[name][1],
                        "error": error})
        return out

    def on_change(self, listener: Callable[[str], None]) -> None:
        """``listener(kind)`` runs after a change; kind is ``"instances"`` or ``"scaling"``."""
        self._listeners.append(listener)

    # --- internals -----------------------------------------------------------------------

    def _now(self) -> float:
        return self._reactor.seconds()

    def _call(self, fn: Callable[..., Any], *args: Any) -> defer.Deferred:
        d = defer.maybeDeferred(fn, *args)
        d.addTimeout(PROVIDER_CALL_TIMEOUT, self._reactor)
        return d

    def _set_scaling(self, scaling: Scaling) -> None:
        self._scaling = scaling
        self._notify("scaling")

    def _maybe_notify_instances(self) -> None:
        signature = tuple(
            (r.name, r.instance.status, r.instance.address, r.alive, r.fingerprint,
             r.retiring_since is not None, r.terminating_since is not None)
            for r in sorted(self._records.values(), key=lambda r: r.name)
        )
        if signature != self._last_signature:
            self._last_signature = signature
            self._notify("instances")

    def _notify(self, kind: str) -> None:
        for listener in list(self._listeners):
            try:
                listener(kind)
            except Exception:  # a broken listener must not break the loops
                log.exception("change listener failed")

    @staticmethod
    def _log_failure(failure: Failure, what: str) -> None:
        log.error("%s failed: %s", what, failure.getTraceback())


def _limits_of(config: ManagerConfig) -> Limits:
    return Limits(start_timeout=config.start_timeout, dead_after=config.dead_after,
                  dead_after_failures=config.dead_after_failures, drain_grace=config.drain_grace)


def _checked(result: Any, record: _Record) -> Any:
    record.checking = False
    return result


def _describe(error: Failure | BaseException) -> str:
    exc = error.value if isinstance(error, Failure) else error
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _retryable(error: Failure | BaseException) -> bool:
    exc = error.value if isinstance(error, Failure) else error
    return not (isinstance(exc, ProviderError) and not exc.retryable)


def _as_ip(body: str) -> str | None:
    try:
        return str(ipaddress.ip_address(body))
    except ValueError:
        return None


def _explain(reason: Reason, record: _Record) -> str:
    if reason is Reason.DEAD:
        return f"dead ({record.failures} failed checks; last: {record.check_error})"
    if reason is Reason.START_TIMEOUT:
        return "never became alive within the start timeout"
    if reason is Reason.ERROR:
        return f"provider reports an error ({record.instance.error})"
    if reason is Reason.DRAINED:
        return "retired, no request in flight"
    if reason is Reason.DRAIN_TIMEOUT:
        return "retired, drain grace over"
    return "more instances than required"
