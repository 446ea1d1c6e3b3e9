"""Responses the master produces itself (the error table of the wire contract).

Each carries ``x-scrapoxy-error: CODE`` and a short JSON body so a scraper can tell them from
the target's own statuses.
"""
from __future__ import annotations

import json

REASONS = {
    400: b"Bad Request", 403: b"Forbidden", 407: b"Proxy Authentication Required",
    408: b"Request Timeout",
    431: b"Request Header Fields Too Large", 502: b"Bad Gateway", 503: b"Service Unavailable",
    504: b"Gateway Timeout", 505: b"HTTP Version Not Supported",
}


def error_response(*, status: int, code: str, message: str, instance: str | None = None,
                   retry_after: int | None = None, close: bool = True) -> bytes:
    body = json.dumps({"error": code, "message": message}).encode()
    lines = [
        b"HTTP/1.1 %d %s" % (status, REASONS.get(status, b"Error")),
        b"Content-Type: application/json",
        b"Content-Length: %d" % len(body),
        b"x-scrapoxy-error: " + code.encode(),
    ]
    if instance is not None:
        lines.append(b"x-cache-proxyname: " + instance.encode())
    if status == 407:
        lines.append(b'Proxy-Authenticate: Basic realm="scrapoxy"')
    if retry_after is not None:
        lines.append(b"Retry-After: %d" % retry_after)
    if close:
        lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def connect_established(instance: str) -> bytes:
    return b"HTTP/1.1 200 Connection established\r\nx-cache-proxyname: " + instance.encode() + b"\r\n\r\n"
