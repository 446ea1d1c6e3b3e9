"""The commander's Flask app factory.

``create_app`` wires the blueprints (one per resource) to the manager facade. Views run in
Twisted's WSGI thread pool, so every call into ``control`` (and the config and stats views)
goes through ``call_in_reactor``: ``blockingCallFromThread`` in production (see
``wsgi.reactor_caller``), a direct call in tests.

Auth covers everything under ``/api`` (the GUI's data included); ``/``, ``/static/...``,
``/ip`` and ``/healthz`` are open. An unauthenticated request to ``/api`` gets 401 before
routing, so it learns nothing, not even which paths exist.
"""
from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, request
from flask.json.provider import DefaultJSONProvider

from .api_instances import instances_blueprint
from .api_scaling import scaling_blueprint
from .api_views import views_blueprint
from .auth import is_authorized
from .context import CallInReactor, Commander, Control
from .echo import echo_blueprint
from .errors import error_response, is_api_request, register_error_handlers
from .gui import gui_blueprint

REALM = "scrapoxy"
# API bodies are a few fields; anything bigger is a mistake or an attack.
MAX_BODY_BYTES = 1024 * 1024
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    # Nothing third-party by design; this keeps it so even if markup is ever injected.
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
                               "form-action 'self'",
}


class _JSONProvider(DefaultJSONProvider):
    """Flask's JSON plus enums as their value (the facade may hand back ``Status``)."""

    @staticmethod
    def default(o: Any) -> Any:
        if isinstance(o, enum.Enum):
            return o.value
        return DefaultJSONProvider.default(o)


def _unauthorized(message: str) -> Response:
    response = error_response(401, "auth", message)
    if request.headers.get("X-Requested-With") == "XMLHttpRequest":
        # The GUI's fetch() marks itself: a Basic challenge would make the browser pop its
        # own login dialog over the page's form, so the GUI gets a scheme browsers ignore.
        response.headers["WWW-Authenticate"] = f'Scrapoxy realm="{REALM}"'
    else:
        response.headers["WWW-Authenticate"] = f'Basic realm="{REALM}"'
    return response


def create_app(
    *,
    control: Control,
    call_in_reactor: CallInReactor,
    username: str,
    password: str,
    config_view: Callable[[], dict] | None = None,
    stats_view: Callable[[], dict] | None = None,
) -> Flask:
    """Build the commander app.

    ``password`` must not be empty: the composition root generates one when the config has
    none, and an empty one here would mean an open API by accident.
    """
    if not password:
        raise ValueError("the commander needs a non-empty password")
    commander = Commander(control=control, call_in_reactor=call_in_reactor,
                          config_view=config_view, stats_view=stats_view)

    app = Flask(__name__, static_folder="static", template_folder="templates")
    app.json = _JSONProvider(app)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES

    @app.before_request
    def _require_auth() -> Response | None:
        if not is_api_request():
            return None
        header = request.headers.get("Authorization")
        if header is None:
            return _unauthorized("authentication required (HTTP Basic)")
        if not is_authorized(header, username=username, password=password):
            # Never say which part was wrong, never echo what was sent.
            return _unauthorized("wrong credentials")
        return None

    @app.after_request
    def _headers(response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if is_api_request():
            # API answers are live state, and may be behind auth: no shared caches.
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    register_error_handlers(app)
    app.register_blueprint(instances_blueprint(commander), url_prefix="/api")
    app.register_blueprint(scaling_blueprint(commander), url_prefix="/api")
    app.register_blueprint(views_blueprint(commander), url_prefix="/api")
    app.register_blueprint(echo_blueprint())
    app.register_blueprint(gui_blueprint())
    return app
