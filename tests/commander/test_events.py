"""The event ring and the live feed: ids, catching up after a reconnect, full state."""
from __future__ import annotations

import json

from twisted.internet import task

from scrapoxy_server.commander.events import EventRing, LiveFeed
from scrapoxy_server.stats import Stats
from tests.commander.fakes import FakeControl, instance


def test_events_after_a_known_id_are_exactly_the_missed_ones():
    ring = EventRing(capacity=10, run="r")
    first = ring.publish("scaling", {"min": 1})
    second = ring.publish("instances", [])
    third = ring.publish("scaling", {"min": 2})
    assert ring.since(first.id) == [second, third]
    assert ring.since(third.id) == []


def test_an_id_too_old_foreign_or_malformed_asks_for_the_current_state():
    ring = EventRing(capacity=3, run="r")
    ids = [ring.publish("stats", i).id for i in range(5)]
    assert ring.since(ids[0]) is None  # left the ring
    assert [e.data for e in ring.since(ids[1])] == [2, 3, 4]  # the oldest three: all kept
    assert ring.since("other-3") is None  # an earlier run of the server
    assert ring.since("r-99") is None
    assert ring.since("garbage") is None
    assert ring.since(None) is None


def test_event_encoding_is_one_sse_record():
    ring = EventRing(run="r")
    event = ring.publish("instances", [{"name": "a\nb"}])
    text = event.encode().decode()
    assert text.startswith("id: r-1\nevent: instances\ndata: ")
    assert text.endswith("\n\n") and text.count("\n") == 4
    assert json.loads(text.split("data: ", 1)[1]) == [{"name": "a\nb"}]


def test_feed_publishes_manager_changes_and_stats_samples():
    clock = task.Clock()
    control = FakeControl(instances=[instance("p1"), instance("p2")])
    feed = LiveFeed(clock=clock, stats=Stats(), config_view=lambda: {"commander": {"password": "***"}},
                    run="r")
    received = []
    feed.events.subscribe(received.append)
    feed.start(control)
    control.stop_instance("p1")
    control.update_scaling({"required": 2})
    clock.advance(1)
    assert [e.kind for e in received] == ["instances", "scaling", "stats"]
    assert [i["name"] for i in received[0].data] == ["p2"]
    assert received[1].data == {"min": 1, "required": 2, "max": 3}
    assert feed.stats.instances_stopped == 1


def test_current_state_covers_every_kind_with_the_latest_id():
    clock = task.Clock()
    feed = LiveFeed(clock=clock, stats=Stats(), config_view=lambda: {"x": 1}, run="r")
    feed.start(FakeControl(instances=[instance("p1")]))
    clock.advance(1)
    current = feed.current()
    assert [e.kind for e in current] == ["instances", "scaling", "config", "stats"]
    assert {e.id for e in current} == {feed.events.last_id}
