"""``scrapoxy-server test``: send requests through the master, count the egress addresses.

The master and the URL come from the same config file as ``start`` (or the embedded default),
so the command tests *this* server on whatever ports it runs, never another one that happens to
sit on the default ports. A blocking command-line tool (it runs outside the server's reactor).
"""
from __future__ import annotations

import socket
import sys
from collections import Counter
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests

from .addresses import commander_ip_url, http_url, is_ip_address, reachable_host
from .config import Config


@dataclass(frozen=True)
class Targets:
    """Where ``test`` sends its requests: the master (credentials included) and the URL."""

    master: str
    url: str


def targets_from_config(config: Config, *, master: str | None = None,
                        url: str | None = None) -> Targets:
    """The master URL and the URL to fetch for a server running ``config``.

    The URL, unless given, is ``manager.check_url`` (it answers the caller's IP and every
    instance can reach it) or else the commander's own ``/ip``. Raises ``ValueError`` when a
    port is 0 in the config (any free port: only the running server knows which).
    """
    if master is None:
        if config.master.port == 0:
            raise ValueError("master.port is 0 in the config (any free port): pass --master")
        auth = config.master.auth
        master = http_url(reachable_host(config.master.host), config.master.port,
                          username=auth.username if auth is not None else None,
                          password=auth.password if auth is not None else None)
    if url is None:
        url = config.manager.check_url
    if url is None:
        if config.commander.port == 0:
            raise ValueError("commander.port is 0 in the config (any free port): pass the URL")
        url = commander_ip_url(config.commander.host, config.commander.port)
    return Targets(master=master, url=url)


def _shown(master: str) -> str:
    """The master URL without its password, for the progress header."""
    parts = urlsplit(master)
    if parts.password is None:
        return master
    return master.replace(f":{parts.password}@", ":***@", 1)


def run_test(*, targets: Targets, count: int) -> int:
    """Send ``count`` GETs of ``targets.url`` through the master, one line each, then the
    distinct egress addresses with their counts. 0 when every request got a 200."""
    if count < 1:
        print("scrapoxy-server test: --count must be at least 1", file=sys.stderr)
        return 2
    url = targets.url
    if urlsplit(url).scheme not in ("http", "https"):
        print(f"scrapoxy-server test: {url!r} is not an http(s) URL", file=sys.stderr)
        return 2
    master = urlsplit(targets.master)
    try:
        master.port  # noqa: B018 - urlsplit checks the port only when asked
    except ValueError:
        master = master._replace(scheme="")  # refused below, as any other non-URL
    if master.scheme != "http" or not master.hostname:
        print(f"scrapoxy-server test: --master {_shown(targets.master)!r} is not a master URL "
              "(http://[user:password@]host:port)", file=sys.stderr)
        return 2
    unreachable = _unreachable(targets.master)
    if unreachable:
        print(f"scrapoxy-server test: cannot connect to the master at {unreachable}: is the "
              "server running? (scrapoxy-server start [CONFIG]; give test the same CONFIG, or "
              "--master)", file=sys.stderr)
        return 1
    proxies = {"http": targets.master, "https": targets.master}
    egress: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    session = requests.Session()
    session.trust_env = False  # the master given here, never an environment proxy
    print(f"sending {count} request(s) to {url} through {_shown(targets.master)}", flush=True)
    for i in range(1, count + 1):
        try:
            response = session.get(url, proxies=proxies, timeout=30)
        except requests.RequestException as exc:
            failures[type(exc).__name__] += 1
            print(f"  [{i}/{count}] failed: {exc}", flush=True)
            continue
        name = response.headers.get("x-cache-proxyname")
        if response.status_code != 200:
            code, message = _error_of(response)
            reason = code or f"HTTP {response.status_code}"
            failures[reason] += 1
            text = " ".join(message.split())[:160]  # one line per request
            print(f"  [{i}/{count}] {reason} via {name or '?'}: {text}", flush=True)
            continue
        if name is None:
            # Whatever answered is no scrapoxy master (the commander's port, another proxy):
            # an egress address counted from it would prove nothing about the pool.
            failures[NOT_THROUGH_POOL] += 1
            print(f"  [{i}/{count}] 200 without x-cache-proxyname: not from a scrapoxy master",
                  flush=True)
            continue
        # The bytes, not requests' guess of a charset the answer does not declare.
        body = response.content.decode("utf-8", "replace").strip()
        if not is_ip_address(body):
            failures[NOT_AN_ADDRESS] += 1
            print(f"  [{i}/{count}] via {name}: the answer is not an IP address: "
                  f"{' '.join(body.split())[:60]!r}", flush=True)
            continue
        egress[body] += 1
        print(f"  [{i}/{count}] {body} via {name}", flush=True)
    print(f"\n{len(egress)} distinct egress address(es):")
    for address, n in egress.most_common():
        print(f"  {address:<40} {n}")
    if failures:
        print("failures:")
        for reason, n in failures.most_common():
            print(f"  {reason:<40} {n}")
    if failures[NOT_AN_ADDRESS]:
        print(f"\n{url} must answer with the caller's IP address alone (as manager.check_url "
              "does); leave the URL out to use the server's own.")
    return 0 if egress and not failures else 1


NOT_AN_ADDRESS = "answer not an IP address"
NOT_THROUGH_POOL = "answer not from a scrapoxy master"


def _unreachable(master: str) -> str | None:
    """``host:port (reason)`` when nothing accepts a connection at the master's address."""
    parts = urlsplit(master)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as exc:
        return f"{host}:{port} ({exc.strerror or exc})"
    return None


def _error_of(response: requests.Response) -> tuple[str | None, str]:
    """(code, message) of an error answer: the master's ``x-scrapoxy-error``, or the
    ``{"error", "message"}`` body a scrapoxy-instance answers with, else (None, the body)."""
    try:
        body = response.json()
        code, message = body["error"], body["message"]
    except (ValueError, KeyError, TypeError):
        return response.headers.get("x-scrapoxy-error"), response.text
    return response.headers.get("x-scrapoxy-error") or str(code), str(message)
