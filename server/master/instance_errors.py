"""Telling an instance's own error answer from the target's, in plain mode.

Through an instance, an unreachable target reads three ways: scrapoxy-instance answers 502
(with ``x-scrapoxy-error``), tinyproxy 500 "Unable to connect" (``Server: tinyproxy/...``),
squid 503 (``X-Squid-Error: ERR_CONNECT_FAIL 111``). Relayed as they are, a squid 503 looks like
the site banning the address (a scraper stops a healthy instance), and a scraper cannot tell
any of them from the site's own statuses. The master answers them as its own 502 ``upstream``
(504 ``timeout`` for a gateway timeout), as the wire contract's error table says.

A site could send these headers itself; the most it gets is its answer read as a 502.
"""
from __future__ import annotations

import json

from .http1 import ResponseHead


def instance_error(head: ResponseHead, body_start: bytes = b"") -> tuple[int, str] | None:
    """(status for the client, what the instance said) when ``head`` is the instance's own
    error answer (4xx/5xx marked by the instance), else None. ``body_start``, the body bytes
    that came with the head, gives scrapoxy-instance's message when it is all there."""
    if head.status < 400:
        return None
    for name, value in head.headers:
        lower = name.lower()
        if lower == b"x-squid-error":
            said = "squid " + value.decode("latin-1")
        elif lower == b"server" and value.lower().startswith(b"tinyproxy/"):
            said = f"tinyproxy {head.status} {head.reason.decode('latin-1')}"
        elif lower == b"x-scrapoxy-error":
            said = f"scrapoxy-instance {head.status} " + _message(body_start, value)
        else:
            continue
        return (504 if head.status == 504 else 502), said
    return None


def _message(body: bytes, code: bytes) -> str:
    """scrapoxy-instance's ``{"error", "message"}`` body, or its code when the body is not
    all there (or not JSON)."""
    try:
        message = json.loads(body)["message"]
    except (ValueError, KeyError, TypeError):
        return code.decode("latin-1")
    return str(message)[:300]
