"""Where a request goes: the target of each request mode of the wire contract.

1. absolute-form ``http://host/path``           -> plain, forwarded through the instance
2. any request with ``Location: https://...``   -> TLS, spoken by the master through CONNECT
3. absolute-form ``https://host/path``          -> as 2
4. ``CONNECT host:port``                        -> a tunnel (see ``parse_authority``)
"""
from __future__ import annotations

import functools
import ipaddress
import re
import socket
from dataclasses import dataclass

from .http1 import REQUEST_TARGET, HttpError


# What a host name may hold (letters, digits, dots, hyphens; underscores, which real DNS
# names do carry). Anything else is refused here rather than by an instance, with a 502.
_REG_NAME = re.compile(r"[A-Za-z0-9._-]+")
_VISIBLE_ASCII = re.compile(rb"[\x21-\x7e]+")


_UNSPECIFIED = frozenset({"0.0.0.0", "::"})


@functools.lru_cache(maxsize=4096)  # on every request; scrapers ask the same hosts again
def canonical_host(host: str) -> str:
    """The one spelling of ``host`` that allow/deny rules are matched against, and that the
    master connects to (TLS names included).

    Lower case, without the trailing dot of a fully qualified name, and an IPv4 address in
    dotted quad however the client wrote it: ``127.1``, ``2130706433`` and ``0x7f.0.0.1`` are
    all 127.0.0.1 to the instance resolving them (``inet_aton`` reading), and so to the rules.
    IPv4-mapped IPv6 (``::ffff:127.0.0.1``) is the IPv4 address.
    """
    host = host.lower().rstrip(".")
    if ":" in host:
        try:
            address = ipaddress.IPv6Address(host)
        except ValueError:
            return host
        mapped = address.ipv4_mapped
        return str(mapped) if mapped is not None else address.compressed
    if host[:1].isdigit():
        try:
            return socket.inet_ntoa(socket.inet_aton(host))
        except OSError:
            return host
    return host


@dataclass(frozen=True, slots=True)
class Target:
    tls: bool
    host: str          # canonical_host(): without brackets, lower-case, IPv4 dotted
    port: int
    authority: bytes   # as sent in Host (brackets for IPv6, port only when not default)
    path: bytes        # origin-form path and query, byte for byte

    @property
    def absolute(self) -> bytes:
        """Absolute-form URI for a plain request through an instance."""
        return b"http://" + self.authority + self.path


def parse_authority(authority: bytes, *, default_port: int | None) -> tuple[str, int]:
    """``host[:port]`` (IPv6 in brackets) -> (host, port); HttpError when malformed."""
    if not _VISIBLE_ASCII.fullmatch(authority) or b"@" in authority:
        raise HttpError(f"malformed host {authority[:80].decode('latin-1')!r}")
    text = authority.decode("ascii")
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise HttpError(f"malformed IPv6 host {text!r}")
        host, rest = text[1:close], text[close + 1:]
        if "%" in host:
            # A zone names an interface of the machine it is written on: meaningless to an
            # instance, and a second spelling of an address that deny rules would miss.
            raise HttpError(f"IPv6 zone identifiers are not accepted: {text!r}")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise HttpError(f"malformed IPv6 host {text!r}") from None
        if rest and not rest.startswith(":"):
            raise HttpError(f"malformed host {text!r}")
        port_text = rest[1:] if rest else ""
    else:
        host, sep, port_text = text.partition(":")
        if not sep:
            port_text = ""
        if not host or not _REG_NAME.fullmatch(host):
            raise HttpError(f"malformed host {text!r}")
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise HttpError(f"malformed port in {text!r}")
        port = int(port_text)
    elif default_port is None:
        raise HttpError(f"port missing in {text!r}")
    else:
        port = default_port
    host = canonical_host(host)
    if host in _UNSPECIFIED or not host:
        # 0.0.0.0 and :: (however spelled: "0", "[::ffff:0.0.0.0]") reach the instance itself.
        raise HttpError(f"not a host to connect to: {text!r}")
    return host, port


def parse_url(url: bytes) -> Target:
    """An absolute ``http://`` or ``https://`` URL -> Target; anything else is a 400."""
    lower = url[:8].lower()
    if lower.startswith(b"https://"):
        tls, rest, default = True, url[8:], 443
    elif lower.startswith(b"http://"):
        tls, rest, default = False, url[7:], 80
    else:
        scheme = url.split(b":", 1)[0][:20].decode("latin-1") if b":" in url else url[:40].decode("latin-1")
        raise HttpError(f"unsupported scheme or malformed URL: {scheme!r}")
    cut = len(rest)
    for sep in (b"/", b"?", b"#"):
        i = rest.find(sep)
        if 0 <= i < cut:
            cut = i
    authority, path = rest[:cut], rest[cut:]
    host, port = parse_authority(authority, default_port=default)
    fragment = path.find(b"#")
    if fragment >= 0:
        path = path[:fragment]
    if not path.startswith(b"/"):
        path = b"/" + path
    if port == default:
        # Keep the client's own spelling of the authority, minus a redundant default port.
        authority = authority.rsplit(b":", 1)[0] if not authority.endswith(b"]") and b":" in authority else authority
    return Target(tls=tls, host=host, port=port, authority=authority, path=path)


def request_target(*, method: bytes, target: bytes, location: bytes | None) -> Target:
    """Resolve modes 1-3. ``location`` is the request's ``Location`` header, if any."""
    if location is not None and not REQUEST_TARGET.fullmatch(location):
        # A header value may hold spaces and tabs; a request-target may not (RFC 9112 3.2).
        raise HttpError(f"Location header is not a URL: {location[:60].decode('latin-1')!r}")
    if location is not None and location[:8].lower() == b"https://":
        return parse_url(location)
    if location is not None and location[:7].lower() != b"http://":
        raise HttpError(
            f"Location header must be an https:// URL, got {location[:60].decode('latin-1')!r}"
        )
    if target.startswith(b"/"):
        if location is not None:
            return parse_url(location)
        raise HttpError("origin-form request without a Location header: use an absolute URL")
    return parse_url(target)
