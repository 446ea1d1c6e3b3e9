"""What the leader and its master workers tell each other, and how values cross the channel.

leader -> worker:

- ``{"kind": "start", "host", "port", "backlog", "settings": {...}, "auth": {...} | null,
  "tls": {"verify", "ca_file"}, "log_level"}``: once, first. ``port`` is the leader's actual
  port (it may have been 0 in the config).
- ``{"kind": "pool", "endpoints": [...]}``: the routable instances, whenever they change.
- ``{"kind": "settings", "settings": {...}, "auth": {...} | null}``: new master settings
  (``PATCH /api/config``); requests read from then on use them.

worker -> leader:

- ``{"kind": "listening", "pid"}``: the worker serves.
- ``{"kind": "report", "records": [[instance, status, error, bytes_in, bytes_out, duration],
  ...], "activity": bool, "failures": [name, ...], "inflight": {name: n} | null}``: what
  happened since the last report (``inflight`` only when it changed).

The worker's scraper-auth password crosses the pipe to its own child process, never a log.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from ..master.auth import ScraperAuth
from ..master.proxy import MasterSettings
from ..models import Address, Credentials, Endpoint


def endpoint_to_wire(endpoint: Endpoint) -> dict[str, Any]:
    credentials = endpoint.credentials
    return {"name": endpoint.name, "host": endpoint.address.hostname,
            "port": endpoint.address.port,
            "username": credentials.username if credentials is not None else None,
            "password": credentials.password if credentials is not None else None}


def endpoint_from_wire(data: dict[str, Any]) -> Endpoint:
    credentials = None
    if data.get("username") is not None:
        credentials = Credentials(username=data["username"], password=data["password"])
    return Endpoint(name=data["name"], address=Address(data["host"], int(data["port"])),
                    credentials=credentials)


def settings_to_wire(settings: MasterSettings) -> dict[str, Any]:
    return {f.name: _plain(getattr(settings, f.name)) for f in dataclasses.fields(settings)}


def settings_from_wire(data: dict[str, Any]) -> MasterSettings:
    known = {f.name: f for f in dataclasses.fields(MasterSettings)}
    values = {}
    for name, value in data.items():
        if name not in known:
            raise ValueError(f"unknown master setting {name!r} from the leader")
        # JSON has no tuples; the settings hold their sequences as tuples.
        values[name] = tuple(value) if isinstance(value, list) else value
    return MasterSettings(**values)


def auth_to_wire(auth: Any) -> dict[str, str] | None:
    """The config's ``master.auth`` (username and password), for the pipe to a worker."""
    return None if auth is None else {"username": auth.username, "password": auth.password}


def auth_from_wire(data: dict[str, str] | None) -> ScraperAuth | None:
    return None if data is None else ScraperAuth(username=data["username"],
                                                 password=data["password"])


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
