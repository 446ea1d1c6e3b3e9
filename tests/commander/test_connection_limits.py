"""What the commander's connection refuses or allows before Flask runs, over real sockets:
bodies over the limit, chunked bodies, slow heads, idle connections, absolute-form targets,
and an event stream outliving the timeouts."""
from __future__ import annotations

import json
import select
import socket
import time
from base64 import b64encode

import pytest

from scrapoxy_server.commander.app import MAX_BODY_BYTES
from tests.commander.conftest import PASSWORD, USERNAME
from tests.commander.fakes import FakeControl, instance
from tests.commander.served import serve_commander
from tests.commander.sse_client import EventStream

AUTH_LINE = b"Authorization: Basic " + b64encode(f"{USERNAME}:{PASSWORD}".encode()) + b"\r\n"


@pytest.fixture
def served(reactor_thread):
    control = FakeControl(instances=[instance("p1")])
    with serve_commander(reactor_thread, control, threads=2, heartbeat=0.2,
                         timeout=0.6, head_timeout=0.4) as served:
        yield served


def connect(served) -> socket.socket:
    host, port = served.base.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=5)


def read_until_closed(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Everything the server sends until it closes; fails if it stays open past ``timeout``."""
    sock.settimeout(timeout)
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def assert_json_error(raw: bytes, status: int, code: str) -> dict:
    got, headers, body = parse(raw)
    assert got == status, raw[:300]
    assert headers["Content-Type"] == "application/json"
    assert headers["Connection"] == "close"
    error = json.loads(body)
    assert error["error"] == code and error["message"]
    return error


# --- bodies --------------------------------------------------------------------------------

@pytest.mark.parametrize("expect", [b"", b"Expect: 100-continue\r\n"], ids=["plain", "expect"])
def test_declared_body_over_the_limit_gets_json_413_and_close_before_auth_and_before_the_body(
        served, expect):
    sock = connect(served)
    started = time.monotonic()
    sock.sendall(b"PATCH /api/scaling HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000000\r\n"
                 + expect + b"\r\n")
    # No body is sent: the answer must not wait for it (nor be "100 Continue").
    raw = read_until_closed(sock)
    assert time.monotonic() - started < 2
    error = assert_json_error(raw, 413, "too_large")
    assert str(MAX_BODY_BYTES) in error["message"]


def test_declared_body_at_the_limit_is_read_and_reaches_flask(served):
    sock = connect(served)
    body = b'{"max": 5}'.ljust(MAX_BODY_BYTES)
    sock.sendall(b"PATCH /api/scaling HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + AUTH_LINE
                 + b"Content-Length: %d\r\n\r\n" % len(body) + body)
    status, _, answer = parse(read_until_closed(sock))
    assert status == 200 and json.loads(answer)["max"] == 5


def test_chunked_body_over_the_limit_gets_json_413_and_close_without_the_rest(served):
    sock = connect(served)
    sock.sendall(b"PATCH /api/scaling HTTP/1.1\r\nHost: x\r\n" + AUTH_LINE
                 + b"Transfer-Encoding: chunked\r\n\r\n")
    piece = b" " * 65536
    for _ in range(MAX_BODY_BYTES // len(piece)):  # exactly the limit: still accepted
        sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
    sock.sendall(b"1\r\n \r\n")  # one byte over; the body never ends (no 0 chunk)
    assert_json_error(read_until_closed(sock), 413, "too_large")
    assert served.control.scaling_updates == []


def test_chunked_body_reaches_flask(served):
    session = served.session()
    response = session.patch(f"{served.base}/api/scaling",
                             data=iter([b'{"max":', b' 5}']), timeout=5)  # iter: chunked
    assert response.request.headers["Transfer-Encoding"] == "chunked"
    assert response.status_code == 200
    assert response.json() == {"min": 1, "required": 1, "max": 5}


# --- time ----------------------------------------------------------------------------------

def test_request_head_trickled_past_the_head_timeout_gets_json_408_and_close(served):
    sock = connect(served)
    sock.sendall(b"GET /api/scaling HTTP/1.1\r\n")
    deadline = time.monotonic() + 3
    # One header line every 0.1 s: never idle for the 0.6 s timeout, but slow overall.
    while not select.select([sock], [], [], 0.1)[0]:
        assert time.monotonic() < deadline, "the slow head was never cut"
        sock.sendall(b"X-Slow: 1\r\n")
    error = assert_json_error(read_until_closed(sock), 408, "timeout")
    assert "head" in error["message"]


def test_silent_connection_is_closed_after_the_idle_timeout(served):
    sock = connect(served)
    started = time.monotonic()
    assert read_until_closed(sock) == b""
    assert 0.4 < time.monotonic() - started < 3


def test_keep_alive_connection_waiting_between_requests_is_still_served(served):
    session = served.session()
    assert session.get(f"{served.base}/api/scaling", timeout=5).status_code == 200
    time.sleep(0.5)  # longer than the head timeout, shorter than the idle one
    response = session.get(f"{served.base}/api/scaling", timeout=5)
    assert response.status_code == 200 and response.json()["max"] == 3


def test_event_stream_stays_open_past_the_idle_and_head_timeouts(served):
    session = served.session()
    stream = EventStream(session, f"{served.base}/api/events", read_timeout=5)
    try:
        for _ in range(3):
            stream.next_event()
        time.sleep(1.5)  # well past both timeouts; only heartbeats flow
        session.patch(f"{served.base}/api/scaling", json={"required": 2}, timeout=5)
        assert stream.until("scaling", timeout=5).data["required"] == 2
        assert stream.comments >= 3  # heartbeats kept coming
    finally:
        stream.close()


def test_default_timeouts_are_a_minute_idle_and_twenty_seconds_for_a_head(reactor_thread):
    with serve_commander(reactor_thread, FakeControl()) as served:
        assert served.site.timeOut == 60
        assert served.site.head_timeout == 20


# --- request targets -----------------------------------------------------------------------

@pytest.mark.parametrize(("target", "status", "expected"), [
    (b"/api/scaling", 200, {"min": 1, "required": 1, "max": 3}),
    (b"/api/nope", 404, None),
])
def test_absolute_form_target_is_routed_like_its_path(served, target, status, expected):
    sock = connect(served)
    sock.sendall(b"GET " + served.base.encode() + target + b" HTTP/1.1\r\nHost: x\r\n"
                 + AUTH_LINE + b"Connection: close\r\n\r\n")
    got, headers, body = parse(read_until_closed(sock))
    assert got == status
    assert headers["Content-Type"] == "application/json"
    answer = json.loads(body)
    assert answer == expected if expected else answer["error"] == "not_found"


def test_absolute_form_target_without_credentials_is_json_401(served):
    sock = connect(served)
    sock.sendall(b"GET " + served.base.upper().encode() + b"/api/scaling?x=1 HTTP/1.1\r\n"
                 b"Host: x\r\nConnection: close\r\n\r\n")
    got, headers, body = parse(read_until_closed(sock))
    assert got == 401 and json.loads(body)["error"] == "auth"
