"""``POST /api/instances/stop`` with ``{"session": TOKEN}``: stop the instance that CONNECT
session TOKEN tunnels through (how the Scrapy middleware reports a ban in CONNECT mode)."""
from __future__ import annotations

import pytest

from scrapoxy_server.commander.app import create_app
from tests.commander.conftest import PASSWORD, USERNAME, direct_call


@pytest.fixture
def sessions() -> dict[str, str]:
    return {"tok-1": "p2", "tok-gone": "p9"}


@pytest.fixture
def client(control, sessions):
    app = create_app(control=control, call_in_reactor=direct_call, username=USERNAME,
                     password=PASSWORD, session_instance=sessions.get)
    return app.test_client()


def test_stop_by_session_stops_its_instance_and_names_it(client, control, auth):
    response = client.post("/api/instances/stop", json={"session": "tok-1"}, headers=auth)
    assert response.status_code == 200
    assert response.get_json() == {"alive": 1, "name": "p2"}
    assert control.stopped == ["p2"]


def test_stop_by_unknown_session_is_json_404(client, control, auth):
    response = client.post("/api/instances/stop", json={"session": "nosuch"}, headers=auth)
    assert response.status_code == 404
    assert response.get_json()["error"] == "not_found"
    assert "nosuch" in response.get_json()["message"]
    assert control.stopped == []


def test_stop_by_session_whose_instance_is_gone_is_json_404(client, control, auth):
    response = client.post("/api/instances/stop", json={"session": "tok-gone"}, headers=auth)
    assert response.status_code == 404
    assert "p9" in response.get_json()["message"]
    assert control.stopped == []


@pytest.mark.parametrize("body", [
    pytest.param({"session": ""}, id="empty"),
    pytest.param({"session": 7}, id="number"),
    pytest.param({"session": None}, id="null"),
    pytest.param({"session": "x" * 257}, id="too-long"),
    pytest.param({"session": "tok-1", "name": "p1"}, id="both"),
])
def test_stop_with_bad_session_is_400_naming_session(client, control, auth, body):
    response = client.post("/api/instances/stop", json=body, headers=auth)
    assert response.status_code == 400
    assert response.get_json()["field"] == "session"
    assert control.stopped == []


def test_stop_by_session_without_a_session_map_is_404(control, auth):
    app = create_app(control=control, call_in_reactor=direct_call, username=USERNAME,
                     password=PASSWORD)
    response = app.test_client().post("/api/instances/stop", json={"session": "tok-1"},
                                      headers=auth)
    assert response.status_code == 404
    assert control.stopped == []
