"""The original Scrapoxy's Python client (``scrapoxy.commander.Commander`` from PyPI
``scrapoxy==1.11``) against this API, over a real socket.

The client sends ``Authorization: base64(password)`` with no scheme (as bytes), talks to
``<api>/instances``, ``<api>/instances/stop`` (POST ``{"name"}``; 404 means "unknown",
answered -1), ``<api>/scaling`` (GET, and PATCH with all three fields: 200 changed, 204
same) and ``<api>/config``. When the package is not installed, the same requests are
replayed byte for byte with ``requests``.
"""
from __future__ import annotations

import base64

import pytest
import requests

from tests.commander.conftest import PASSWORD
from tests.commander.fakes import FakeControl, instance
from tests.commander.served import serve_commander


@pytest.fixture
def served(reactor_thread):
    control = FakeControl(instances=[instance("p1"), instance("p2"), instance("p3", alive=False)])
    with serve_commander(reactor_thread, control,
                         config_view=lambda: {"commander": {"password": "***"}}) as served:
        yield served


@pytest.fixture(autouse=True)
def no_proxy_from_environment(monkeypatch):
    # The original client calls requests.get() directly; keep it on loopback.
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                 "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


def test_the_original_client_works_against_this_api(served):
    commander_module = pytest.importorskip("scrapoxy.commander")
    commander = commander_module.Commander(f"{served.base}/api", PASSWORD)

    names = [i["name"] for i in commander.get_instances()]
    assert names == ["p1", "p2", "p3"]
    assert commander.get_scaling() == (1, 1, 3)
    assert commander.update_scaling(1, 2, 3) is True
    assert commander.update_scaling(1, 2, 3) is False  # 204: unchanged
    assert commander.get_scaling() == (1, 2, 3)
    assert commander.stop_instance("p1") == 1  # alive count after: p2
    assert commander.stop_instance("nosuch") == -1
    assert commander.get_config() == {"commander": {"password": "***"}}
    with pytest.raises(requests.HTTPError):
        commander.update_scaling(5, 2, 3)  # 400


def test_the_original_clients_exact_requests_are_answered(served):
    """The same calls replayed: bare base64 password as bytes, the original's paths."""
    headers = {"Authorization": base64.b64encode(PASSWORD.encode("ascii"))}
    api = f"{served.base}/api"
    session = requests.Session()
    session.trust_env = False

    response = session.get(f"{api}/instances", headers=headers, timeout=5)
    assert response.status_code == 200 and len(response.json()) == 3
    response = session.get(f"{api}/scaling", headers=headers, timeout=5)
    assert response.json() == {"min": 1, "required": 1, "max": 3}
    payload = {"min": 1, "required": 3, "max": 3}
    assert session.patch(f"{api}/scaling", headers=headers, json=payload,
                         timeout=5).status_code == 200
    assert session.patch(f"{api}/scaling", headers=headers, json=payload,
                         timeout=5).status_code == 204
    response = session.post(f"{api}/instances/stop", headers=headers, json={"name": "p2"},
                            timeout=5)
    assert response.status_code == 200 and response.json() == {"alive": 1}
    assert session.post(f"{api}/instances/stop", headers=headers, json={"name": "p2"},
                        timeout=5).status_code == 404
    wrong = {"Authorization": base64.b64encode(b"not-it")}
    assert session.get(f"{api}/instances", headers=wrong, timeout=5).status_code == 401
