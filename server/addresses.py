"""How to reach the server's own ports from this machine, given the addresses it binds.

The server and ``scrapoxy-server test`` both need a URL for a port bound to ``host``: a
wildcard bind (``0.0.0.0``, ``::``) answers on loopback, any other address only on itself.
"""
from __future__ import annotations

import ipaddress
from urllib.parse import quote

WILDCARDS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1", "[::]": "::1"}


def reachable_host(bind_host: str) -> str:
    """The address a local client connects to for a socket bound to ``bind_host``."""
    return WILDCARDS.get(bind_host, bind_host)


def http_url(host: str, port: int, *, username: str | None = None,
             password: str | None = None) -> str:
    """``http://host:port`` (IPv6 in brackets), with percent-encoded credentials if given."""
    shown = f"[{host.strip('[]')}]" if ":" in host else host
    userinfo = ""
    if username is not None:
        userinfo = quote(username, safe="") + ":" + quote(password or "", safe="") + "@"
    return f"http://{userinfo}{shown}:{port}"


def commander_ip_url(commander_host: str, commander_port: int) -> str:
    """The commander's ``/ip`` echo as seen from this machine (the default check URL)."""
    return http_url(reachable_host(commander_host), commander_port) + "/ip"


def is_ip_address(text: str) -> bool:
    """``text`` is an IPv4 or IPv6 address (no brackets), not a host name."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
