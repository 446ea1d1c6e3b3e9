"""``PATCH /api/config`` and ``PATCH /api/scaling`` as the server wires them: refusals that
name the key without echoing secrets, and changes that are saved before the answer."""
from __future__ import annotations

import json

import pytest
from twisted.internet import defer

from scrapoxy_server.commander.app import create_app
from scrapoxy_server.config import Config, from_dict, merge, to_dict
from scrapoxy_server.facade import CommanderFacade
from scrapoxy_server.state import StateKeeper, StateStore, StateWriteError
from tests.commander.conftest import PASSWORD, USERNAME, basic, direct_call
from tests.commander.fakes import FakeControl

AUTH = basic(USERNAME, PASSWORD)


class Holder:
    def __init__(self, config: Config) -> None:
        self.config = config

    def view(self) -> dict:
        return to_dict(self.config)

    def update(self, patch: dict) -> dict | None:
        before, self.config = self.config, merge(self.config, patch)
        return None if self.config == before else self.view()


@pytest.fixture
def holder():
    return Holder(from_dict({"master": {"auth": {"username": "u", "password": "hunter2-secret"}},
                             "providers": [{"type": "static", "name": "mine",
                                            "proxies": ["http://bob:TopSecretStatic@127.0.0.1:3999"]}]}))


@pytest.fixture
def client(holder):
    app = create_app(control=FakeControl(), call_in_reactor=direct_call, username=USERNAME,
                     password=PASSWORD, config_view=holder.view, config_update=holder.update)
    return app.test_client()


def test_get_config_never_shows_a_proxy_password(client):
    response = client.get("/api/config", headers=AUTH)
    assert "TopSecretStatic" not in response.text and "hunter2" not in response.text
    assert response.json["providers"][0]["proxies"] == ["http://bob:***@127.0.0.1:3999"]


@pytest.mark.parametrize("body, field", [
    ('{"master": {"auth": {"password": ["hunter2-secret"]}}}', "master.auth.password"),
    ('{"master": {"auth": "u:hunter2-secret"}}', "master.auth"),
    ('{"providers": [{"type": "static", "name": "mine", '
     '"proxies": ["http://bob:hunter2-secret@127.0.0.1:0"]}]}', "providers[0].proxies[0]"),
    ('{"master": {"auth": {"username": "u:x", "password": "hunter2-secret"}}}',
     "master.auth.username"),
])
def test_a_refused_secret_is_named_but_never_echoed(client, body, field):
    response = client.patch("/api/config", data=body, headers=AUTH)
    assert response.status_code == 400 and response.json["field"] == field
    assert "hunter2" not in response.text


def test_an_overflowing_number_is_refused_and_the_config_stays_valid_json(client, holder):
    response = client.patch("/api/config", data='{"manager": {"check_interval": 1e400}}',
                            headers=AUTH)
    assert response.status_code == 400 and response.json["field"] == "manager.check_interval"
    assert "finite" in response.json["message"]
    text = client.get("/api/config", headers=AUTH).text
    json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in GET /api/config"))


def test_a_change_that_cannot_be_saved_answers_500_naming_the_state_file():
    def update(patch: dict) -> defer.Deferred:
        return defer.fail(StateWriteError(
            "the change is in force but could not be saved to /srv/state.json (No space left "
            "on device); it will be lost at the next restart"))

    app = create_app(control=FakeControl(), call_in_reactor=direct_call, username=USERNAME,
                     password=PASSWORD, config_view=lambda: {}, config_update=update)
    response = app.test_client().patch("/api/config", json={"manager": {}}, headers=AUTH)
    assert response.status_code == 500 and response.json["error"] == "not_saved"
    assert "/srv/state.json" in response.json["message"]


def test_a_scaling_change_is_in_the_state_file_before_the_answer(tmp_path):
    store = StateStore(tmp_path / "state.json")
    seen_when_answered = []

    def run_in_thread(fn, *args):
        fn(*args)
        seen_when_answered.append(store.load())
        return defer.succeed(None)

    keeper = StateKeeper(store=store, changes={}, run_in_thread=run_in_thread)
    facade = CommanderFacade(manager=FakeControl(), provider_types={}, state=keeper)
    app = create_app(control=facade, call_in_reactor=direct_call, username=USERNAME,
                     password=PASSWORD)
    client = app.test_client()
    response = client.patch("/api/scaling", json={"max": 5}, headers=AUTH)
    assert response.status_code == 200 and response.json == {"min": 1, "required": 1, "max": 5}
    # Only what was sent is pinned: min and required keep following the config file.
    assert seen_when_answered == [{"scaling": {"max": 5}}]
    assert client.patch("/api/scaling", json={"max": 5}, headers=AUTH).status_code == 204
    assert len(seen_when_answered) == 1


def test_a_changed_secret_is_a_change_200_though_the_answer_shows_it_redacted(client, holder):
    """The answers hide secrets, so comparing them would call a new password 'nothing changed'
    (204) and publish no event, although the master already takes the new one."""
    body = {"master": {"auth": {"password": "another-secret"}}}
    first = client.patch("/api/config", json=body, headers=AUTH)
    assert first.status_code == 200
    assert first.json["master"]["auth"]["password"] == "***"
    assert holder.config.master.auth.password == "another-secret"
    assert client.patch("/api/config", json=body, headers=AUTH).status_code == 204
