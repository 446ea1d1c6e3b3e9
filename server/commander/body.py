"""Reading JSON request bodies for the API, strictly.

The body is parsed whatever the ``Content-Type`` says (clients of the original Scrapoxy do
not always set it), but it must be one JSON object. ``NaN`` and ``Infinity``, which Python's
``json`` accepts by default, are refused: they are not JSON and no field wants them.
"""
from __future__ import annotations

import json
from typing import Any

from flask import request

from .errors import bad_request


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def read_json_object(*, field: str) -> dict[str, Any]:
    """The request body as a dict; otherwise ApiError 400 naming ``field``.

    ``field`` is what a malformed body is blamed on: the endpoint's one required field, or
    ``"body"`` when the endpoint takes several.
    """
    raw = request.get_data(cache=True)
    if not raw.strip():
        raise bad_request(field, "the body must be a JSON object")
    try:
        value = json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        # UnicodeDecodeError and JSONDecodeError are both ValueErrors.
        raise bad_request(field, "the body is not valid JSON") from None
    if not isinstance(value, dict):
        raise bad_request(field, "the body must be a JSON object")
    return value
