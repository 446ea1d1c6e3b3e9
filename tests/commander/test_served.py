"""The commander served by Twisted's WSGI container on a real loopback port."""
from __future__ import annotations

import pytest
import requests
from twisted.python.threadpool import ThreadPool

from scrapoxy_server.commander.app import create_app
from scrapoxy_server.commander.wsgi import make_site, reactor_caller
from tests.commander.conftest import PASSWORD, USERNAME
from tests.commander.fakes import FakeControl, instance


class ReactorCheckingControl(FakeControl):
    """Records which thread each facade call ran on: it must be the reactor's."""

    def __init__(self, reactor_thread_ident: int) -> None:
        super().__init__(instances=[instance("p1")])
        self.reactor_ident = reactor_thread_ident
        self.off_reactor_calls: list[str] = []

    def _check(self, what: str) -> None:
        import threading

        if threading.get_ident() != self.reactor_ident:
            self.off_reactor_calls.append(what)

    def list_instances(self):
        self._check("list_instances")
        return super().list_instances()

    def update_scaling(self, changes):
        self._check("update_scaling")
        return super().update_scaling(changes)


@pytest.fixture
def served(reactor_thread):
    import threading

    reactor = reactor_thread.reactor
    reactor_ident = reactor_thread.call(threading.get_ident)
    control = ReactorCheckingControl(reactor_ident)
    app = create_app(control=control, call_in_reactor=reactor_caller(reactor),
                     username=USERNAME, password=PASSWORD)
    pool = ThreadPool(minthreads=1, maxthreads=4, name="commander-test")
    pool.start()
    site = make_site(app, reactor=reactor, threadpool=pool)
    port = reactor_thread.call(reactor.listenTCP, 0, site, interface="127.0.0.1")
    try:
        yield f"http://127.0.0.1:{port.getHost().port}", control
    finally:
        reactor_thread.call(port.stopListening)
        pool.stop()


def test_served_app_answers_api_ip_and_gui_through_twisted(served):
    base, control = served
    session = requests.Session()
    session.trust_env = False  # no proxy from the environment: this is loopback only

    assert session.get(f"{base}/api/instances", timeout=5).status_code == 401

    response = session.get(f"{base}/api/instances", auth=(USERNAME, PASSWORD), timeout=5)
    assert response.status_code == 200
    assert [i["name"] for i in response.json()] == ["p1"]

    response = session.patch(f"{base}/api/scaling", json={"required": 3},
                             auth=(USERNAME, PASSWORD), timeout=5)
    assert response.status_code == 200
    assert response.json() == {"min": 1, "required": 3, "max": 3}

    response = session.get(f"{base}/api/nope", auth=(USERNAME, PASSWORD), timeout=5)
    assert response.status_code == 404
    assert response.headers["Content-Type"].startswith("application/json")

    response = session.get(f"{base}/ip", timeout=5)
    assert response.text == "127.0.0.1"

    assert "<html" in session.get(f"{base}/", timeout=5).text
    assert control.off_reactor_calls == []


def test_a_204_answer_carries_no_content_type_and_no_body(served):
    base, control = served
    session = requests.Session()
    session.trust_env = False
    session.auth = (USERNAME, PASSWORD)
    current = session.get(f"{base}/api/scaling", timeout=5).json()
    response = session.patch(f"{base}/api/scaling", json=current, timeout=5)
    assert response.status_code == 204
    assert "Content-Type" not in response.headers
    assert response.content == b""


def test_health_check_probes_leave_no_access_log_line_but_api_calls_do(served):
    """/ip is fetched through every instance every couple of seconds: one line each would
    bury the log; an API call keeps its line."""
    from twisted.logger import formatEvent, globalLogPublisher

    from tests.support import wait_until

    base, _ = served
    lines: list[str] = []

    def observer(event):
        lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observer)
    try:
        session = requests.Session()
        session.trust_env = False
        assert session.get(f"{base}/ip", timeout=5).status_code == 200
        assert session.get(f"{base}/api/instances", auth=(USERNAME, PASSWORD),
                           timeout=5).status_code == 200
        wait_until(lambda: any("/api/instances" in line for line in lines), timeout=5,
                   message="the API call's access log line")
    finally:
        globalLogPublisher.removeObserver(observer)
    assert not any('"GET /ip ' in line for line in lines), lines
