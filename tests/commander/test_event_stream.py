"""``GET /api/events`` over a real loopback socket, served by Twisted beside the WSGI app."""
from __future__ import annotations

import pytest
import requests

from tests.commander.fakes import FakeControl, instance
from tests.commander.served import serve_commander
from tests.commander.sse_client import EventStream


@pytest.fixture
def served(reactor_thread):
    control = FakeControl(instances=[instance("p1"), instance("p2"), instance("p3")])
    with serve_commander(reactor_thread, control,
                         config_view=lambda: {"commander": {"password": "***"}},
                         threads=2, heartbeat=0.2) as served:
        yield served


def test_stream_refuses_missing_and_wrong_credentials_with_json_401(served):
    session = requests.Session()
    session.trust_env = False
    response = session.get(f"{served.base}/api/events", timeout=5)
    assert response.status_code == 401
    assert response.json()["error"] == "auth"
    response = session.get(f"{served.base}/api/events", auth=("admin", "nope"), timeout=5)
    assert response.status_code == 401
    assert "nope" not in response.text
    # The same protective headers as every other commander answer.
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]


def test_fresh_stream_starts_with_the_current_state_then_follows_changes(served):
    session = served.session()
    stream = EventStream(session, f"{served.base}/api/events")
    try:
        assert stream.response.headers["Content-Type"].startswith("text/event-stream")
        assert [stream.next_event().kind for _ in range(3)] == ["instances", "scaling", "config"]
        assert stream.retry == 2000

        response = session.patch(f"{served.base}/api/scaling", json={"required": 3}, timeout=5)
        assert response.status_code == 200
        event = stream.until("scaling")
        assert event.data == {"min": 1, "required": 3, "max": 3}

        session.post(f"{served.base}/api/instances/stop", json={"name": "p2"}, timeout=5)
        event = stream.until("instances")
        assert [i["name"] for i in event.data] == ["p1", "p3"]

        event = stream.until("stats")  # the sampler publishes one every second
        assert "global" in event.data
    finally:
        stream.close()


def test_reconnecting_with_last_event_id_delivers_exactly_what_was_missed(served):
    session = served.session()
    stream = EventStream(session, f"{served.base}/api/events")
    for _ in range(3):
        stream.next_event()
    session.patch(f"{served.base}/api/scaling", json={"required": 2}, timeout=5)
    stream.until("scaling")
    last_id = stream.last_id
    stream.close()

    # Changes while the client is away.
    session.post(f"{served.base}/api/instances/stop", json={"name": "p1"}, timeout=5)
    session.patch(f"{served.base}/api/scaling", json={"required": 3}, timeout=5)

    again = EventStream(session, f"{served.base}/api/events", last_event_id=last_id)
    try:
        missed = []
        while len(missed) < 2:
            event = again.next_event()
            if event.kind != "stats":
                missed.append(event)
        assert [e.kind for e in missed] == ["instances", "scaling"]
        assert [i["name"] for i in missed[0].data] == ["p2", "p3"]
        assert missed[1].data["required"] == 3
        # Numbered after the id the client had.
        assert int(missed[0].id.rsplit("-", 1)[1]) > int(last_id.rsplit("-", 1)[1])
    finally:
        again.close()


def test_an_id_from_before_a_restart_gets_the_full_current_state(served):
    stream = EventStream(served.session(), f"{served.base}/api/events",
                         last_event_id="deadbeef-12")
    try:
        assert [stream.next_event().kind for _ in range(3)] == ["instances", "scaling", "config"]
    finally:
        stream.close()


def test_idle_streams_get_heartbeats(served):
    stream = EventStream(served.session(), f"{served.base}/api/events")
    try:
        stream.until("stats")
        stream.until("stats")
        assert stream.comments >= 1  # heartbeat every 0.2 s here, samples every 1 s
    finally:
        stream.close()


def test_open_streams_do_not_hold_wsgi_threads(served):
    # The pool has 2 threads; 6 open streams must leave the API answering.
    streams = [EventStream(served.session(), f"{served.base}/api/events") for _ in range(6)]
    try:
        for stream in streams:
            stream.next_event()
        response = served.session().get(f"{served.base}/api/instances", timeout=5)
        assert response.status_code == 200
    finally:
        for stream in streams:
            stream.close()


def test_closed_streams_are_forgotten(served, reactor_thread):
    from tests.support import wait_until

    stream = EventStream(served.session(), f"{served.base}/api/events")
    stream.next_event()
    events = served.site.resource.events
    assert reactor_thread.call(lambda: events.stream_count) == 1
    stream.close()
    wait_until(lambda: reactor_thread.call(lambda: events.stream_count) == 0, timeout=5,
               message="the closed stream to be forgotten")


def test_paths_near_the_stream_still_reach_flask(served):
    session = served.session()
    response = session.get(f"{served.base}/api/events/extra", timeout=5)
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    assert session.get(f"{served.base}/api/scaling", timeout=5).json()["max"] == 3


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "BREW"])
def test_other_methods_on_the_stream_get_json_405_with_allow(served, method):
    session = served.session()
    response = session.request(method, f"{served.base}/api/events", timeout=5)
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, OPTIONS"
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["error"] == "method_not_allowed"


def test_options_on_the_stream_is_204_with_allow_and_no_body(served):
    response = served.session().options(f"{served.base}/api/events", timeout=5)
    assert response.status_code == 204
    assert response.headers["Allow"] == "GET, OPTIONS"
    assert "Content-Type" not in response.headers
    assert response.content == b""


def test_other_methods_on_the_stream_without_auth_get_json_401_first(served):
    session = requests.Session()
    session.trust_env = False
    response = session.post(f"{served.base}/api/events", timeout=5)
    assert response.status_code == 401
    assert response.json()["error"] == "auth"
    assert "Allow" not in response.headers
