"""``/api/scaling``: read and change ``{min, required, max}``.

A PATCH is checked twice: its shape here (an object, known keys, integers; no bool, float or
string), then by the manager's ``update_scaling`` against the current values, on the reactor
thread, so that no other change can slip in between. Every refusal is a 400 naming the field,
and leaves the scaling untouched. A ``required`` the PATCH does not send follows moved bounds
(``config.merge_scaling``).
"""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from scrapoxy_server.config import ConfigError

from .body import read_json_object
from .context import Commander
from .errors import bad_request

FIELDS = ("min", "required", "max")


def check_scaling_changes(body: dict[str, Any]) -> dict[str, int]:
    """The changes a PATCH body asks for; ApiError 400 naming the first bad field."""
    for key in body:
        if key not in FIELDS:
            # The unknown key is the field to blame; cut so a huge key is not echoed whole.
            raise bad_request(str(key)[:64], f"unknown field (known: {', '.join(FIELDS)})")
    changes: dict[str, int] = {}
    for key in FIELDS:
        if key not in body:
            continue
        value = body[key]
        # bool is an int subclass and 1e9 parses as float: both are refused, not coerced.
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad_request(key, f"{key} must be an integer, got {type(value).__name__}")
        if value < 0:
            raise bad_request(key, f"{key} must not be negative, got {value}")
        changes[key] = value
    return changes


def blamed_field(error: ConfigError, changes: dict[str, int]) -> str:
    """The field a refused PATCH is blamed on: one the client sent, when possible.

    ``validate_scaling`` names ``min`` when min > max; after ``{"max": 0}`` the client should
    hear about ``max``, the value it chose, not ``min`` which it never touched.
    """
    # The manager may validate with a "scaling." prefix; the API's fields are bare names.
    field = error.path.removeprefix("scaling.") or "body"
    if field in FIELDS and field not in changes and changes:
        return next(key for key in FIELDS if key in changes)
    return field


def scaling_blueprint(commander: Commander) -> Blueprint:
    api = Blueprint("scaling", __name__)

    @api.get("/scaling")
    def get_scaling() -> Response:
        scaling = commander.call(commander.ready_control().get_scaling)
        return jsonify(scaling.as_dict())

    @api.patch("/scaling")
    def patch_scaling() -> Response:
        changes = check_scaling_changes(read_json_object(field="body"))
        try:
            updated = commander.call(commander.ready_control().update_scaling, changes)
        except ConfigError as error:
            raise bad_request(blamed_field(error, changes), error.message) from None
        if updated is None:
            return Response(status=204)
        return jsonify(updated.as_dict())

    return api
