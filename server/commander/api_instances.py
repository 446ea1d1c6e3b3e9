"""``/api/instances``: list the pool, stop (replace) one instance.

Stopping is how a scraper reports a ban: the manager retires the instance and, the pool
being below ``required``, starts a fresh one with a new IP.

``POST /api/instances/stop`` names the instance with ``{"name": NAME}``, or with
``{"session": TOKEN}``: "the instance that CONNECT session TOKEN goes through". A client
that tunnels with ``USER;session=TOKEN`` as its proxy username (Scrapy's CONNECT mode) never
sees the ``x-cache-proxyname`` of the CONNECT reply, so the token is all it can name. The
answer then also says which instance it was: ``{"alive": n, "name": NAME}``.
"""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from .body import read_json_object
from .context import Commander
from .errors import ApiError, bad_request

# Instance names are provider ids: short. A longer "name" is a client bug, not an instance.
MAX_NAME_LENGTH = 256


def _shown(name: str) -> str:
    return name if len(name) <= 64 else name[:61] + "..."


def instances_blueprint(commander: Commander) -> Blueprint:
    api = Blueprint("instances", __name__)

    @api.get("/instances")
    def list_instances() -> Response:
        instances = commander.call(commander.ready_control().list_instances)
        return jsonify(list(instances))

    @api.post("/instances/stop")
    def stop_instance() -> Response:
        body = read_json_object(field="name")
        if "session" in body:
            return _stop_session(body)
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            raise bad_request("name", "name must be a non-empty string (the instance name)")
        if len(name) > MAX_NAME_LENGTH:
            raise bad_request("name", f"name must be at most {MAX_NAME_LENGTH} characters")
        try:
            alive = commander.call(commander.ready_control().stop_instance, name)
        except KeyError:
            raise ApiError(404, "not_found", f"no instance named {_shown(name)!r}",
                           field="name") from None
        return jsonify({"alive": alive})

    def _stop_session(body: dict[str, Any]) -> Response:
        if "name" in body:
            raise bad_request("session", "give either name or session, not both")
        token = body["session"]
        if not isinstance(token, str) or not token.strip():
            raise bad_request("session", "session must be a non-empty string (the token of "
                                         "USER;session=TOKEN)")
        if len(token) > MAX_NAME_LENGTH:
            raise bad_request("session", f"session must be at most {MAX_NAME_LENGTH} characters")
        control = commander.ready_control()

        def stop() -> tuple[str | None, int | None]:
            # One reactor call: the session's instance cannot change between lookup and stop.
            lookup = commander.session_instance
            name = lookup(token) if lookup is not None else None
            if name is None:
                return None, None
            try:
                return name, control.stop_instance(name)
            except KeyError:
                return name, None

        name, alive = commander.call(stop)
        if name is None:
            raise ApiError(404, "not_found", f"no instance for session {_shown(token)!r}",
                           field="session")
        if alive is None:
            raise ApiError(404, "not_found", f"session {_shown(token)!r} went through instance "
                                             f"{_shown(name)!r}, which no longer exists",
                           field="session")
        return jsonify({"alive": alive, "name": name})

    return api
