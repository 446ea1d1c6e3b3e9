"""``/api/instances``: list the pool, stop (replace) one instance.

Stopping is how a scraper reports a ban: the manager retires the instance and, the pool
being below ``required``, starts a fresh one with a new IP.
"""
from __future__ import annotations

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
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            raise bad_request("name", "name must be a non-empty string (the instance name)")
        if len(name) > MAX_NAME_LENGTH:
            raise bad_request("name", f"name must be at most {MAX_NAME_LENGTH} characters")
        try:
            alive = commander.call(commander.ready_control().stop_instance, name)
        except KeyError:
            raise ApiError(404, "not_found", f"no instance named {_shown(name)!r}") from None
        return jsonify({"alive": alive})

    return api
