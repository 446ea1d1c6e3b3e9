"""The GUI's page at ``/``; its data comes from ``/api`` with the user's credentials.

The page and its assets (``static/``) carry no secret and need no auth: the login form
is part of them. Everything is served from here (no CDN), so the GUI works offline and
the Content-Security-Policy can be ``'self'`` only.
"""
from __future__ import annotations

from flask import Blueprint, Response, render_template


def gui_blueprint() -> Blueprint:
    gui = Blueprint("gui", __name__)

    @gui.get("/")
    def index() -> Response:
        response = Response(render_template("index.html"), mimetype="text/html")
        response.headers["Cache-Control"] = "no-cache"
        return response

    return gui
