"""A stand-in for the Scrapoxy master that serves a small site itself.

It speaks just enough of the master's wire contract for the Scrapy side: absolute-form GETs,
"HTTPS by header" (`Location: https://...` names the real URL) and `x-cache-proxyname` on every
answer (echoing a pinned name, otherwise rotating over two names). Instead of forwarding, it
answers from :data:`SITE` and records every request it got, so a test can check what Scrapy sent.
A CONNECT (what Scrapy would send for https without the middleware) gets a 501.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import count
from urllib.parse import urlsplit

# path -> (title, links); links mix relative, absolute-path, absolute and off-site forms.
SITE: dict[str, tuple[str, list[str]]] = {
    "/": ("Home", ["a", "/b?x=1", "/a#top", "/old", "https://elsewhere.example/x"]),
    "/a": ("Page A", ["../b?x=1", "c"]),
    "/b": ("Page B", ["/", "/d"]),
    "/c": ("Page C", []),
    "/d": ("Page D", ["/"]),
}
REDIRECTS = {"/old": "/c?from=old"}
# Answers that are not HTML pages, reached only from /mixed: a JSON document from the target,
# and an error the master makes itself (an instance that could not reach the target).
MIXED = '<html><head><title>Mixed</title></head><body>' \
    '<a href="/data.json">data</a><a href="/gone">gone</a></body></html>'
JSON_DATA = b'{"items": [1, 2, 3]}'
MASTER_ERROR = b'{"error": "upstream", "message": "instance inst-1: TLS handshake failed"}'
PROXYNAMES = ("inst-1", "inst-2")


@dataclass(frozen=True)
class Seen:
    """One request as the fake master received it."""

    command: str
    target: str  # the request-line target: absolute-form when Scrapy proxies
    location: str | None
    proxyname: str | None
    proxy_authorization: str | None
    cookie: str | None


class FakeMaster:
    """Threaded HTTP server on a free loopback port; ``start()``/``stop()`` around a test."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._rotation = count()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="fake-master")

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def start(self) -> FakeMaster:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def _record(self, seen: Seen) -> str:
        """Store ``seen`` and return the instance name that "served" it."""
        with self._lock:
            self.seen.append(seen)
            if seen.proxyname:
                return seen.proxyname
            return PROXYNAMES[next(self._rotation) % len(PROXYNAMES)]

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        master = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass  # keep pytest output readable

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                location = self.headers.get("Location")
                proxyname = master._record(Seen(
                    command="GET", target=self.path, location=location,
                    proxyname=self.headers.get("x-cache-proxyname"),
                    proxy_authorization=self.headers.get("Proxy-Authorization"),
                    cookie=self.headers.get("Cookie"),
                ))
                path = urlsplit(location or self.path).path
                if path == "/mixed":
                    self._answer(200, MIXED.encode(), proxyname,
                                 **{"Content-Type": "text/html; charset=utf-8"})
                elif path == "/data.json":
                    self._answer(200, JSON_DATA, proxyname, **{"Content-Type": "application/json"})
                elif path == "/gone":
                    self._answer(502, MASTER_ERROR, proxyname,
                                 **{"Content-Type": "application/json",
                                    "x-scrapoxy-error": "upstream"})
                elif path in REDIRECTS:
                    self._answer(302, b"", proxyname, Location=REDIRECTS[path])
                elif path in SITE:
                    title, links = SITE[path]
                    anchors = "".join(f'<a href="{link}">{link}</a>' for link in links)
                    body = f"<html><head><title>{title}</title></head><body>{anchors}</body></html>"
                    self._answer(200, body.encode(), proxyname,
                                 **{"Content-Type": "text/html; charset=utf-8",
                                    "Set-Cookie": "visited=1; Secure; Path=/"})
                else:
                    self._answer(404, b"not found", proxyname)

            def do_CONNECT(self) -> None:  # noqa: N802
                master._record(Seen("CONNECT", self.path, None, None, None, None))
                self._answer(501, b"no CONNECT here", None)

            def _answer(self, status: int, body: bytes, proxyname: str | None,
                        **headers: str) -> None:
                self.send_response(status)
                if proxyname:
                    self.send_header("x-cache-proxyname", proxyname)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler
