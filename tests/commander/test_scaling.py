"""H12: scaling validation; a refused PATCH names the field and changes nothing."""
from __future__ import annotations

import pytest


@pytest.mark.parametrize(("body", "field"), [
    pytest.param('{"min": 5, "required": 2, "max": 3}', "min", id="min-above-max"),
    pytest.param('{"min": -1}', "min", id="negative"),
    pytest.param('{"max": "ten"}', "max", id="string"),
    pytest.param('{"max": 1e9}', "max", id="float-exponent"),
    pytest.param('{"max": 2.0}', "max", id="float-integral"),
    pytest.param('{"required": true}', "required", id="bool"),
    pytest.param('{"max": null}', "max", id="null"),
    pytest.param('{"max": 1000000000}', "max", id="too-large"),
    pytest.param('{"required": 7}', "required", id="required-above-max"),
    pytest.param('{"max": 0}', "max", id="max-below-min-blames-max"),
    pytest.param('{"maximum": 3}', "maximum", id="unknown-key"),
    pytest.param('[1, 2, 3]', "body", id="array-body"),
    pytest.param('3', "body", id="number-body"),
    pytest.param('{"max": ', "body", id="malformed-json"),
    pytest.param('{"max": Infinity}', "body", id="infinity"),
])
def test_invalid_patch_is_400_naming_the_field_and_scaling_unchanged(client, control, auth,
                                                                     body, field):
    before = client.get("/api/scaling", headers=auth).get_json()
    response = client.patch("/api/scaling", data=body, headers=auth,
                            content_type="application/json")
    assert response.status_code == 400
    error = response.get_json()
    assert error["error"] == "bad_request"
    assert error["field"] == field
    assert error["message"]
    assert client.get("/api/scaling", headers=auth).get_json() == before
    assert control.scaling_updates == []


def test_valid_patch_answers_new_values_then_204_when_unchanged(client, control, auth):
    body = {"min": 1, "required": 2, "max": 2}
    first = client.patch("/api/scaling", json=body, headers=auth)
    assert first.status_code == 200
    assert first.get_json() == body
    second = client.patch("/api/scaling", json=body, headers=auth)
    assert second.status_code == 204
    assert second.get_data() == b""
    assert client.get("/api/scaling", headers=auth).get_json() == body
    assert control.scaling_updates == [body]


def test_partial_patch_keeps_other_fields(client, auth):
    response = client.patch("/api/scaling", json={"required": 3}, headers=auth)
    assert response.status_code == 200
    assert response.get_json() == {"min": 1, "required": 3, "max": 3}


@pytest.mark.parametrize(("start", "body", "after"), [
    pytest.param({"required": 3}, {"max": 2}, {"min": 1, "required": 2, "max": 2},
                 id="lowering-max-below-an-awake-pool"),
    pytest.param({}, {"min": 2}, {"min": 2, "required": 2, "max": 3},
                 id="raising-min-above-a-sleeping-pool"),
    pytest.param({"required": 3}, {"min": 0, "max": 0}, {"min": 0, "required": 0, "max": 0},
                 id="min-and-max-to-zero-stops-spending"),
])
def test_a_required_the_patch_does_not_send_follows_the_new_bounds(client, auth, start, body,
                                                                   after):
    if start:
        assert client.patch("/api/scaling", json=start, headers=auth).status_code == 200
    response = client.patch("/api/scaling", json=body, headers=auth)
    assert response.status_code == 200, response.get_json()
    assert response.get_json() == after
    assert client.get("/api/scaling", headers=auth).get_json() == after


def test_wake_and_sleep_are_plain_required_patches(client, auth):
    assert client.patch("/api/scaling", json={"required": 3}, headers=auth).status_code == 200
    response = client.patch("/api/scaling", json={"required": 1}, headers=auth)
    assert response.get_json() == {"min": 1, "required": 1, "max": 3}


def test_scaling_update_goes_through_call_in_reactor(control):
    from scrapoxy_server.commander.app import create_app
    from tests.commander.conftest import PASSWORD, USERNAME, basic

    calls = []

    def recording_call(fn, *args):
        calls.append(fn)
        return fn(*args)

    app = create_app(control=control, call_in_reactor=recording_call,
                     username=USERNAME, password=PASSWORD)
    client = app.test_client()
    client.patch("/api/scaling", json={"required": 2}, headers=basic(USERNAME, PASSWORD))
    client.get("/api/instances", headers=basic(USERNAME, PASSWORD))
    assert len(calls) == 2
    assert control.get_scaling().required == 2
