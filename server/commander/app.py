"""The commander's Flask app factory.

``create_app`` wires the blueprints (one per resource) to the manager facade. Views run in
Twisted's WSGI thread pool, so every call into ``control`` (and the config and stats views)
goes through ``call_in_reactor``: ``blockingCallFromThread`` in production (see
``wsgi.reactor_caller``), a direct call in tests.

Auth covers everything under ``/api`` (the GUI's data included) and ``/metrics``; ``/``,
``/static/...``, ``/ip`` and ``/healthz`` are open. An unauthenticated request to ``/api``
gets 401 before routing, so it learns nothing, not even which paths exist.

``GET /api/events`` (Server-Sent Events) is not a Flask view: a stream would hold a WSGI
thread for its whole life. ``wsgi.make_site`` mounts ``sse.EventStreamResource`` beside the
app when it was built with a ``live`` feed; ``app.extensions["scrapoxy"]`` carries what it
needs (the feed and the same auth check).
"""
from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

from functools import partial

from flask import Flask, Response, request
from flask.json.provider import DefaultJSONProvider

from .api_instances import instances_blueprint
from .api_providers import providers_blueprint
from .api_scaling import scaling_blueprint
from .api_views import views_blueprint
from .auth import is_authorized
from .context import CallInReactor, Commander, Control
from .echo import echo_blueprint
from .errors import error_response, is_api_request, register_error_handlers
from .events import LiveFeed
from .gui import gui_blueprint
from .metrics import CONTENT_TYPE, gather, metrics_registry, render

REALM = "scrapoxy"
NO_BODY_STATUSES = (204, 304)
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


class _CommanderFlask(Flask):
    def make_default_options_response(self) -> Response:
        """``OPTIONS`` answers 204 with ``Allow`` (RFC 9110 section 9.3.7), not Flask's 200
        with an empty text/html body: no body, so nothing that is not JSON under ``/api``."""
        response = super().make_default_options_response()
        response.status_code = 204
        # Sorted, as in a 405's Allow: one order for one resource.
        response.headers["Allow"] = ", ".join(sorted(response.allow))
        return response


def _unauthorized(message: str) -> Response:
    response = error_response(401, "auth", message)
    if request.headers.get("X-Requested-With") == "XMLHttpRequest":
        # The GUI's fetch() marks itself: a Basic challenge would make the browser pop its
        # own login dialog over the page's form, so the GUI gets a scheme browsers ignore.
        response.headers["WWW-Authenticate"] = f'Scrapoxy realm="{REALM}"'
    else:
        response.headers["WWW-Authenticate"] = f'Basic realm="{REALM}"'
    return response


def _is_protected() -> bool:
    return is_api_request() or request.path == "/metrics"


def create_app(
    *,
    control: Control | None,
    call_in_reactor: CallInReactor,
    username: str,
    password: str,
    config_view: Callable[[], dict] | None = None,
    stats_view: Callable[..., dict] | None = None,
    config_update: Callable[[dict], Any] | None = None,
    live: LiveFeed | None = None,
    session_instance: Callable[[str], str | None] | None = None,
) -> Flask:
    """Build the commander app.

    ``password`` must not be empty: the composition root generates one when the config has
    none, and an empty one here would mean an open API by accident.

    ``control`` may be None at first; ``app.set_control(manager)`` hands it over later
    (until then the API answers 503). ``config_update(patch)`` runs on the reactor, raises
    ``ConfigError`` naming the key path, returns the new redacted config (None: nothing
    changed). ``stats_view`` defaults to the live feed's samples (``since`` as an optional
    argument). ``live``
    (the event ring and the stats sampler) enables ``/api/events``. ``session_instance(token)``
    (the master's CONNECT session map, read on the reactor) lets ``POST /api/instances/stop``
    take ``{"session": TOKEN}``.
    """
    if not password:
        raise ValueError("the commander needs a non-empty password")
    if stats_view is None and live is not None:
        stats_view = live.stats_view
    commander = Commander(control=control, call_in_reactor=call_in_reactor,
                          config_view=config_view, stats_view=stats_view,
                          config_update=config_update, live=live,
                          session_instance=session_instance)
    authorize = partial(is_authorized, username=username, password=password)
    stats = live.stats if live is not None else None
    registry = metrics_registry(lambda: commander.call(gather, stats, commander.control))

    app = _CommanderFlask(__name__, static_folder="static", template_folder="templates")
    app.json = _JSONProvider(app)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES

    @app.before_request
    def _require_auth() -> Response | None:
        if not _is_protected():
            return None
        header = request.headers.get("Authorization")
        if header is None:
            return _unauthorized("authentication required (HTTP Basic)")
        if not authorize(header):
            # Never say which part was wrong, never echo what was sent.
            return _unauthorized("wrong credentials")
        return None

    @app.after_request
    def _headers(response: Response) -> Response:
        if response.status_code in NO_BODY_STATUSES:
            # No body, so nothing to type: Flask's default text/html would be a lie.
            response.headers.pop("Content-Type", None)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if is_api_request():
            # API answers are live state, and may be behind auth: no shared caches.
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(render(registry), mimetype=None,
                        headers={"Content-Type": CONTENT_TYPE, "Cache-Control": "no-store"})

    def set_control(new_control: Control) -> None:
        commander.control = new_control

    app.set_control = set_control  # type: ignore[attr-defined]
    app.extensions["scrapoxy"] = {"live": live, "authorize": authorize, "commander": commander}

    register_error_handlers(app)
    app.register_blueprint(instances_blueprint(commander), url_prefix="/api")
    app.register_blueprint(scaling_blueprint(commander), url_prefix="/api")
    app.register_blueprint(providers_blueprint(commander), url_prefix="/api")
    app.register_blueprint(views_blueprint(commander), url_prefix="/api")
    app.register_blueprint(echo_blueprint())
    app.register_blueprint(gui_blueprint())
    return app
