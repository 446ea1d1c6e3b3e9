"""Typed client for the commander's REST API (``/api``), usable from scripts and tests.

:class:`CommanderClient` uses ``requests`` and blocks: call it from a script, a notebook or a
thread, never from a Scrapy middleware (the reactor thread). The middlewares use
:class:`scrapoxy_scrapy.reactor_commander.ReactorCommanderClient`, which speaks the same API
without blocking and shares the value types and parsing functions of this module.

    client = CommanderClient("http://127.0.0.1:8889/api", username="admin", password="pw")
    client.update_scaling(required=10)
    for instance in client.alive_instances():
        print(instance.name, instance.fingerprint)

Errors: :class:`CommanderUnavailable` when the commander cannot be reached (or answers
garbage), :class:`CommanderHTTPError` with ``status``, ``code``, ``message`` and ``field`` when
it answers an error (``field`` names the bad field of a 400).
"""
from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests

__all__ = [
    "Address", "CommanderClient", "CommanderError", "CommanderHTTPError", "CommanderUnavailable",
    "Event", "Instance", "Scaling", "StoppedInstance", "api_base_url", "authorization",
    "parse_error", "parse_instances", "parse_scaling", "parse_sse", "parse_stopped",
]


# --- values ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Address:
    hostname: str
    port: int


@dataclass(frozen=True)
class Instance:
    """One instance as ``GET /api/instances`` lists it."""

    name: str
    provider: str
    status: str
    alive: bool
    fingerprint: str | None = None
    address: Address | None = None
    region: str | None = None
    started_at: float | None = None  # epoch seconds
    requests: int = 0


@dataclass(frozen=True)
class Scaling:
    min: int
    required: int
    max: int


@dataclass(frozen=True)
class StoppedInstance:
    """The answer to a stop by session token: which instance that was, and the alive count."""

    name: str
    alive: int


@dataclass(frozen=True)
class Event:
    """One Server-Sent Event of ``GET /api/events``; ``data`` is decoded JSON when it parses."""

    event: str
    data: Any
    id: str | None = None


class CommanderError(Exception):
    """Any failure talking to the commander."""


class CommanderUnavailable(CommanderError):
    """The commander could not be reached, timed out, or answered something that is not JSON."""


class CommanderHTTPError(CommanderError):
    """The commander answered an error status; ``field`` names the bad field of a 400."""

    def __init__(self, *, status: int, code: str = "http_error", message: str = "",
                 field: str | None = None, body: bytes = b"") -> None:
        super().__init__(f"commander answered {status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.body = body


# --- pure helpers (shared with the reactor client) -------------------------------------------

def api_base_url(url: str) -> str:
    """``http://host:8889``, ``http://host:8889/`` and ``http://host:8889/api/`` all mean
    ``http://host:8889/api``. Raises ``ValueError`` for something that is not an http(s) URL."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"SCRAPOXY_API must look like http://host:8889/api, got {url!r}")
    path = parts.path.rstrip("/")
    if not path.endswith("/api"):
        path += "/api"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def authorization(username: str | None, password: str | None) -> str | None:
    """The ``Authorization`` value: Basic with a username; with only a password, the bare
    ``base64(password)`` form of the original Scrapoxy, which the commander also accepts."""
    if username:
        token = base64.b64encode(f"{username}:{password or ''}".encode()).decode("ascii")
        return f"Basic {token}"
    if password:
        return base64.b64encode(password.encode()).decode("ascii")
    return None


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


def parse_instance(payload: Any) -> Instance:
    if not isinstance(payload, dict) or "name" not in payload:
        raise CommanderUnavailable(f"not an instance: {payload!r:.200}")
    address = payload.get("address")
    started_at = payload.get("started_at")
    return Instance(
        name=str(payload["name"]),
        provider=str(payload.get("provider", "")),
        status=str(payload.get("status", "")),
        alive=payload.get("alive") is True,
        fingerprint=_optional_str(payload.get("fingerprint")),
        address=(Address(str(address.get("hostname", "")), int(address.get("port") or 0))
                 if isinstance(address, dict) else None),
        region=_optional_str(payload.get("region")),
        started_at=None if started_at is None else float(started_at),
        requests=int(payload.get("requests") or 0),
    )


def parse_instances(payload: Any) -> list[Instance]:
    if not isinstance(payload, list):
        raise CommanderUnavailable(f"GET /api/instances did not answer a list: {payload!r:.200}")
    return [parse_instance(item) for item in payload]


def parse_scaling(payload: Any) -> Scaling:
    try:
        return Scaling(min=int(payload["min"]), required=int(payload["required"]),
                       max=int(payload["max"]))
    except (TypeError, KeyError, ValueError):
        raise CommanderUnavailable(f"not a scaling: {payload!r:.200}") from None


def parse_stopped(payload: Any) -> StoppedInstance:
    try:
        return StoppedInstance(name=str(payload["name"]), alive=int(payload["alive"]))
    except (TypeError, KeyError, ValueError):
        raise CommanderUnavailable(f"not a stop answer: {payload!r:.200}") from None


def parse_error(status: int, body: bytes) -> CommanderHTTPError:
    """The commander's JSON error ``{"error", "message", "field"}``, or whatever it sent."""
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        return CommanderHTTPError(status=status, code=str(payload.get("error", "http_error")),
                                  message=str(payload.get("message", "")),
                                  field=_optional_str(payload.get("field")), body=body)
    return CommanderHTTPError(status=status, message=body[:200].decode("utf-8", "replace"),
                              body=body)


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        raise CommanderUnavailable(f"the commander answered non-JSON: {body[:200]!r}") from None


def scaling_changes(*, min: int | None, required: int | None,  # noqa: A002 - the API's names
                    max: int | None) -> dict[str, int]:  # noqa: A002
    return {key: value for key, value in (("min", min), ("required", required), ("max", max))
            if value is not None}


def parse_sse(lines: Iterable[str]) -> Iterator[Event]:
    """Events of a ``text/event-stream`` given line by line (without line endings)."""
    event, data, event_id = "message", [], None
    for line in lines:
        if line == "":
            if data:
                text = "\n".join(data)
                try:
                    value: Any = json.loads(text)
                except ValueError:
                    value = text
                yield Event(event=event, data=value, id=event_id)
            event, data = "message", []
            continue
        if line.startswith(":"):
            continue  # a comment: keep-alive
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            event_id = value


# --- the blocking client ---------------------------------------------------------------------

class CommanderClient:
    """The commander's API over ``requests`` (blocking)."""

    def __init__(self, api: str, *, username: str | None = None, password: str | None = None,
                 timeout: float = 10.0, session: requests.Session | None = None) -> None:
        self.base_url = api_base_url(api)
        self.timeout = timeout
        self.session = requests.Session() if session is None else session
        # Loopback or not, an API call must not wander through http_proxy from the environment.
        self.session.trust_env = False
        value = authorization(username, password)
        if value is not None:
            self.session.headers["Authorization"] = value

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> CommanderClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        try:
            response = self.session.request(method, self.base_url + path, **kwargs)
        except requests.RequestException as error:
            raise CommanderUnavailable(f"{method} {path}: {error}") from error
        if response.status_code >= 400:
            raise parse_error(response.status_code, response.content)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return parse_json(self._request(method, path, **kwargs).content)

    # instances
    def instances(self) -> list[Instance]:
        return parse_instances(self._json("GET", "/instances"))

    def alive_instances(self) -> list[Instance]:
        return [instance for instance in self.instances() if instance.alive]

    def stop_instance(self, name: str) -> int:
        """Stop (and so replace) instance ``name``; returns the alive count after."""
        return int(self._json("POST", "/instances/stop", json={"name": name})["alive"])

    def stop_session(self, token: str) -> StoppedInstance:
        """Stop the instance that CONNECT session ``token`` (``USER;session=TOKEN``) tunnels
        through; ``CommanderHTTPError`` 404 when the master knows no such session."""
        return parse_stopped(self._json("POST", "/instances/stop", json={"session": token}))

    # scaling
    def scaling(self) -> Scaling:
        return parse_scaling(self._json("GET", "/scaling"))

    def update_scaling(self, *, min: int | None = None,  # noqa: A002 - the API's names
                       required: int | None = None, max: int | None = None,  # noqa: A002
                       ) -> Scaling | None:
        """PATCH the given fields; returns the new scaling, or None if nothing changed (204)."""
        response = self._request("PATCH", "/scaling",
                                 json=scaling_changes(min=min, required=required, max=max))
        return None if response.status_code == 204 else parse_scaling(parse_json(response.content))

    def wake(self) -> Scaling:
        """``required = max``: what the master does on traffic, done before the first request."""
        scaling = self.scaling()
        return self.update_scaling(required=scaling.max) or scaling

    def sleep(self) -> Scaling:
        """``required = min``: the pool may shrink now."""
        scaling = self.scaling()
        return self.update_scaling(required=scaling.min) or scaling

    # config, stats, metrics, events
    def config(self) -> dict[str, Any]:
        return self._json("GET", "/config")

    def update_config(self, changes: dict[str, Any]) -> dict[str, Any]:
        response = self._request("PATCH", "/config", json=changes)
        return {} if response.status_code == 204 else parse_json(response.content)

    def stats(self) -> dict[str, Any]:
        return self._json("GET", "/stats")

    def metrics(self) -> str:
        """Prometheus text from ``/metrics`` (next to ``/api``, not under it)."""
        url = self.base_url.removesuffix("/api") + "/metrics"
        try:
            response = self.session.get(url, timeout=self.timeout)
        except requests.RequestException as error:
            raise CommanderUnavailable(f"GET /metrics: {error}") from error
        if response.status_code >= 400:
            raise parse_error(response.status_code, response.content)
        return response.text

    def events(self, *, last_event_id: str | None = None, read_timeout: float | None = None,
               reconnects: int = 3) -> Iterator[Event]:
        """Follow ``GET /api/events`` (Server-Sent Events) until the caller stops iterating.

        ``last_event_id`` resumes after that event: the commander replays what came since, or,
        when it no longer holds that event, sends the current state of every kind. When the
        stream drops (commander restarted, a proxy closed it, ``read_timeout`` passed without
        even a heartbeat), it reconnects at once with the id of the last event seen, so no
        event is lost or repeated. After ``reconnects`` drops in a row without an event in
        between it raises ``CommanderUnavailable``, as it does when the commander refuses the
        connection; resume later with ``last_event_id`` set to the last ``Event.id`` you got.
        """
        drops = 0
        while True:
            headers = {"Accept": "text/event-stream"}
            if last_event_id is not None:
                headers["Last-Event-ID"] = last_event_id
            response = self._request("GET", "/events", stream=True, headers=headers,
                                     timeout=(self.timeout, read_timeout))
            dropped: Exception | None = None
            try:
                with response:
                    lines = (line.decode("utf-8", "replace") if isinstance(line, bytes) else line
                             for line in response.iter_lines())
                    for event in parse_sse(lines):
                        drops = 0
                        if event.id is not None:
                            last_event_id = event.id
                        yield event
            except requests.RequestException as error:  # reset, chunk cut, read timeout
                dropped = error
            drops += 1
            if drops > reconnects:
                raise CommanderUnavailable(
                    f"GET /events: the stream ended {drops} times in a row without an event "
                    f"(last: {dropped or 'closed by the commander'})") from dropped
