"""H11 (instances part): listing, and stopping an instance by name."""
from __future__ import annotations

import pytest

from scrapoxy_server.models import Status


def test_list_instances_answers_the_design_shape(client, auth):
    response = client.get("/api/instances", headers=auth)
    assert response.status_code == 200
    instances = response.get_json()
    assert [i["name"] for i in instances] == ["p1", "p2", "p3"]
    assert set(instances[0]) == {"name", "provider", "status", "alive", "fingerprint", "address",
                                 "region", "started_at", "requests"}
    assert instances[0]["address"] == {"hostname": "127.0.0.1", "port": 3128}
    assert response.headers["Cache-Control"] == "no-store"


def test_status_enums_from_the_facade_are_sent_as_their_value(client, control, auth):
    control.instances["p1"]["status"] = Status.STARTING
    instances = client.get("/api/instances", headers=auth).get_json()
    assert instances[0]["status"] == "starting"


def test_stop_known_instance_answers_alive_count(client, control, auth):
    response = client.post("/api/instances/stop", json={"name": "p1"}, headers=auth)
    assert response.status_code == 200
    assert response.get_json() == {"alive": 1}
    assert control.stopped == ["p1"]


def test_stop_accepts_json_without_content_type(client, control, auth):
    response = client.post("/api/instances/stop", data='{"name": "p2"}', headers=auth)
    assert response.status_code == 200
    assert control.stopped == ["p2"]


def test_stop_unknown_name_is_json_404(client, control, auth):
    response = client.post("/api/instances/stop", json={"name": "nosuch"}, headers=auth)
    assert response.status_code == 404
    assert response.get_json()["error"] == "not_found"
    assert response.get_json()["field"] == "name"
    assert control.stopped == []


@pytest.mark.parametrize("body", [
    pytest.param("{}", id="empty-object"),
    pytest.param('{"name": 3}', id="number"),
    pytest.param('{"name": null}', id="null"),
    pytest.param('{"name": ""}', id="empty-string"),
    pytest.param('{"name": ["p1"]}', id="list"),
    pytest.param('["p1"]', id="not-an-object"),
    pytest.param('{"name": "p1"', id="malformed-json"),
    pytest.param("", id="no-body"),
    pytest.param('{"name": NaN}', id="nan"),
])
def test_stop_with_bad_body_is_400_naming_name(client, control, auth, body):
    response = client.post("/api/instances/stop", data=body, headers=auth,
                           content_type="application/json")
    assert response.status_code == 400
    assert response.get_json()["error"] == "bad_request"
    assert response.get_json()["field"] == "name"
    assert control.stopped == []
