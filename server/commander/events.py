"""The commander's live feed: numbered events in a bounded ring, and who listens to them.

Every event carries the *whole* current state of its kind (the instance list, the scaling,
the redacted config, the providers with their errors) or one stats sample, so a client that reconnects with
``Last-Event-ID`` and gets the events it missed is up to date; when its id is too old for
the ring (or from an earlier run of the server), it gets the current state of every kind
instead, which is just as complete.

Ids are ``<run>-<sequence>``: the run part changes at every start, so an id from before a
restart is recognised as foreign rather than compared with new sequence numbers.

``LiveFeed`` turns what happens in the server into events: manager changes
(``on_change``), stats samples, config changes made through the API. Everything here runs
on the reactor thread.
"""
from __future__ import annotations

import json
import logging
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from scrapoxy_server.stats import Stats, StatsSampler

from .api_providers import shown_provider_status

log = logging.getLogger(__name__)

KINDS = ("instances", "scaling", "config", "stats", "providers")


@dataclass(frozen=True)
class Event:
    id: str
    kind: str
    data: Any

    def encode(self) -> bytes:
        """The event in the ``text/event-stream`` format."""
        payload = json.dumps(self.data, separators=(",", ":"), default=_jsonable)
        # JSON never holds a raw newline, so the data fits one ``data:`` line.
        return f"id: {self.id}\nevent: {self.kind}\ndata: {payload}\n\n".encode("utf-8")


def _jsonable(value: Any) -> Any:
    enum_value = getattr(value, "value", None)
    if enum_value is not None:
        return enum_value
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


Listener = Callable[[Event], None]


class EventRing:
    """The last ``capacity`` events, numbered, and the listeners of new ones."""

    def __init__(self, *, capacity: int = 1000, run: str | None = None) -> None:
        self.run = run if run is not None else secrets.token_hex(4)
        self._events: deque[Event] = deque(maxlen=capacity)
        self._latest: dict[str, Event] = {}
        self._sequence = 0
        self._listeners: list[Listener] = []

    @property
    def last_id(self) -> str:
        return f"{self.run}-{self._sequence}"

    def publish(self, kind: str, data: Any) -> Event:
        self._sequence += 1
        event = Event(id=self.last_id, kind=kind, data=data)
        self._events.append(event)
        self._latest[kind] = event
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # noqa: BLE001 - one broken stream must not stop the others
                log.exception("event listener failed")
        return event

    def since(self, last_id: str | None) -> list[Event] | None:
        """Events after ``last_id``; None when they are not all in the ring any more (or
        the id is unknown): the caller then needs the current state instead."""
        if last_id is None:
            return None
        run, _, number = last_id.strip().rpartition("-")
        if run != self.run or not number.isdigit():
            return None
        sequence = int(number)
        if sequence > self._sequence:
            return None
        if sequence == self._sequence:
            return []
        oldest = self._sequence - len(self._events) + 1
        if sequence + 1 < oldest:
            return None
        return list(self._events)[sequence + 1 - oldest:]

    def latest(self) -> dict[str, Event]:
        return dict(self._latest)

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        try:
            self._listeners.remove(listener)
        except ValueError:
            pass

    @property
    def listener_count(self) -> int:
        return len(self._listeners)


class LiveFeed:
    """What the commander shows live: the event ring, the stats sampler, the current state.

    Built by the composition root; ``start(control)`` subscribes to the manager and starts
    sampling, ``stop()`` stops sampling. ``config_view`` must return redacted config.
    """

    def __init__(self, *, clock: Any, stats: Stats, config_view: Callable[[], dict] | None = None,
                 window: float = 900.0, interval: float = 1.0, capacity: int = 1000,
                 run: str | None = None) -> None:
        self.clock = clock
        self.stats = stats
        self.events = EventRing(capacity=capacity, run=run)
        self.sampler = StatsSampler(stats=stats, clock=clock, window=window, interval=interval)
        self.sampler.on_sample(self._sampled)
        self.config_view = config_view
        self.control: Any = None
        self._providers: list[dict] | None = None

    def start(self, control: Any) -> None:
        """Follow ``control`` (the manager facade) and start sampling every second."""
        self.control = control
        on_change = getattr(control, "on_change", None)
        if on_change is not None:
            on_change(self.changed)
        self.stats.track_instances([i["name"] for i in control.list_instances()],
                                   now=self.clock.seconds())
        self.sampler.start()

    def stop(self) -> None:
        self.sampler.stop()

    def _sampled(self, sample: dict) -> None:
        self.events.publish("stats", sample)
        # Provider errors change without an instance change (a listing that fails): look
        # once per sample, publish only what changed.
        self._check_providers()

    def _check_providers(self) -> None:
        if self.control is None:
            return
        providers = shown_provider_status(self.control)
        if providers is not None and providers != self._providers:
            self._providers = providers
            self.events.publish("providers", providers)

    def changed(self, kind: str) -> None:
        """The manager's change listener: publish the new state of ``kind``."""
        if kind == "instances":
            instances = self.control.list_instances()
            self.stats.track_instances([i["name"] for i in instances], now=self.clock.seconds())
            self.events.publish("instances", instances)
            self._check_providers()
        elif kind == "scaling":
            self.events.publish("scaling", self.control.get_scaling().as_dict())
        elif kind == "config" and self.config_view is not None:
            self.config_changed(self.config_view())

    def config_changed(self, config: dict) -> None:
        self.events.publish("config", config)

    def current(self) -> list[Event]:
        """The current state of every kind, as events carrying the latest id: what a client
        gets on a fresh connection, or when what it missed has left the ring."""
        last_id = self.events.last_id
        out = []
        if self.control is not None:
            out.append(Event(last_id, "instances", self.control.list_instances()))
            out.append(Event(last_id, "scaling", self.control.get_scaling().as_dict()))
        if self.config_view is not None:
            out.append(Event(last_id, "config", self.config_view()))
        if self.control is not None:
            providers = shown_provider_status(self.control)
            if providers is not None:
                out.append(Event(last_id, "providers", providers))
        stats = self.events.latest().get("stats")
        if stats is not None:
            out.append(Event(last_id, "stats", stats.data))
        return out

    def stats_view(self, since: float | None = None) -> dict:
        return self.sampler.view(since=since)
