"""H11 (auth part): the API answers 401 JSON without the right credentials, echoing nothing."""
from __future__ import annotations

from base64 import b64encode

import pytest

from scrapoxy_server.commander.auth import is_authorized
from tests.commander.conftest import PASSWORD, USERNAME, basic

WRONG = [
    pytest.param({}, id="no-authorization"),
    pytest.param(basic(USERNAME, "wrong-secret-1"), id="wrong-password"),
    pytest.param(basic("intruder-name", PASSWORD), id="wrong-username"),
    pytest.param({"Authorization": b64encode(b"wrong-secret-1").decode()}, id="wrong-bare-password"),
    pytest.param({"Authorization": "Basic !!!not-base64!!!"}, id="garbage-basic"),
    pytest.param({"Authorization": "Bearer " + PASSWORD}, id="other-scheme"),
    pytest.param({"Authorization": "Basic " + b64encode(PASSWORD.encode()).decode()},
                 id="basic-without-username"),
]


@pytest.mark.parametrize("headers", WRONG)
def test_api_refuses_missing_or_wrong_credentials_with_401_json(client, control, headers):
    response = client.get("/api/instances", headers=headers)
    assert response.status_code == 401
    assert response.is_json
    assert response.get_json()["error"] == "auth"
    assert response.headers["WWW-Authenticate"] == 'Basic realm="scrapoxy"'
    body = response.get_data(as_text=True)
    for secret in ("wrong-secret-1", "intruder-name", PASSWORD * 2):
        assert secret not in body
    assert "Authorization" not in body


def test_refused_write_changes_nothing(client, control):
    before = control.get_scaling()
    response = client.patch("/api/scaling", json={"max": 10}, headers=basic(USERNAME, "nope"))
    assert response.status_code == 401
    response = client.post("/api/instances/stop", json={"name": "p1"})
    assert response.status_code == 401
    assert control.get_scaling() == before
    assert control.stopped == []


def test_unknown_api_path_and_event_stream_need_auth_first(client):
    for path in ("/api/nope", "/api/events", "/api"):
        response = client.get(path)
        assert response.status_code == 401, path
        assert response.get_json()["error"] == "auth"


def test_basic_user_password_is_accepted(client, auth):
    response = client.get("/api/instances", headers=auth)
    assert response.status_code == 200


def test_bare_base64_password_of_the_original_scrapoxy_is_accepted(client):
    headers = {"Authorization": b64encode(PASSWORD.encode()).decode()}
    response = client.get("/api/scaling", headers=headers)
    assert response.status_code == 200
    assert response.get_json() == {"min": 1, "required": 1, "max": 3}


def test_basic_scheme_name_is_case_insensitive(client):
    token = b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()
    assert client.get("/api/scaling", headers={"Authorization": f"basic {token}"}).status_code == 200


def test_password_may_hold_colons_and_non_ascii():
    token = b64encode("admin:p:ä:ß".encode()).decode()
    assert is_authorized(f"Basic {token}", username="admin", password="p:ä:ß")
    assert not is_authorized(f"Basic {token}", username="admin", password="p:ä")


def test_gui_requests_get_a_challenge_browsers_do_not_prompt_for(client):
    response = client.get("/api/instances", headers={"X-Requested-With": "XMLHttpRequest"})
    assert response.status_code == 401
    assert not response.headers["WWW-Authenticate"].lower().startswith("basic")


def test_open_paths_need_no_auth(client):
    for path in ("/", "/ip", "/healthz", "/static/app.js", "/static/app.css"):
        with client.get(path) as response:  # closes the static file handle
            assert response.status_code == 200, path


def test_empty_password_is_refused_at_construction():
    from scrapoxy_server.commander.app import create_app
    from tests.commander.fakes import FakeControl

    with pytest.raises(ValueError):
        create_app(control=FakeControl(), call_in_reactor=lambda fn, *a: fn(*a),
                   username="admin", password="")
