"""A byte-exact HTTP/1.x client for tests: what is sent and received is exactly what we say."""
from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field


@dataclass
class RawResponse:
    status: int
    head: bytes
    headers: list[tuple[str, str]]
    body: bytes = b""
    complete: bool = True          # False when the connection ended before the framing said
    first_body_at: float | None = None
    raw_body: bytes = b""          # the body bytes as they came (chunk framing included)

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


@dataclass
class RawConnection:
    port: int
    host: str = "127.0.0.1"
    timeout: float = 15.0
    sock: socket.socket = field(init=False)
    buffer: bytes = b""

    def __post_init__(self) -> None:
        self.sock = socket.create_connection((self.host, self.port), timeout=self.timeout)

    def __enter__(self) -> "RawConnection":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _recv(self) -> bytes:
        try:
            return self.sock.recv(65536)
        except (ConnectionResetError, socket.timeout):
            return b""

    def _fill(self) -> bool:
        data = self._recv()
        if not data:
            return False
        self.buffer += data
        return True

    def read_response(self, *, method: str = "GET", http10: bool = False) -> RawResponse:
        while b"\r\n\r\n" not in self.buffer:
            if not self._fill():
                raise ConnectionError(f"connection closed before a response head: {self.buffer!r}")
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ")[1])
        headers = []
        for line in lines[1:]:
            name, _, value = line.decode("latin-1").partition(":")
            headers.append((name, value.strip()))
        response = RawResponse(status, head, headers)
        if 100 <= status < 200:
            return response
        te = (response.header("transfer-encoding") or "").lower()
        length = response.header("content-length")
        if method == "HEAD" or status in (204, 304) or (method == "CONNECT" and status == 200):
            return response  # no body; after a CONNECT's 200 the tunnel's bytes follow
        if te.endswith("chunked"):
            self._read_chunked(response)
        elif length is not None:
            self._read_length(response, int(length))
        else:
            self._read_until_close(response)
        return response

    def _mark_first(self, response: RawResponse) -> None:
        if response.first_body_at is None and self.buffer:
            response.first_body_at = time.monotonic()

    def _read_length(self, response: RawResponse, length: int) -> None:
        while len(self.buffer) < length:
            self._mark_first(response)
            if not self._fill():
                response.body, self.buffer = self.buffer, b""
                response.complete = False
                return
        self._mark_first(response)
        response.body, self.buffer = self.buffer[:length], self.buffer[length:]
        response.raw_body = response.body

    def _read_until_close(self, response: RawResponse) -> None:
        while self._fill():
            self._mark_first(response)
        response.body, self.buffer = self.buffer, b""
        response.raw_body = response.body

    def _read_chunked(self, response: RawResponse) -> None:
        body = b""
        raw = b""
        while True:
            while b"\r\n" not in self.buffer:
                if not self._fill():
                    response.complete = False
                    response.body, response.raw_body = body, raw
                    return
            self._mark_first(response)
            line, self.buffer = self.buffer.split(b"\r\n", 1)
            raw += line + b"\r\n"
            size = int(line.split(b";")[0], 16)
            if size == 0:
                while not self.buffer.startswith(b"\r\n"):
                    if b"\r\n" in self.buffer:
                        trailer, self.buffer = self.buffer.split(b"\r\n", 1)
                        raw += trailer + b"\r\n"
                    elif not self._fill():
                        break
                self.buffer = self.buffer[2:]
                raw += b"\r\n"
                response.body, response.raw_body = body, raw
                return
            while len(self.buffer) < size + 2:
                if not self._fill():
                    response.complete = False
                    response.body, response.raw_body = body + self.buffer, raw + self.buffer
                    return
            body += self.buffer[:size]
            raw += self.buffer[:size + 2]
            self.buffer = self.buffer[size + 2:]

    def closed_by_peer(self, wait: float = 2.0) -> bool:
        self.sock.settimeout(wait)
        try:
            return self.sock.recv(1) == b""
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False


def request(port: int, raw: bytes, **kwargs: object) -> RawResponse:
    with RawConnection(port) as connection:
        connection.send(raw)
        return connection.read_response(**kwargs)  # type: ignore[arg-type]
