"""Clients that half-close: they send their requests, then shut their sending side (``nc -N``,
``printf ... | nc``, some load tools). What they sent is answered; then the connection closes."""
from __future__ import annotations

import socket

from tests.master.rawhttp import RawConnection
from tests.master.test_field_cases import get, host_of


def test_a_request_then_a_half_close_still_gets_its_answer(kind_master, origin):
    with RawConnection(kind_master.port) as connection:
        connection.send(get(f"{origin.url}/ip", f"Host: {host_of(origin.url)}"))
        connection.sock.shutdown(socket.SHUT_WR)
        response = connection.read_response()
        assert response.status == 200 and response.header("x-cache-proxyname")
        assert connection.closed_by_peer()


def test_pipelined_requests_then_a_half_close_are_all_answered_in_order(kind_master, origin):
    with RawConnection(kind_master.port) as connection:
        connection.send(get(f"{origin.url}/ip", f"Host: {host_of(origin.url)}")
                        + get(f"{origin.url}/headers", f"Host: {host_of(origin.url)}"))
        connection.sock.shutdown(socket.SHUT_WR)
        first, second = connection.read_response(), connection.read_response()
        assert first.status == second.status == 200
        assert b'"path": "/headers"' not in first.body and b'"path": "/headers"' in second.body
        assert connection.closed_by_peer()


def test_a_half_closed_partial_head_is_closed_without_an_answer(kind_master):
    with RawConnection(kind_master.port) as connection:
        connection.send(b"GET http://127.0.0.1/ HTTP/1.1\r\nHost: x")
        connection.sock.shutdown(socket.SHUT_WR)
        assert connection.closed_by_peer()
        assert connection.buffer == b""


def test_a_tunnel_passes_the_half_close_on_and_relays_the_answer(master, origin):
    """Behind scrapoxy-instances. Stock tinyproxy and squid end a tunnel when its client
    half-closes, cutting the answer: the master passes the half-close on all the same."""
    with RawConnection(master.port) as connection:
        connection.send(get(host_of(origin.url), method="CONNECT")
                        + get("/ip", f"Host: {host_of(origin.url)}", "Connection: close"))
        connection.sock.shutdown(socket.SHUT_WR)
        assert connection.read_response(method="CONNECT").status == 200
        inner = connection.read_response()
        assert inner.status == 200 and inner.body.strip()
        assert connection.closed_by_peer()
