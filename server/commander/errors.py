"""JSON errors for the API: one shape for every failure under ``/api``.

Every error a client of ``/api`` can see is ``{"error": CODE, "message": ...}`` (plus
``"field"`` when one input is to blame), never Werkzeug's HTML page: scripts and the Scrapy
middleware parse these bodies, and an HTML 404 looks like a GUI bug rather than a typo.
Outside ``/api`` (the GUI's pages) Flask's ordinary answers are kept.
"""
from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from scrapoxy_server.state import StateWriteError

log = logging.getLogger(__name__)

# Werkzeug's status -> our stable error code. Codes are part of the API: do not rename.
CODES: dict[int, str] = {
    400: "bad_request",
    401: "auth",
    404: "not_found",
    405: "method_not_allowed",
    408: "timeout",
    413: "too_large",
    415: "unsupported_media_type",
}


class ApiError(Exception):
    """Raised by a view to answer with a JSON error."""

    def __init__(self, status: int, code: str, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field


def bad_request(field: str, message: str) -> ApiError:
    return ApiError(400, "bad_request", message, field=field)


def error_response(status: int, code: str, message: str, *, field: str | None = None) -> Response:
    body: dict[str, str] = {"error": code, "message": message}
    if field is not None:
        body["field"] = field
    response = jsonify(body)
    response.status_code = status
    # Errors describe this moment only; a cache replaying them would mislead a client.
    response.headers["Cache-Control"] = "no-store"
    return response


def is_api_request() -> bool:
    return request.path == "/api" or request.path.startswith("/api/")


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(error: ApiError) -> Response:
        return error_response(error.status, error.code, error.message, field=error.field)

    @app.errorhandler(StateWriteError)
    def _not_saved(error: StateWriteError) -> Response:
        # In force but not durable: the client must know it will not survive a restart.
        return error_response(500, "not_saved", str(error))

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Response | HTTPException:
        if not is_api_request():
            return error
        status = error.code or 500
        response = error_response(status, CODES.get(status, "http_error"),
                                  _message(status, error))
        if status == 405 and isinstance(error.valid_methods, (list, tuple, set)):
            # Keep the Allow header Werkzeug computed: it tells a client what would work.
            response.headers["Allow"] = ", ".join(sorted(error.valid_methods))
        return response

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response | tuple[str, int]:
        log.exception("commander: unhandled error on %s %s", request.method, request.path)
        if is_api_request():
            # The message stays generic: exception text may hold internals (paths, secrets).
            return error_response(500, "internal", "internal error, see the server log")
        return "internal error, see the server log\n", 500


def _message(status: int, error: HTTPException) -> str:
    """Werkzeug's words are written for a person at a browser; say what the API lacks."""
    if status == 404:
        return f"no API endpoint at {request.path[:200]}"
    if status == 405 and error.valid_methods:
        return (f"{request.method} is not allowed on {request.path[:200]} "
                f"(allowed: {', '.join(sorted(error.valid_methods))})")
    return error.description or error.name
