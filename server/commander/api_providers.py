"""``GET /api/providers``: each provider, its instances, and the error it is failing with.

Without it, a provider that cannot create instances (``VcpuLimitExceeded``, a missing image,
bad credentials) shows only in the server log, while ``/api/instances`` answers ``[]``. The
facade's ``provider_status()`` (see ``Manager.provider_status``) gives one entry per
provider::

    {"name": "aws", "type": "awsec2", "instances": 0, "alive": 0,
     "error": {"action": "create", "message": "...", "since": 1700000000.0,
               "failures": 2, "retry_at": 1700000060.0} | null}

Error messages come from cloud SDKs and may quote a URL: they are redacted like the config.
"""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from scrapoxy_server.redaction import redact_text

from .context import Commander
from .errors import ApiError


def shown_provider_status(control: Any) -> list[dict[str, Any]] | None:
    """The facade's provider status, safe to show; None when the facade has none. Runs on
    the reactor thread (the manager's state lives there)."""
    status = getattr(control, "provider_status", None)
    if status is None:
        return None
    out = []
    for entry in status():
        error = entry.get("error")
        if error is not None:
            error = {**error, "message": redact_text(str(error.get("message", "")))}
        out.append({**entry, "error": error})
    return out


def providers_blueprint(commander: Commander) -> Blueprint:
    api = Blueprint("providers", __name__)

    @api.get("/providers")
    def list_providers() -> Response:
        providers = commander.call(shown_provider_status, commander.ready_control())
        if providers is None:
            raise ApiError(404, "not_found", "provider status is not available on this server")
        return jsonify(providers)

    return api
