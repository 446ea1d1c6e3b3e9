"""CommanderClient (blocking, requests): every API call, auth forms, typed values, errors."""
from __future__ import annotations

import base64
import itertools

import pytest
import requests

from scrapoxy_scrapy.commander import (
    Address,
    CommanderClient,
    CommanderHTTPError,
    CommanderUnavailable,
    Event,
    Instance,
    Scaling,
    api_base_url,
    parse_sse,
)
from scrapoxy_scrapy.reactor_commander import ReactorCommanderClient
from tests.scrapy.fake_commander import FakeCommander

API = "http://127.0.0.1:8889/api"
INSTANCE = {"name": "local-1", "provider": "local", "status": "started", "alive": True,
            "fingerprint": "127.0.0.2", "address": {"hostname": "127.0.0.1", "port": 40001},
            "region": None, "started_at": 1700000000.5, "requests": 12}


@pytest.fixture
def client() -> CommanderClient:
    return CommanderClient(API, username="admin", password="p:w é")


def test_instances_are_typed(client, requests_mock):
    requests_mock.get(f"{API}/instances", json=[INSTANCE, {**INSTANCE, "name": "local-2",
                                                           "alive": False, "address": None}])
    first, second = client.instances()
    assert first == Instance(name="local-1", provider="local", status="started", alive=True,
                             fingerprint="127.0.0.2", address=Address("127.0.0.1", 40001),
                             region=None, started_at=1700000000.5, requests=12)
    assert second.alive is False and second.address is None
    assert [i.name for i in client.alive_instances()] == ["local-1"]


def test_basic_auth_carries_any_character(client, requests_mock):
    requests_mock.get(f"{API}/scaling", json={"min": 1, "required": 1, "max": 3})
    client.scaling()
    header = requests_mock.last_request.headers["Authorization"]
    assert header == "Basic " + base64.b64encode("admin:p:w é".encode()).decode()


def test_password_alone_sends_the_original_bare_form(requests_mock):
    requests_mock.get(f"{API}/scaling", json={"min": 1, "required": 1, "max": 3})
    CommanderClient(API, password="secret").scaling()
    assert requests_mock.last_request.headers["Authorization"] == \
        base64.b64encode(b"secret").decode()


def test_stop_instance_posts_name_and_returns_alive_count(client, requests_mock):
    requests_mock.post(f"{API}/instances/stop", json={"alive": 2})
    assert client.stop_instance("local-1") == 2
    assert requests_mock.last_request.json() == {"name": "local-1"}


def test_stop_unknown_instance_is_a_404_error(client, requests_mock):
    requests_mock.post(f"{API}/instances/stop", status_code=404,
                       json={"error": "not_found", "message": "no instance named 'x'"})
    with pytest.raises(CommanderHTTPError) as caught:
        client.stop_instance("x")
    assert (caught.value.status, caught.value.code) == (404, "not_found")


def test_update_scaling_sends_only_given_fields(client, requests_mock):
    requests_mock.patch(f"{API}/scaling", json={"min": 0, "required": 5, "max": 5})
    assert client.update_scaling(required=5) == Scaling(0, 5, 5)
    assert requests_mock.last_request.json() == {"required": 5}


def test_update_scaling_with_zero_sends_zero(client, requests_mock):
    requests_mock.patch(f"{API}/scaling", json={"min": 0, "required": 0, "max": 5})
    client.update_scaling(min=0, required=0)
    assert requests_mock.last_request.json() == {"min": 0, "required": 0}


def test_update_scaling_unchanged_is_none(client, requests_mock):
    requests_mock.patch(f"{API}/scaling", status_code=204)
    assert client.update_scaling(required=1) is None


def test_invalid_scaling_names_the_field(client, requests_mock):
    requests_mock.patch(f"{API}/scaling", status_code=400,
                        json={"error": "bad_request", "field": "max", "message": "min > max"})
    with pytest.raises(CommanderHTTPError) as caught:
        client.update_scaling(max=-1)
    assert caught.value.field == "max"


def test_wake_sets_required_to_max_and_sleep_to_min(client, requests_mock):
    requests_mock.get(f"{API}/scaling", json={"min": 1, "required": 1, "max": 4})
    patch = requests_mock.patch(f"{API}/scaling", json={"min": 1, "required": 4, "max": 4})
    client.wake()
    assert patch.last_request.json() == {"required": 4}
    client.sleep()
    assert patch.last_request.json() == {"required": 1}


def test_config_stats_and_config_update(client, requests_mock):
    requests_mock.get(f"{API}/config", json={"commander": {"password": "***"}})
    requests_mock.get(f"{API}/stats", json={"global": {"requests": 3}})
    requests_mock.patch(f"{API}/config", json={"manager": {"check_interval": 2.0}})
    assert client.config()["commander"]["password"] == "***"
    assert client.stats()["global"]["requests"] == 3
    assert client.update_config({"manager": {"check_interval": 2.0}}) == \
        {"manager": {"check_interval": 2.0}}


def test_metrics_are_read_next_to_the_api(client, requests_mock):
    requests_mock.get("http://127.0.0.1:8889/metrics", text="scrapoxy_requests_total 3\n")
    assert "scrapoxy_requests_total" in client.metrics()


def test_events_parse_server_sent_events(client, requests_mock):
    body = b": keep-alive\n\nevent: scaling\ndata: {\"required\": 3}\nid: 7\n\ndata: plain\n\n"
    requests_mock.get(f"{API}/events", content=body)
    assert list(itertools.islice(client.events(), 2)) == [
        Event("scaling", {"required": 3}, "7"),
        Event("message", "plain", "7")]  # the last id persists (SSE spec)


def test_events_resume_after_a_drop_from_the_last_event_seen(client, requests_mock):
    streams = requests_mock.get(f"{API}/events", [
        {"content": b"id: 11\nevent: scaling\ndata: {}\n\nid: 12\nevent: stats\ndata: {}\n\n"},
        {"content": b": heartbeat, then the commander restarts\n\n"},
        {"content": b"id: 13\nevent: instances\ndata: []\n\n"},
    ])
    events = client.events(last_event_id="10")
    assert [next(events).id for _ in range(3)] == ["11", "12", "13"]
    assert [r.headers.get("Last-Event-ID") for r in streams.request_history] == \
        ["10", "12", "12"]


def test_events_give_up_after_drops_in_a_row_without_an_event(client, requests_mock):
    streams = requests_mock.get(f"{API}/events", content=b": heartbeat\n\n")
    with pytest.raises(CommanderUnavailable, match="4 times in a row"):
        list(client.events(reconnects=3))
    assert streams.call_count == 4


def test_multiline_sse_data_is_joined():
    assert list(parse_sse(["data: a", "data: b", ""])) == [Event("message", "a\nb")]


def test_unreachable_commander_is_commander_unavailable(client, requests_mock):
    requests_mock.get(f"{API}/instances", exc=requests.ConnectionError("refused"))
    with pytest.raises(CommanderUnavailable):
        client.instances()


def test_non_json_answer_is_commander_unavailable(client, requests_mock):
    requests_mock.get(f"{API}/scaling", text="<html>gui</html>")
    with pytest.raises(CommanderUnavailable):
        client.scaling()


@pytest.mark.parametrize("url", ["http://h:8889", "http://h:8889/", "http://h:8889/api/"])
def test_api_url_forms_mean_the_same_base(url):
    assert api_base_url(url) == "http://h:8889/api"


def test_environment_proxies_are_ignored(monkeypatch, requests_mock):
    monkeypatch.setenv("http_proxy", "http://10.9.9.9:1")
    requests_mock.get(f"{API}/scaling", json={"min": 1, "required": 1, "max": 1})
    assert CommanderClient(API).session.trust_env is False


def test_reactor_client_updates_config_and_reads_metrics(reactor_thread):
    fake = FakeCommander(instances=2).start()
    try:
        client = ReactorCommanderClient(fake.url, username="admin", password="pw")
        assert reactor_thread.call(client.update_config, {"manager": {"check_interval": 2.0}}) \
            == {"manager": {"check_interval": 2.0}}
        assert reactor_thread.call(client.metrics) == "scrapoxy_instances_alive 2\n"
        assert ("PATCH", "/api/config", {"manager": {"check_interval": 2.0}}) in fake.calls
        reactor_thread.call(client.close)
    finally:
        fake.stop()
