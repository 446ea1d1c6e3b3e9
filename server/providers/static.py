"""The ``static`` provider: proxies the user already has, given as URLs.

A static proxy cannot be created or restarted, so the provider maps the lifecycle onto what it
can do:

- ``list_instances`` answers one ``STARTED`` instance per configured proxy, with an id derived
  from ``host:port`` (``<provider name>-<host>:<port>``), so ids stay stable when the list is
  edited at runtime with ``set_proxies``.
- ``terminate_instances`` *benches* a proxy: it is left out of the listing for ``config.bench``
  seconds (measured on the injected reactor's clock), then it comes back. This is how a dead or
  banned proxy gets a rest instead of being retried at once.
- ``create_instances`` does nothing: the pool size is the list. A manager asking for more
  instances than there are proxies simply keeps seeing the proxies there are; benched ones come
  back only when their bench time is over.

``parse_proxy_url`` is also what config validation uses, so a bad URL in the config file is
reported with its key path before the server starts.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import SplitResult, unquote, urlsplit

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime

from ..config import StaticProviderConfig
from ..models import Address, Credentials, ProviderInstance, Status
from ..redaction import redact_url as _redact

log = logging.getLogger(__name__)


def parse_proxy_url(url: str) -> tuple[Address, Credentials | None]:
    """Parse ``http://[user[:password]@]host:port[/]`` into an address and credentials.

    Credentials are percent-decoded (``p%40ss`` is ``p@ss``). Raises ``ValueError`` whose
    message names the bad part; the message never contains the password.
    """
    if not isinstance(url, str) or not url.strip():
        raise ValueError("proxy URL is empty")
    if url != url.strip() or any(c.isspace() for c in url):
        raise ValueError("proxy URL must not contain whitespace")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        # urlsplit rejects e.g. an unbalanced "[" in the host.
        raise ValueError(f"host in {_redact(url)} is malformed: {exc}") from None
    shown = _redact(url)
    scheme = parts.scheme.lower()
    if not scheme or "//" not in url:
        raise ValueError(f"scheme is missing in {shown} (expected http://host:port)")
    if scheme != "http":
        raise ValueError(f"scheme must be http, got {parts.scheme!r} in {shown}")
    hostname = parts.hostname
    if not hostname:
        raise ValueError(f"host is missing in {shown}")
    port = _port(parts, shown)
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"path, query and fragment are not allowed in {shown}")
    credentials = None
    if parts.username is not None or parts.password is not None:
        username = unquote(parts.username or "")
        if not username:
            raise ValueError(f"username is empty in {shown}")
        if ":" in username:
            # Sent upstream as Basic user:password, split at the first colon (RFC 7617).
            raise ValueError(f"username must not contain ':' (%3A) in {shown}")
        credentials = Credentials(username=username, password=unquote(parts.password or ""))
    return Address(hostname=hostname, port=port), credentials


def _port(parts: SplitResult, shown: str) -> int:
    # Read the port text ourselves: SplitResult.port raises a message that does not say
    # which URL, and accepts port 0.
    hostport = parts.netloc.rpartition("@")[2]
    text = hostport.rpartition("]")[2] if hostport.startswith("[") else hostport
    if ":" not in text:
        raise ValueError(f"port is missing in {shown} (expected http://host:port)")
    digits = text.rpartition(":")[2]
    if not digits.isascii() or not digits.isdigit():
        raise ValueError(f"port must be a number 1..65535, got {digits!r} in {shown}")
    port = int(digits)
    if not 1 <= port <= 65535:
        raise ValueError(f"port must be in 1..65535, got {port} in {shown}")
    return port


@dataclass(frozen=True)
class StaticProxy:
    """One configured proxy, with the id it is listed under."""

    id: str
    address: Address
    credentials: Credentials | None


def build_proxies(*, provider_name: str, urls: Iterable[str]) -> tuple[StaticProxy, ...]:
    """Parse every URL (all or nothing) and give each proxy a stable id.

    Raises ``ValueError`` naming the index of the bad URL.
    """
    proxies: list[StaticProxy] = []
    seen: dict[str, int] = {}
    for index, url in enumerate(urls):
        try:
            address, credentials = parse_proxy_url(url)
        except ValueError as exc:
            raise ValueError(f"proxies[{index}]: {exc}") from None
        host = f"[{address.hostname}]" if ":" in address.hostname else address.hostname
        base = f"{provider_name}-{host}:{address.port}"
        # The same host:port listed twice (e.g. with two accounts) still needs distinct ids.
        seen[base] = seen.get(base, 0) + 1
        proxy_id = base if seen[base] == 1 else f"{base}#{seen[base]}"
        proxies.append(StaticProxy(id=proxy_id, address=address, credentials=credentials))
    return tuple(proxies)


class StaticProvider:
    """Proxies from a list; terminating one benches it for ``config.bench`` seconds."""

    # The pool is the list: nothing to create, and nothing to terminate at shutdown.
    creates_instances = False

    def __init__(self, *, reactor: IReactorTime, config: StaticProviderConfig) -> None:
        self.name = config.name
        self._reactor = reactor
        self._bench_seconds = max(0.0, config.bench)
        self._proxies = build_proxies(provider_name=config.name, urls=config.proxies)
        # id -> reactor time at which the proxy comes back.
        self._benched_until: dict[str, float] = {}

    @property
    def proxies(self) -> tuple[StaticProxy, ...]:
        return self._proxies

    def set_proxies(self, urls: Sequence[str]) -> None:
        """Replace the list at runtime. Invalid input raises ``ValueError`` and changes nothing.

        Proxies that stay in the list keep their id and their bench time.
        """
        proxies = build_proxies(provider_name=self.name, urls=urls)
        ids = {proxy.id for proxy in proxies}
        self._benched_until = {i: t for i, t in self._benched_until.items() if i in ids}
        self._proxies = proxies

    def benched(self) -> dict[str, float]:
        """Ids currently benched, with the seconds left before each comes back."""
        now = self._reactor.seconds()
        return {i: until - now for i, until in self._benched_until.items() if until > now}

    def list_instances(self) -> Deferred[Sequence[ProviderInstance]]:
        now = self._reactor.seconds()
        # Forget benches that are over, so the dict does not grow with old ids.
        self._benched_until = {i: t for i, t in self._benched_until.items() if t > now}
        instances = [
            ProviderInstance(
                id=proxy.id,
                provider=self.name,
                status=Status.STARTED,
                address=proxy.address,
                credentials=proxy.credentials,
            )
            for proxy in self._proxies
            if proxy.id not in self._benched_until
        ]
        return succeed(instances)

    def create_instances(self, count: int) -> Deferred[None]:
        # Nothing to create: the pool is the list. Benched proxies return on their own time,
        # not earlier, because a proxy was benched for a reason (dead, banned).
        return succeed(None)

    def terminate_instances(self, ids: Sequence[str]) -> Deferred[None]:
        now = self._reactor.seconds()
        known = {proxy.id for proxy in self._proxies}
        for proxy_id in ids:
            if proxy_id not in known:
                log.debug("static provider %s: ignoring unknown id %s", self.name, proxy_id)
                continue
            # A second terminate while benched does not extend the bench: the manager may
            # repeat a command before it sees the new listing.
            if self._benched_until.get(proxy_id, 0.0) > now:
                continue
            if self._bench_seconds > 0:
                self._benched_until[proxy_id] = now + self._bench_seconds
                log.info("static provider %s: benched %s for %.0f s",
                         self.name, proxy_id, self._bench_seconds)
        return succeed(None)

    def shutdown(self) -> Deferred[None]:
        return succeed(None)
