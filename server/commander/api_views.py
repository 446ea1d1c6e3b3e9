"""``/api/config`` and ``/api/stats``: read-only views the composition root provides.

Both come in as callables so the commander knows nothing of how config and stats are
stored; ``config_view`` must already redact secrets (``config.to_dict(redact=True)``).
A view not provided answers a JSON 404, as an unknown path would.
"""
from __future__ import annotations

from collections.abc import Callable

from flask import Blueprint, Response, jsonify

from .context import Commander
from .errors import ApiError


def views_blueprint(commander: Commander) -> Blueprint:
    api = Blueprint("views", __name__)

    def answer(view: Callable[[], dict] | None, what: str) -> Response:
        if view is None:
            raise ApiError(404, "not_found", f"{what} is not available on this server")
        # Through the reactor: the config and the counters change on that thread.
        return jsonify(commander.call(view))

    @api.get("/config")
    def get_config() -> Response:
        return answer(commander.config_view, "the config")

    @api.get("/stats")
    def get_stats() -> Response:
        return answer(commander.stats_view, "stats")

    return api
