"""CONNECT session tokens (``USER;session=TOKEN`` in the proxy username): every tunnel of one
token goes through one instance, and the master can say which, for the commander to stop it
when a client reports a ban by token (it never sees the CONNECT reply's headers)."""
from __future__ import annotations

import base64
import socket



def connect_through(port: int, netloc: str, *, token: str) -> bytes:
    credentials = base64.b64encode(f";session={token}:".encode()).decode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"CONNECT {netloc} HTTP/1.1\r\nHost: {netloc}\r\n"
                     f"Proxy-Authorization: Basic {credentials}\r\n\r\n".encode())
        return sock.recv(4096)


def proxyname(reply: bytes) -> str:
    assert reply.startswith(b"HTTP/1.1 200"), reply
    for line in reply.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"x-cache-proxyname":
            return value.strip().decode()
    raise AssertionError(f"no x-cache-proxyname in {reply!r}")


def test_tunnels_of_one_session_token_share_an_instance_the_master_can_name(master, tls_origin):
    names = {proxyname(connect_through(master.port, tls_origin.netloc, token="acct-1"))
             for _ in range(4)}
    other = proxyname(connect_through(master.port, tls_origin.netloc, token="acct-2"))

    assert len(names) == 1
    assert master.factory.session_instance("acct-1") == names.pop()
    assert master.factory.session_instance("acct-2") == other
    assert master.factory.session_instance("never-seen") is None

