"""Listening on a port that several processes share (``SO_REUSEPORT``, Linux and BSDs)."""
from __future__ import annotations

import socket
from typing import Any


def reuseport_supported() -> bool:
    return hasattr(socket, "SO_REUSEPORT")


def listen_shared(reactor: Any, *, host: str, port: int, factory: Any, backlog: int) -> Any:
    """Like ``reactor.listenTCP``, but on a socket other processes may bind too.

    Every process that binds the same ``host:port`` this way (same user) gets its share of
    the new connections. Raises ``OSError`` when the address cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
        # adoptStreamPort duplicates the descriptor; ours is closed below either way.
        return reactor.adoptStreamPort(sock.fileno(), family, factory)
    finally:
        sock.close()
