"""Unauthenticated probes: ``/ip`` (the caller's address) and ``/healthz``.

``/ip`` is the instances' default health-check URL: the manager fetches it *through* an
instance, so the address it answers is that instance's egress IP, its fingerprint. It is
plain text with no trailing newline so the answer parses as an IP as is; it must stay open
because instances (stock tinyproxy, squid) cannot add the commander's password.
"""
from __future__ import annotations

from flask import Blueprint, Response, request


def _plain(text: str) -> Response:
    response = Response(text, mimetype="text/plain")
    # Every check must reach us: a cached answer would hide a changed egress IP.
    response.headers["Cache-Control"] = "no-store"
    return response


def echo_blueprint() -> Blueprint:
    echo = Blueprint("echo", __name__)

    @echo.get("/ip")
    def caller_ip() -> Response:
        return _plain(request.remote_addr or "")

    @echo.get("/healthz")
    def healthz() -> Response:
        return _plain("ok")

    return echo
