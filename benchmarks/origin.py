"""A small keep-alive HTTP/1.1 origin, used only when nginx is not installed.

Serves the files of ``--root`` by name (``/1k``, ``/1m``, ``/100m``) and ``/ip`` (the caller's
address). Plain HTTP only: without nginx the HTTPS-by-Location row is skipped. It is slower
than nginx, so absolute figures drop; ratios measured in the same run stay meaningful as long
as the origin is not the bottleneck (compare the "origin direct" row).
"""
from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path


class Origin(asyncio.Protocol):
    def __init__(self, bodies: dict[bytes, Path]) -> None:
        self.bodies = bodies
        self.buffer = b""

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.peer = transport.get_extra_info("peername")[0].encode()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
            target = head.split(b" ", 2)[1]
            path = target.split(b"?", 1)[0]
            if path.startswith(b"http://"):
                path = b"/" + path.split(b"/", 3)[3] if path.count(b"/") >= 3 else b"/"
            if path == b"/ip":
                self._answer(200, self.peer, b"text/plain")
            elif path in self.bodies:
                self._answer(200, self.bodies[path].read_bytes(), b"application/octet-stream")
            else:
                self._answer(404, b"not found\n", b"text/plain")

    def _answer(self, status: int, body: bytes, kind: bytes) -> None:
        reason = b"OK" if status == 200 else b"Not Found"
        self.transport.write(
            b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n"
            % (status, reason, kind, len(body)) + body
        )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--root", required=True)
    args = parser.parse_args()
    root = Path(args.root)
    bodies = {b"/" + name.encode(): root / name for name in os.listdir(root)}
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Origin(bodies), args.host, args.port, backlog=4096)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
