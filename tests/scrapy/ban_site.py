"""A loopback target for real crawls: a shop that bans an IP after a few requests, and a
redirect chain across http and https that sets cookies.

One :class:`BanSite` serves the same routes on an http port and (with a certificate) an https
port, sharing its state, so a chain can hop between the two:

| path | answer |
|---|---|
| ``/shop/`` | index linking ``/shop/p1`` .. ``/shop/pN`` |
| ``/shop/pK`` | page K, title ``Product K`` |
| any ``/shop`` path, from an IP that made more than ``ban_after`` shop requests | 429 ``banned`` |
| ``/chain/start`` | sets ``sid=42; Path=/`` and ``sec=1; Secure; Path=/``, 302 to http ``/chain/hop`` |
| ``/chain/hop`` | 302 to https ``/chain/end`` |
| ``/chain/end`` | ``Cookie: ...`` as the page's text |
"""
from __future__ import annotations

import collections
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class BanSite:
    def __init__(self, *, pages: int = 12, ban_after: int = 3, cert: Any = None) -> None:
        self.pages = pages
        self.ban_after = ban_after
        self.lock = threading.Lock()
        self.requests_by_ip: collections.Counter[str] = collections.Counter()
        self.banned_ips: set[str] = set()
        self.served: list[tuple[str, str]] = []  # (client ip, path) of every 200 shop page
        self.hits: list[tuple[str, str, str]] = []  # (client ip, path, Cookie) of every request
        self._servers = [self._serve(None)]
        if cert is not None:
            self._servers.append(self._serve(cert.server_context()))

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self._servers[0].server_address[1]}"

    @property
    def https_url(self) -> str:
        return f"https://127.0.0.1:{self._servers[1].server_address[1]}"

    def close(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()

    def _serve(self, context: Any) -> ThreadingHTTPServer:
        server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        server.daemon_threads = True
        if context is not None:
            server.socket = context.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    def _shop(self, ip: str, path: str) -> tuple[int, str, dict[str, str]]:
        with self.lock:
            self.requests_by_ip[ip] += 1
            if self.requests_by_ip[ip] > self.ban_after:
                self.banned_ips.add(ip)
                return 429, "banned", {}
            if path == "/shop/":
                links = "".join(f'<a href="p{k}">p{k}</a>' for k in range(1, self.pages + 1))
                self.served.append((ip, path))
                return 200, f"<html><head><title>Shop</title></head><body>{links}</body></html>", {}
            number = path.removeprefix("/shop/p")
            if number.isdigit() and 1 <= int(number) <= self.pages:
                self.served.append((ip, path))
                return 200, f"<html><head><title>Product {number}</title></head></html>", {}
            return 404, "not found", {}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def do_GET(self) -> None:  # noqa: N802
                path = self.path.split("?")[0]
                with site.lock:
                    site.hits.append((self.client_address[0], path, self.headers.get("Cookie", "")))
                headers: dict[str, Any] = {}
                if path.startswith("/shop"):
                    status, body, headers = site._shop(self.client_address[0], path)
                elif path == "/chain/start":
                    status, body = 302, ""
                    headers = {"Location": site.http_url + "/chain/hop",
                               "Set-Cookie": ["sid=42; Path=/", "sec=1; Secure; Path=/"]}
                elif path == "/chain/hop":
                    status, body, headers = 302, "", {"Location": site.https_url + "/chain/end"}
                elif path == "/chain/end":
                    status, body = 200, f"cookie={self.headers.get('Cookie', '')}"
                else:
                    status, body = 404, "not found"
                data = body.encode()
                self.send_response(status)
                for name, value in headers.items():
                    for one in value if isinstance(value, list) else [value]:
                        self.send_header(name, one)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler
