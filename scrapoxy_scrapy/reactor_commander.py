"""The commander's API from inside the Twisted reactor, without blocking it.

Scrapy middlewares run on the reactor thread: a ``requests`` call there would freeze every
download in flight for as long as the commander takes to answer. This client sends the same
calls as :class:`scrapoxy_scrapy.commander.CommanderClient` through ``treq`` (Twisted's own
non-blocking HTTP client, with a persistent connection pool) and returns Deferreds. It does not
borrow the reactor's thread pool either, which Scrapy uses for DNS.

Every call is bounded by ``timeout`` seconds (it is cancelled after), and every failure becomes
a :class:`~scrapoxy_scrapy.commander.CommanderError`, so callers handle one error type.

It has every call of the blocking client except ``events()``: no middleware follows the event
stream, and a stream that lives as long as the crawl is better read by a script with the
blocking client (which resumes with ``Last-Event-ID``).
"""
from __future__ import annotations

from typing import Any

import treq
from treq.client import HTTPClient
from twisted.internet import defer
from twisted.web.client import Agent, HTTPConnectionPool

from scrapoxy_scrapy.commander import (
    CommanderError,
    CommanderUnavailable,
    Instance,
    Scaling,
    StoppedInstance,
    api_base_url,
    authorization,
    parse_error,
    parse_instances,
    parse_json,
    parse_scaling,
    parse_stopped,
    scaling_changes,
)


class ReactorCommanderClient:
    """Same calls as ``CommanderClient``, each returning a ``Deferred``."""

    def __init__(self, api: str, *, username: str | None = None, password: str | None = None,
                 timeout: float = 10.0, reactor: Any = None) -> None:
        self.base_url = api_base_url(api)
        self.timeout = timeout
        self._authorization = authorization(username, password)
        self._reactor = reactor
        self._pool: HTTPConnectionPool | None = None
        self._client: HTTPClient | None = None

    def _http(self) -> HTTPClient:
        # Built on first use, not in __init__: no reactor is touched at construction.
        if self._client is None:
            if self._reactor is None:
                from twisted.internet import reactor
                self._reactor = reactor
            self._pool = HTTPConnectionPool(self._reactor, persistent=True)
            self._pool.maxPersistentPerHost = 2
            self._client = HTTPClient(Agent(self._reactor, pool=self._pool))
        return self._client

    def close(self) -> defer.Deferred[None]:
        """Close the pooled connections (call on spider close)."""
        if self._pool is None:
            return defer.succeed(None)
        return self._pool.closeCachedConnections()

    async def _call(self, method: str, path: str, json: Any = None, *,
                    url: str | None = None) -> tuple[int, bytes]:
        headers = {"Accept": ["application/json"]}
        if self._authorization is not None:
            headers["Authorization"] = [self._authorization]
        kwargs: dict[str, Any] = {"headers": headers, "timeout": self.timeout}
        if json is not None:
            kwargs["json"] = json
        try:
            response = await self._http().request(method, url or self.base_url + path, **kwargs)
            body = await treq.content(response)
        except CommanderError:
            raise
        except Exception as error:  # connection refused, reset, cancelled by the timeout...
            raise CommanderUnavailable(f"{method} {path}: {error!r}") from error
        if response.code >= 400:
            raise parse_error(response.code, body)
        return response.code, body

    async def _json(self, method: str, path: str, json: Any = None) -> Any:
        _, body = await self._call(method, path, json)
        return parse_json(body)

    def instances(self) -> defer.Deferred[list[Instance]]:
        async def run() -> list[Instance]:
            return parse_instances(await self._json("GET", "/instances"))
        return defer.ensureDeferred(run())

    def alive_count(self) -> defer.Deferred[int]:
        async def run() -> int:
            instances = parse_instances(await self._json("GET", "/instances"))
            return sum(1 for instance in instances if instance.alive)
        return defer.ensureDeferred(run())

    def stop_instance(self, name: str) -> defer.Deferred[int]:
        """Stop instance ``name``; fires with the alive count after."""
        async def run() -> int:
            payload = await self._json("POST", "/instances/stop", {"name": name})
            return int(payload["alive"])
        return defer.ensureDeferred(run())

    def stop_session(self, token: str) -> defer.Deferred[StoppedInstance]:
        """Stop the instance CONNECT session ``token`` tunnels through; fires with which it was
        and the alive count after."""
        async def run() -> StoppedInstance:
            return parse_stopped(await self._json("POST", "/instances/stop", {"session": token}))
        return defer.ensureDeferred(run())

    def scaling(self) -> defer.Deferred[Scaling]:
        async def run() -> Scaling:
            return parse_scaling(await self._json("GET", "/scaling"))
        return defer.ensureDeferred(run())

    def update_scaling(self, *, min: int | None = None,  # noqa: A002 - the API's names
                       required: int | None = None, max: int | None = None,  # noqa: A002
                       ) -> defer.Deferred[Scaling | None]:
        async def run() -> Scaling | None:
            changes = scaling_changes(min=min, required=required, max=max)
            status, body = await self._call("PATCH", "/scaling", changes)
            return None if status == 204 else parse_scaling(parse_json(body))
        return defer.ensureDeferred(run())

    def wake(self) -> defer.Deferred[Scaling]:
        """``required = max``."""
        async def run() -> Scaling:
            scaling = parse_scaling(await self._json("GET", "/scaling"))
            status, body = await self._call("PATCH", "/scaling", {"required": scaling.max})
            return scaling if status == 204 else parse_scaling(parse_json(body))
        return defer.ensureDeferred(run())

    def sleep(self) -> defer.Deferred[Scaling]:
        """``required = min``."""
        async def run() -> Scaling:
            scaling = parse_scaling(await self._json("GET", "/scaling"))
            status, body = await self._call("PATCH", "/scaling", {"required": scaling.min})
            return scaling if status == 204 else parse_scaling(parse_json(body))
        return defer.ensureDeferred(run())

    def config(self) -> defer.Deferred[dict[str, Any]]:
        return defer.ensureDeferred(self._json("GET", "/config"))

    def update_config(self, changes: dict[str, Any]) -> defer.Deferred[dict[str, Any]]:
        """PATCH the config; fires with the new (redacted) config, ``{}`` if nothing changed."""
        async def run() -> dict[str, Any]:
            status, body = await self._call("PATCH", "/config", changes)
            return {} if status == 204 else parse_json(body)
        return defer.ensureDeferred(run())

    def stats(self) -> defer.Deferred[dict[str, Any]]:
        return defer.ensureDeferred(self._json("GET", "/stats"))

    def metrics(self) -> defer.Deferred[str]:
        """Prometheus text from ``/metrics`` (next to ``/api``, not under it)."""
        async def run() -> str:
            url = self.base_url.removesuffix("/api") + "/metrics"
            _, body = await self._call("GET", "/metrics", url=url)
            return body.decode("utf-8", "replace")
        return defer.ensureDeferred(run())
