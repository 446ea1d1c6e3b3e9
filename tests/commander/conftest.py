"""Fixtures for commander tests: the app over a FakeControl, and auth headers."""
from __future__ import annotations

from base64 import b64encode

import pytest
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from scrapoxy_server.commander.app import create_app
from tests.commander.fakes import FakeControl, instance

USERNAME = "admin"
PASSWORD = "pw"


def basic(username: str, password: str) -> dict[str, str]:
    token = b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def direct_call(fn, *args):
    """Tests have no reactor thread: call_in_reactor is a plain call, which (like
    blockingCallFromThread) answers the result of a Deferred rather than the Deferred."""
    result = fn(*args)
    if isinstance(result, Deferred):
        outcome = []
        result.addBoth(outcome.append)
        assert outcome, "a Deferred that has not fired: direct_call cannot wait for it"
        if isinstance(outcome[0], Failure):
            outcome[0].raiseException()
        return outcome[0]
    return result


@pytest.fixture
def control() -> FakeControl:
    return FakeControl(instances=[instance("p1"), instance("p2"), instance("p3", alive=False)])


@pytest.fixture
def app(control):
    return create_app(
        control=control, call_in_reactor=direct_call, username=USERNAME, password=PASSWORD,
        config_view=lambda: {"commander": {"password": "***"}},
        stats_view=lambda: {"global": {"requests": 3}},
    )


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def auth() -> dict[str, str]:
    return basic(USERNAME, PASSWORD)
