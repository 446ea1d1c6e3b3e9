"""ORIGIN: the target web server of the lab, an echo app with fault routes.

It runs in-process on a thread (the stdlib's threaded ``http.server``, HTTP/1.1 with keep-alive),
on 127.0.0.1, on [::1], or over TLS with a lab certificate. Every request is recorded with
what the wire carried (client address, raw request target as bytes, headers in order and case,
the decoded body), so tests can assert what reached the target through master and instance.

Routes (any method; HEAD answers the same headers with no body):

| path | answer |
|---|---|
| ``/headers`` and any unknown path | JSON ``{method, path, headers, body_length, body_sha256, client, http_version, sni}`` |
| ``/echo`` | the request body |
| ``/redirect?to=URL&code=301`` | that status with ``Location: URL`` byte for byte (default 302 to ``/site/``) |
| ``/chunked?delay=1.0`` | chunked body ``ab``, ``cd``, ``ef`` with ``delay`` seconds between chunks |
| ``/gzip`` | ``GZIP_BODY`` with ``Content-Encoding: gzip`` and ``Content-Length`` |
| ``/big?n=BYTES`` | ``big_body(n)``, streamed, with ``Content-Length`` |
| ``/slow?delay=S`` | the JSON echo after ``S`` seconds |
| ``/status/N`` | status N |
| ``/site/...`` | a 9-page HTML site for crawls (``SITE_PAGES``) |
| ``/ip`` | the client address as text (usable as a health-check URL) |
| ``/hop`` | the JSON echo with ``Connection: X-Origin-Hop``, ``X-Origin-Hop: 1``, ``Keep-Alive: timeout=9`` |
| ``/badheader`` | the JSON echo with a malformed header line ``X-Bad : 1`` |
"""
from __future__ import annotations

import gzip
import hashlib
import json
import socket
import socketserver
import ssl
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.lab.tls import ServerCert

GZIP_PLAIN = b"scrapoxy lab gzip body; " * 64
# mtime=0 makes the compressed bytes (and their sha256) stable across runs.
GZIP_BODY = gzip.compress(GZIP_PLAIN, mtime=0)
CHUNKS = (b"ab", b"cd", b"ef")
_BIG_PATTERN = b"0123456789abcdef" * 4096  # 64 KiB


def big_body(n: int) -> bytes:
    """The exact bytes ``/big?n=N`` sends."""
    whole, rest = divmod(n, len(_BIG_PATTERN))
    return _BIG_PATTERN * whole + _BIG_PATTERN[:rest]


# The crawl site: path -> title. Pages link to each other with relative and absolute-path links.
SITE_PAGES: dict[str, str] = {
    "/site/": "Lab site home",
    "/site/about.html": "About the lab",
    "/site/contact.html": "Contact",
    "/site/products/": "Products",
    "/site/products/widget.html": "Widget",
    "/site/products/gadget.html": "Gadget",
    "/site/blog/": "Blog",
    "/site/blog/first-post.html": "First post",
    "/site/blog/second-post.html": "Second post",
}
_SITE_LINKS: dict[str, tuple[str, ...]] = {
    "/site/": ("about.html", "/site/contact.html", "products/", "/site/blog/",
               "products/widget.html"),
    "/site/about.html": ("/site/", "contact.html", "blog/first-post.html"),
    "/site/contact.html": ("./", "/site/about.html"),
    "/site/products/": ("widget.html", "/site/products/gadget.html", "../"),
    "/site/products/widget.html": ("gadget.html", "../about.html", "/site/products/"),
    "/site/products/gadget.html": ("widget.html", "../blog/second-post.html", "/site/"),
    "/site/blog/": ("first-post.html", "/site/blog/second-post.html", "../contact.html"),
    "/site/blog/first-post.html": ("second-post.html", "/site/blog/", "../products/gadget.html"),
    "/site/blog/second-post.html": ("first-post.html", "../", "/site/products/widget.html"),
}


def site_page(path: str) -> bytes | None:
    title = SITE_PAGES.get(path)
    if title is None:
        return None
    links = "\n".join(f'    <li><a href="{href}">{href}</a></li>' for href in _SITE_LINKS[path])
    return (
        "<!doctype html>\n<html><head><meta charset=\"utf-8\">"
        f"<title>{title}</title></head>\n<body>\n  <h1>{title}</h1>\n  <ul>\n{links}\n  </ul>\n"
        "</body></html>\n"
    ).encode()


@dataclass(frozen=True)
class RecordedRequest:
    """One request as ORIGIN received it."""

    client: str
    client_port: int
    method: str
    target: bytes  # the raw request target, byte for byte
    http_version: str
    headers: tuple[tuple[str, str], ...]  # in order, names in the case sent
    body: bytes
    sni: str | None = None

    @property
    def path(self) -> str:
        return self.target.decode("latin-1")

    def header(self, name: str) -> str | None:
        """First value of header ``name`` (any case), or None."""
        lowered = name.lower()
        for key, value in self.headers:
            if key.lower() == lowered:
                return value
        return None

    def header_names(self) -> set[str]:
        return {key.lower() for key, _ in self.headers}


class Recorder:
    """Thread-safe log of requests and connections, shared by one origin's handler threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._connections: list[tuple[str, int]] = []
        self.tls_failures = 0

    def add_request(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def add_connection(self, address: tuple[str, int]) -> None:
        with self._lock:
            self._connections.append(address)

    def add_tls_failure(self) -> None:
        with self._lock:
            self.tls_failures += 1

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def connections(self) -> list[tuple[str, int]]:
        with self._lock:
            return list(self._connections)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "LabOrigin/1.0"
    sys_version = ""
    # Idle keep-alive connections are dropped after this long, so threads do not pile up.
    timeout = 30
    server: _OriginServer

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def __getattr__(self, name: str) -> Any:
        # Serve every method (GET, POST, PATCH, custom ones...) through one dispatcher.
        if name.startswith("do_"):
            return self._serve
        raise AttributeError(name)

    # --- request side ----------------------------------------------------------------

    def _read_body(self) -> bytes:
        encoding = (self.headers.get("Transfer-Encoding") or "").lower()
        if encoding:
            if encoding.split(",")[-1].strip() != "chunked":
                self.close_connection = True
                return self.rfile.read()
            return self._read_chunked()
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        return self.rfile.read(int(length))

    def _read_chunked(self) -> bytes:
        parts = []
        while True:
            line = self.rfile.readline(65537)
            size = int(line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            parts.append(self.rfile.read(size))
            self.rfile.readline(65537)

    def _record(self, body: bytes) -> RecordedRequest:
        pieces = self.raw_requestline.rstrip(b"\r\n").split(b" ")
        target = pieces[1] if len(pieces) >= 2 else b""
        recorded = RecordedRequest(
            client=self.client_address[0],
            client_port=self.client_address[1],
            method=self.command,
            target=target,
            http_version=self.request_version,
            headers=tuple(self.headers.items()),
            body=body,
            sni=getattr(self.connection, "lab_sni", None),
        )
        self.server.recorder.add_request(recorded)
        return recorded

    # --- response side ---------------------------------------------------------------

    def _serve(self) -> None:
        body = self._read_body()
        request = self._record(body)
        try:
            self._route(request, body)
        except ValueError as exc:  # a bad number in /status/N, ?delay=, ?n=, ?code=
            self._send(400, f"bad request: {exc}\n".encode(), [("Content-Type", "text/plain")])

    def _route(self, request: RecordedRequest, body: bytes) -> None:
        split = urlsplit(request.path)
        path = split.path
        query = {key: values[-1] for key, values in parse_qs(split.query).items()}
        route = path.split("/")[1] if path.startswith("/") else ""
        if path == "/echo":
            kind = self.headers.get("Content-Type") or "application/octet-stream"
            self._send(200, body, [("Content-Type", kind)])
        elif path == "/redirect":
            code = int(query.get("code", "302"))
            self._send(code, b"redirecting\n", [("Location", query.get("to", "/site/")),
                                                ("Content-Type", "text/plain")])
        elif path == "/chunked":
            self._send_chunked(float(query.get("delay", "0")))
        elif path == "/gzip":
            self._send(200, GZIP_BODY, [("Content-Type", "text/plain"),
                                        ("Content-Encoding", "gzip")])
        elif path == "/big":
            self._send_big(int(query.get("n", "1048576")))
        elif path == "/slow":
            self.server.stopping.wait(float(query.get("delay", "1")))
            self._send_echo(request)
        elif route == "status":
            code = int(path.split("/")[2])
            payload = b"" if code in (204, 304) or code < 200 else f"status {code}\n".encode()
            self._send(code, payload, [("Content-Type", "text/plain")])
        elif path == "/ip":
            self._send(200, request.client.encode(), [("Content-Type", "text/plain")])
        elif path == "/hop":
            self._send_echo(request, [("Connection", "X-Origin-Hop"), ("X-Origin-Hop", "1"),
                                      ("Keep-Alive", "timeout=9")])
        elif path == "/badheader":
            self._send_echo(request, raw_lines=[b"X-Bad : 1\r\n"])
        elif path == "/site":
            self._send(301, b"", [("Location", "/site/")])
        elif route == "site":
            page = site_page(path)
            if page is None:
                self._send(404, b"no such page\n", [("Content-Type", "text/plain")])
            else:
                self._send(200, page, [("Content-Type", "text/html; charset=utf-8")])
        else:
            self._send_echo(request)

    def _send_echo(self, request: RecordedRequest, extra: list[tuple[str, str]] | None = None,
                   raw_lines: list[bytes] | None = None) -> None:
        document = {
            "method": request.method,
            "path": request.path,
            "headers": [list(pair) for pair in request.headers],
            "body_length": len(request.body),
            "body_sha256": hashlib.sha256(request.body).hexdigest(),
            "client": request.client,
            "http_version": request.http_version,
            "sni": request.sni,
        }
        payload = json.dumps(document).encode()
        headers = [("Content-Type", "application/json")] + (extra or [])
        self._send(200, payload, headers, raw_lines=raw_lines)

    def _send(self, status: int, payload: bytes, headers: list[tuple[str, str]],
              raw_lines: list[bytes] | None = None) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        if status >= 200 and status not in (204, 304):
            self.send_header("Content-Length", str(len(payload)))
        for line in raw_lines or []:
            self._headers_buffer.append(line)  # deliberately malformed lines, unvalidated
        self.end_headers()
        if self.command != "HEAD" and payload:
            self.wfile.write(payload)

    def _send_chunked(self, delay: float) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        chunked = self.request_version == "HTTP/1.1"
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            # An HTTP/1.0 client gets the bytes delimited by the close.
            self.close_connection = True
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command == "HEAD":
            return
        for index, chunk in enumerate(CHUNKS):
            if index:
                self.server.stopping.wait(delay)
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
            self.wfile.flush()
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    def _send_big(self, n: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(n))
        self.end_headers()
        if self.command == "HEAD":
            return
        remaining = n
        while remaining > 0:
            piece = _BIG_PATTERN[: min(remaining, len(_BIG_PATTERN))]
            self.wfile.write(piece)
            remaining -= len(piece)


class _OriginServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], *, recorder: Recorder,
                 tls: ssl.SSLContext | None) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.recorder = recorder
        self.tls = tls
        self.stopping = threading.Event()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would call getfqdn(), a DNS lookup: avoid it on a closed network.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = host
        self.server_port = port

    def finish_request(self, request: Any, client_address: Any) -> None:
        # Runs on the handler thread, so a slow or failing TLS handshake blocks nobody else.
        self.recorder.add_connection(client_address[:2])
        if self.tls is not None:
            request.settimeout(30)
            try:
                request = self.tls.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError):
                self.recorder.add_tls_failure()
                return
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client (a proxy under test) that leaves mid-answer is a case the tests make on
        # purpose: not worth a traceback on the test output. Anything else still prints one.
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


def _record_sni(sock: Any, server_name: str | None, _context: ssl.SSLContext) -> None:
    try:
        sock.lab_sni = server_name
    except AttributeError:
        pass


class Origin:
    """A running ORIGIN: ``url``, ``host``, ``port`` and what it recorded."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0,
                 cert: ServerCert | None = None) -> None:
        context = None
        if cert is not None:
            context = cert.server_context()
            context.sni_callback = _record_sni
        self._recorder = Recorder()
        self._server = _OriginServer((host, port), recorder=self._recorder, tls=context)
        self.host = host
        self.port = self._server.server_address[1]
        self.scheme = "https" if cert is not None else "http"
        netloc = f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"
        self.netloc = netloc
        self.url = f"{self.scheme}://{netloc}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
            name=f"origin-{self.scheme}-{self.port}", daemon=True,
        )
        self._thread.start()

    def __repr__(self) -> str:
        return f"<Origin {self.url}>"

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, oldest first (a snapshot)."""
        return self._recorder.requests

    @property
    def connections(self) -> list[tuple[str, int]]:
        """Every TCP connection accepted so far, as (address, port)."""
        return self._recorder.connections

    @property
    def tls_failures(self) -> int:
        return self._recorder.tls_failures

    def mark(self) -> int:
        """A position in the request log; pass it to ``since`` to see only later requests."""
        return len(self._recorder.requests)

    def since(self, mark: int) -> list[RecordedRequest]:
        return self._recorder.requests[mark:]

    def clients(self, since: int = 0) -> set[str]:
        """Distinct client addresses of the requests received (after ``since``)."""
        return {request.client for request in self.since(since)}

    def close(self) -> None:
        self._server.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
