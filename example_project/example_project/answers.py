"""What the example spiders report about an answer: the master's own errors, and whether a
page is HTML at all.

The master marks the errors it makes itself (no instance alive, instance or target unreachable,
a TLS failure, a timeout) with ``x-scrapoxy-error: CODE`` and a JSON body
``{"error": CODE, "message": ...}``, so they can be told from the target's own statuses. A
report should name them: "502 upstream: certificate verify failed" tells the user what to fix,
a bare 502 does not. Such a body is JSON, not HTML: selectors must not be run on it.
"""
from __future__ import annotations

import json
import logging
from typing import Any

from scrapy.http import HtmlResponse, Response

MASTER_ERROR_HEADER = "x-scrapoxy-error"


def is_html(response: Response) -> bool:
    """Only HTML pages have a title and links (``response.css`` fails on a JSON answer)."""
    return isinstance(response, HtmlResponse)


def master_error(response: Response) -> dict[str, Any] | None:
    """``{"error": CODE, "message": ...}`` when the master made this answer, else None."""
    code = response.headers.get(MASTER_ERROR_HEADER)
    if code is None:
        return None
    message = ""
    try:
        payload = json.loads(response.body)
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        message = str(payload.get("message", ""))
    return {"error": code.decode("latin-1").strip(), "message": message}


def proxyname(response: Response) -> str | None:
    """The instance that served the answer (``x-cache-proxyname``), if any."""
    name = response.headers.get("x-cache-proxyname")
    return name.decode("latin-1") if name else None


def answer_item(response: Response, *, logger: logging.Logger | logging.LoggerAdapter
                ) -> dict[str, Any]:
    """``{url, status, proxyname}``, plus ``error`` and ``message`` (logged as a warning) when
    the master made the answer: the part of an item every example spider reports."""
    item: dict[str, Any] = {"url": response.url, "status": response.status,
                            "proxyname": proxyname(response)}
    error = master_error(response)
    if error is not None:
        logger.warning("scrapoxy master error on %s: %s %s: %s", response.url, response.status,
                       error["error"], error["message"])
        item.update(error)
    return item
