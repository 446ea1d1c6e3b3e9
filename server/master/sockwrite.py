"""Writing to a TCP connection at once, instead of on the reactor's next turn.

Twisted's ``transport.write`` only queues: the bytes leave on the next writable event, which
costs two ``epoll_ctl`` calls (register and unregister for writability) and one more trip
through the reactor loop per write. The master writes twice per request (the request to the
instance, the response to the client), so on its hot path that was close to a tenth of its
CPU. ``write_now`` does what asyncio's transports do: when nothing is queued it tries
``send()`` right away and queues only what the kernel did not take.

It reads a few attributes of ``twisted.internet.abstract.FileDescriptor`` that are not public
API (``_tempDataBuffer``, ``dataBuffer``, ``offset``, ``_writeDisconnected``); it is used only
for plain ``tcp.Server``/``tcp.Client`` transports and falls back to ``write`` for anything
else (TLS, test transports), so ordering, back-pressure and error reporting stay Twisted's.
"""
from __future__ import annotations

from typing import Any

from twisted.internet import tcp

_PLAIN_TCP = (tcp.Server, tcp.Client)


def write_now(transport: Any, data: bytes) -> None:
    """``transport.write(data)``, sent at once when the transport has nothing queued."""
    if (type(transport) in _PLAIN_TCP and data and not transport.TLS
            and not transport._tempDataBuffer and transport.offset == len(transport.dataBuffer)
            and transport.connected and not transport.disconnecting
            and not transport._writeDisconnected):
        try:
            sent = transport.socket.send(data)
        except OSError:
            # Would block, or the connection broke: the queued path retries or reports it.
            sent = 0
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data)
