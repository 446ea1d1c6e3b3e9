"""``PATCH /api/config`` and ``/metrics``."""
from __future__ import annotations

from base64 import b64encode

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import task

from scrapoxy_server.commander.app import create_app
from scrapoxy_server.commander.events import LiveFeed
from scrapoxy_server.config import Config, ConfigError, merge, to_dict
from scrapoxy_server.stats import Stats
from tests.commander.conftest import PASSWORD, USERNAME, basic, direct_call
from tests.commander.fakes import FakeControl, instance


class ConfigHolder:
    """What the composition root provides: the config, updated by ``config.merge``."""

    def __init__(self) -> None:
        self.config = Config()
        self.updates: list[dict] = []

    def view(self) -> dict:
        return to_dict(self.config)

    def update(self, patch: dict) -> dict | None:
        self.updates.append(patch)
        before, self.config = self.config, merge(self.config, patch)
        return None if self.config == before else to_dict(self.config)


@pytest.fixture
def holder() -> ConfigHolder:
    holder = ConfigHolder()
    holder.config = merge(holder.config, {"commander": {"password": "s3cret"}})
    return holder


@pytest.fixture
def feed() -> LiveFeed:
    return LiveFeed(clock=task.Clock(), stats=Stats(), run="r")


@pytest.fixture
def client(holder, feed):
    control = FakeControl(instances=[instance("p1"), instance("p2", alive=False)])
    feed.start(control)
    app = create_app(control=control, call_in_reactor=direct_call, username=USERNAME,
                     password=PASSWORD, config_view=holder.view, config_update=holder.update,
                     live=feed)
    return app.test_client()


AUTH = basic(USERNAME, PASSWORD)


def test_config_patch_answers_the_new_redacted_config_and_publishes_it(client, holder, feed):
    events = []
    feed.events.subscribe(events.append)
    response = client.patch("/api/config", json={"master": {"idle_timeout": 30.0}}, headers=AUTH)
    assert response.status_code == 200
    assert response.json["master"]["idle_timeout"] == 30.0
    assert response.json["commander"]["password"] == "***"
    assert "s3cret" not in response.text
    assert [e.kind for e in events] == ["config"]
    assert "s3cret" not in str(events[0].data)


def test_config_patch_that_changes_nothing_is_204(client):
    response = client.patch("/api/config", json={"master": {"idle_timeout": 60.0}}, headers=AUTH)
    assert response.status_code == 204


@pytest.mark.parametrize("patch, field", [
    ({"scaling": {"min": 5, "max": 3}}, "scaling.min"),
    ({"master": {"port": "x"}}, "master.port"),
    ({"nosuch": 1}, "nosuch"),
])
def test_invalid_config_patch_is_400_naming_the_key_path(client, holder, patch, field):
    before = holder.config
    response = client.patch("/api/config", json=patch, headers=AUTH)
    assert response.status_code == 400
    assert response.json["error"] == "bad_request"
    assert response.json["field"] == field
    assert holder.config == before


def test_config_patch_body_must_be_an_object(client):
    response = client.patch("/api/config", data="[1]", headers=AUTH)
    assert response.status_code == 400 and response.json["field"] == "body"


def test_redacted_secret_sent_back_means_unchanged(client, holder):
    response = client.patch("/api/config", json={"commander": {"password": "***",
                                                               "username": "ops"}},
                            headers=AUTH)
    assert response.status_code == 200
    assert holder.config.commander.password == "s3cret"
    assert holder.updates[-1] == {"commander": {"username": "ops"}}


def test_config_patch_without_an_updater_is_json_404():
    app = create_app(control=FakeControl(), call_in_reactor=direct_call, username=USERNAME,
                     password=PASSWORD)
    response = app.test_client().patch("/api/config", json={}, headers=AUTH)
    assert response.status_code == 404 and response.json["error"] == "not_found"


def test_config_error_names_its_path():
    assert ConfigError("scaling.min", "bad").path == "scaling.min"


def test_metrics_need_auth_and_accept_basic_and_the_bare_password(client):
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=basic(USERNAME, "wrong")).status_code == 401
    assert client.get("/metrics", headers=AUTH).status_code == 200
    bare = {"Authorization": b64encode(PASSWORD.encode()).decode()}
    assert client.get("/metrics", headers=bare).status_code == 200


def test_metrics_parse_as_prometheus_text_with_the_traffic(client, feed):
    for error in (None, None, "upstream"):
        feed.stats.record(instance="p1", status=200, error=error, bytes_in=50, bytes_out=5,
                          duration=0.02)
    response = client.get("/metrics", headers=AUTH)
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    value = {(s.name, tuple(sorted(s.labels.items()))): s.value
             for f in families.values() for s in f.samples}
    assert value[("scrapoxy_requests_total", ())] == 3
    assert value[("scrapoxy_errors_total", (("kind", "upstream"),))] == 1
    assert value[("scrapoxy_bytes_in_total", ())] == 150
    assert value[("scrapoxy_instance_requests_total", (("instance", "p1"),))] == 3
    assert value[("scrapoxy_request_duration_seconds_bucket", (("le", "0.025"),))] == 3
    assert value[("scrapoxy_request_duration_seconds_count", ())] == 3
    assert value[("scrapoxy_instances_alive", ())] == 1
    assert value[("scrapoxy_instances", (("provider", "local"), ("status", "started")))] == 2
    assert value[("scrapoxy_scaling", (("bound", "max"),))] == 3
    assert families["scrapoxy_request_duration_seconds"].type == "histogram"


def test_metrics_live_in_their_own_registry(client):
    client.get("/metrics", headers=AUTH)
    assert REGISTRY.get_sample_value("scrapoxy_requests_total") is None


def test_stats_view_serves_the_window_and_filters_by_since(client, feed):
    feed.sampler.sample()
    t = feed.sampler.sample()["t"]
    body = client.get("/api/stats", headers=AUTH).json
    assert body["interval"] == 1.0 and len(body["samples"]) == 2
    assert "totals" in body
    assert client.get(f"/api/stats?since={t}", headers=AUTH).json["samples"] == []
    response = client.get("/api/stats?since=nan", headers=AUTH)
    assert response.status_code == 400 and response.json["field"] == "since"


def test_api_answers_503_until_the_manager_is_handed_over():
    app = create_app(control=None, call_in_reactor=direct_call, username=USERNAME,
                     password=PASSWORD)
    client = app.test_client()
    response = client.get("/api/instances", headers=AUTH)
    assert response.status_code == 503 and response.json["error"] == "starting"
    app.set_control(FakeControl(instances=[instance("p1")]))
    assert client.get("/api/instances", headers=AUTH).json[0]["name"] == "p1"
