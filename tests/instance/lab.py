"""Loopback lab for the instance tests: a recording HTTP origin, raw TCP servers, raw clients.

The origin runs in a thread (``http.server``), as an independent program would; it records the
client address and every request so tests can assert what reached the target.
"""
from __future__ import annotations

import hashlib
import json
import socket
import socketserver
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class SeenRequest:
    client_host: str
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class _OriginHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return body
                body += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def _handle(self) -> None:
        body = self._read_body()
        self.server.seen.append(SeenRequest(  # type: ignore[attr-defined]
            client_host=self.client_address[0], method=self.command, path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()}, body=body,
        ))
        route = self.path.split("?")[0]
        if route == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for piece in (b"ab", b"cd", b"ef"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
            return
        if route == "/until-close":
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"no length here")
            self.close_connection = True
            return
        if route == "/hop":
            payload = b"hop"
            self.send_response(200)
            self.send_header("Connection", "X-Origin-Hop")
            self.send_header("X-Origin-Hop", "1")
            self.send_header("Keep-Alive", "timeout=9")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        if route == "/big":
            size = int(self.path.split("n=")[1])
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            if self.command != "HEAD":
                block = b"x" * 65536
                left = size
                while left:
                    chunk = block[:min(left, len(block))]
                    self.wfile.write(chunk)
                    left -= len(chunk)
            return
        if route.startswith("/status/"):
            self.send_response(int(route.rsplit("/", 1)[1]))
            self.end_headers()
            return
        payload = json.dumps({
            "method": self.command, "path": self.path, "client": self.client_address[0],
            "body_length": len(body), "sha256": hashlib.sha256(body).hexdigest(),
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _handle


class _Origin(ThreadingHTTPServer):
    daemon_threads = True


class _Origin6(_Origin):
    address_family = socket.AF_INET6


@contextmanager
def running_origin(host: str = "127.0.0.1") -> Iterator[tuple[ThreadingHTTPServer, int]]:
    """An HTTP origin on ``host``; ``server.seen`` lists the requests it received."""
    server_class = _Origin6 if ":" in host else _Origin
    server = server_class((host, 0), _OriginHandler)
    server.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield server, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


class _EchoHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


class _RawHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.server.script(self.request)  # type: ignore[attr-defined]


class _Threaded(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@contextmanager
def running_tcp(script: Callable[[socket.socket], None] | None = None) -> Iterator[int]:
    """A TCP server on 127.0.0.1: echo by default, or ``script(sock)`` per connection."""
    server = _Threaded(("127.0.0.1", 0), _EchoHandler if script is None else _RawHandler)
    server.script = script  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def recv_until(sock: socket.socket, marker: bytes, *, limit: int = 1 << 20) -> bytes:
    """Read until ``marker`` is in the data (or the peer closes)."""
    data = b""
    while marker not in data and len(data) < limit:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def recv_all(sock: socket.socket) -> bytes:
    """Read until the peer closes."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def exchange(port: int, raw: bytes, *, timeout: float = 10.0) -> bytes:
    """Send raw bytes to the proxy on a new connection and read until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(raw)
        return recv_all(sock)
