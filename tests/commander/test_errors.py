"""Every answer under /api is JSON, errors included; the GUI's HTML never leaks there."""
from __future__ import annotations

import pytest

from scrapoxy_server.commander.app import create_app
from tests.commander.conftest import PASSWORD, USERNAME


@pytest.mark.parametrize("path", ["/api/nope", "/api/instances/nope", "/api/", "/api"])
def test_unknown_api_path_is_json_404(client, auth, path):
    response = client.get(path, headers=auth)
    assert response.status_code == 404
    assert response.is_json
    assert response.get_json()["error"] == "not_found"
    assert response.get_json()["message"] == f"no API endpoint at {path}"
    assert "<html" not in response.get_data(as_text=True).lower()


def test_wrong_method_is_json_405_with_allow(client, auth):
    response = client.delete("/api/scaling", headers=auth)
    assert response.status_code == 405
    assert response.get_json()["error"] == "method_not_allowed"
    assert response.headers["Allow"] == "GET, HEAD, OPTIONS, PATCH"
    assert response.get_json()["message"] == ("DELETE is not allowed on /api/scaling "
                                              "(allowed: GET, HEAD, OPTIONS, PATCH)")


def test_options_is_204_with_allow_and_no_html(client, auth):
    response = client.options("/api/scaling", headers=auth)
    assert response.status_code == 204
    assert response.headers["Allow"] == "GET, HEAD, OPTIONS, PATCH"  # as a 405 says it
    assert "Content-Type" not in response.headers
    assert response.get_data() == b""


def test_options_without_credentials_is_json_401(client):
    response = client.options("/api/scaling")
    assert response.status_code == 401
    assert response.get_json()["error"] == "auth"
    assert "Allow" not in response.headers


def test_get_on_stop_is_json_405(client, auth):
    response = client.get("/api/instances/stop", headers=auth)
    assert response.status_code == 405
    assert response.is_json


def test_oversized_body_is_json_413(client, auth):
    response = client.patch("/api/scaling", data=b"{" + b" " * (2 * 1024 * 1024) + b"}",
                            headers=auth, content_type="application/json")
    assert response.status_code == 413
    assert response.get_json()["error"] == "too_large"


class BrokenControl:
    def list_instances(self):
        raise RuntimeError("secret internals /etc/scrapoxy.toml")


def test_unexpected_failure_is_json_500_without_internals(auth):
    app = create_app(control=BrokenControl(), call_in_reactor=lambda fn, *a: fn(*a),
                     username=USERNAME, password=PASSWORD)
    response = app.test_client().get("/api/instances", headers=auth)
    assert response.status_code == 500
    assert response.get_json()["error"] == "internal"
    assert "secret" not in response.get_data(as_text=True)


def test_config_view_is_served_as_given(client, auth):
    response = client.get("/api/config", headers=auth)
    assert response.status_code == 200
    assert response.get_json() == {"commander": {"password": "***"}}


def test_stats_view_is_served_as_given(client, auth):
    response = client.get("/api/stats", headers=auth)
    assert response.get_json() == {"global": {"requests": 3}}


def test_missing_views_are_json_404(control, auth):
    app = create_app(control=control, call_in_reactor=lambda fn, *a: fn(*a),
                     username=USERNAME, password=PASSWORD)
    for path in ("/api/config", "/api/stats"):
        response = app.test_client().get(path, headers=auth)
        assert response.status_code == 404
        assert response.get_json()["error"] == "not_found"


def test_unknown_page_outside_api_is_not_json(client):
    response = client.get("/nope")
    assert response.status_code == 404
    assert not response.is_json
