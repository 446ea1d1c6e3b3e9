"""``/api/config`` and ``/api/stats``: views over what the composition root provides.

Config and stats come in as callables so the commander knows nothing of how they are
stored. ``config_view`` must already redact secrets (``config.to_dict(redact=True)``), and
so must ``config_update``'s answer. A view not provided answers a JSON 404, as an unknown
path would.

``PATCH /api/config`` takes a partial config, validated like the file: 400 naming the key
path (``scaling.min``, ``providers[0].region``) when refused, 200 with the new (redacted)
config, 204 when nothing changed (what the original's ``Commander.update_config`` expects).
A secret sent back as the redaction mark ``"***"`` means "unchanged" and is dropped from the
patch, so a client that edits the config it read never overwrites a password with stars.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, jsonify, request
from twisted.internet.defer import Deferred

from scrapoxy_server.config import ConfigError
from scrapoxy_server.redaction import REDACTED, SECRET_KEYS

from .body import read_json_object
from .context import Commander
from .errors import ApiError, bad_request


def without_redacted_secrets(patch: Any) -> Any:
    """``patch`` minus every secret whose value is the redaction mark (at any depth)."""
    if isinstance(patch, dict):
        return {key: without_redacted_secrets(value) for key, value in patch.items()
                if not (key in SECRET_KEYS and value == REDACTED)}
    if isinstance(patch, list):
        return [without_redacted_secrets(value) for value in patch]
    return patch


def apply_config(commander: Commander, patch: dict) -> dict | None | Deferred:
    """Runs on the reactor thread: the new redacted config, or None if nothing changed (as
    ``config_update`` says: only it sees secrets, which the redacted views hide).

    ``config_update`` may answer a Deferred (it fires once the change is saved); the event
    is published then, and ``call_in_reactor`` waits for it.
    """
    assert commander.config_update is not None

    def finish(after: dict | None) -> dict | None:
        if after is not None and commander.live is not None:
            commander.live.config_changed(after)
        return after

    result = commander.config_update(patch)
    if isinstance(result, Deferred):
        return result.addCallback(finish)
    return finish(result)


def views_blueprint(commander: Commander) -> Blueprint:
    api = Blueprint("views", __name__)

    def answer(view: Callable[..., dict] | None, what: str, *args: Any) -> Response:
        if view is None:
            raise ApiError(404, "not_found", f"{what} is not available on this server")
        # Through the reactor: the config and the counters change on that thread.
        return jsonify(commander.call(view, *args))

    @api.get("/config")
    def get_config() -> Response:
        return answer(commander.config_view, "the config")

    @api.patch("/config")
    def patch_config() -> Response:
        if commander.config_update is None:
            raise ApiError(404, "not_found", "changing the config is not available on this server")
        patch = without_redacted_secrets(read_json_object(field="body"))
        try:
            updated = commander.call(apply_config, commander, patch)
        except ConfigError as error:
            raise bad_request(error.path or "body", error.message) from None
        if updated is None:
            return Response(status=204)
        return jsonify(updated)

    @api.get("/stats")
    def get_stats() -> Response:
        since = request.args.get("since")
        if since is None:
            return answer(commander.stats_view, "stats")
        try:
            since_value = float(since)
        except ValueError:
            since_value = math.nan
        if not math.isfinite(since_value):
            raise bad_request("since", "since must be a number (epoch seconds)")
        return answer(commander.stats_view, "stats", since_value)

    return api
