"""``GET /api/providers``, the ``providers`` event and the provider metrics: a provider that
cannot create instances is visible outside the server log."""
from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import task

from scrapoxy_server.commander.app import create_app
from scrapoxy_server.commander.events import LiveFeed
from scrapoxy_server.stats import Stats
from tests.commander.conftest import PASSWORD, USERNAME, basic, direct_call
from tests.commander.fakes import FakeControl, FakeControlWithProviders, provider

AUTH = basic(USERNAME, PASSWORD)
CAPACITY = ("ProviderError: You have requested more vCPU capacity than your current vCPU "
            "limit of 1 allows (VcpuLimitExceeded)")


def app_for(control, live=None):
    return create_app(control=control, call_in_reactor=direct_call, username=USERNAME,
                      password=PASSWORD, live=live)


def test_providers_lists_each_provider_with_its_error_and_when_it_began():
    control = FakeControlWithProviders(providers=[
        provider("aws", error=CAPACITY), provider("mine", type="static", instances=2, alive=2)])
    response = app_for(control).test_client().get("/api/providers", headers=AUTH)
    assert response.status_code == 200
    aws, mine = response.json
    assert aws == {"name": "aws", "type": "awsec2", "instances": 0, "alive": 0,
                   "error": {"action": "create", "message": CAPACITY, "since": 1_700_000_000.0,
                             "failures": 2, "retry_at": 1_700_000_060.0}}
    assert mine["error"] is None and mine["instances"] == 2


def test_providers_needs_auth():
    control = FakeControlWithProviders(providers=[provider("aws", error=CAPACITY)])
    response = app_for(control).test_client().get("/api/providers")
    assert response.status_code == 401 and "VcpuLimit" not in response.text


def test_provider_error_messages_never_show_a_url_password():
    control = FakeControlWithProviders(providers=[provider(
        "aws", error="EndpointConnectionError: http://key:EndpointSecret@127.0.0.1:9/ refused")])
    response = app_for(control).test_client().get("/api/providers", headers=AUTH)
    assert "EndpointSecret" not in response.text
    assert "http://key:***@127.0.0.1:9/" in response.json[0]["error"]["message"]


def test_providers_is_json_404_when_the_facade_has_no_provider_status():
    response = app_for(FakeControl()).test_client().get("/api/providers", headers=AUTH)
    assert response.status_code == 404 and response.json["error"] == "not_found"


def test_a_provider_error_is_published_once_when_it_appears_and_when_it_clears():
    clock = task.Clock()
    control = FakeControlWithProviders(providers=[provider("aws")])
    feed = LiveFeed(clock=clock, stats=Stats(), run="r")
    feed.start(control)
    published = []
    feed.events.subscribe(lambda event: published.append(event) if event.kind == "providers"
                          else None)
    clock.advance(1)
    clock.advance(1)
    assert [e.data[0]["error"] for e in published] == [None]
    control.providers = [provider("aws", error=CAPACITY)]
    clock.advance(1)
    clock.advance(1)
    assert len(published) == 2 and published[-1].data[0]["error"]["message"] == CAPACITY
    assert "providers" in [e.kind for e in feed.current()]
    control.providers = [provider("aws", instances=1)]
    clock.advance(1)
    assert len(published) == 3 and published[-1].data[0]["error"] is None


def test_metrics_show_which_provider_is_down_and_since_when():
    control = FakeControlWithProviders(providers=[
        provider("aws", error=CAPACITY), provider("mine", type="static", instances=2, alive=1)])
    live = LiveFeed(clock=task.Clock(), stats=Stats(), run="r")
    live.start(control)
    text = app_for(control, live).test_client().get("/metrics", headers=AUTH).text
    value = {(s.name, tuple(sorted(s.labels.items()))): s.value
             for f in text_string_to_metric_families(text) for s in f.samples}
    aws = (("provider", "aws"), ("type", "awsec2"))
    mine = (("provider", "mine"), ("type", "static"))
    assert value[("scrapoxy_provider_up", aws)] == 0
    assert value[("scrapoxy_provider_up", mine)] == 1
    assert value[("scrapoxy_provider_instances", mine)] == 2
    assert value[("scrapoxy_provider_instances_alive", mine)] == 1
    assert value[("scrapoxy_provider_failing_since_seconds",
                  (("action", "create"), *aws))] == 1_700_000_000.0
