"""Pure HTTP/1.1 helpers for ``scrapoxy-instance``: parse heads, decide framing, filter headers.

No I/O here: the Twisted layer in ``proxy.py`` feeds bytes in and writes what these functions
return. Every parse failure raises one typed error, :class:`HttpError`, carrying the status the
proxy should answer with.
"""
from __future__ import annotations

import base64
import binascii
import enum
import hmac
import ipaddress
import json
import re
from dataclasses import dataclass

Headers = tuple[tuple[bytes, bytes], ...]

MAX_HEAD_BYTES = 64 * 1024
MAX_LINE_BYTES = 8 * 1024

# RFC 9110 token characters: a header name or a method must be made of these only.
_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_VERSION = re.compile(rb"^HTTP/1\.[0-9]$")
_HEX = re.compile(rb"^[0-9A-Fa-f]{1,16}$")
_DIGITS = re.compile(rb"^[0-9]{1,19}$")
# Control characters other than horizontal tab are never legal in a header value; a NUL or a bare
# CR inside a value is a classic smuggling vector.
_BAD_VALUE_CHARS = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")

# Always hop-by-hop (RFC 9110 7.6.1), plus the proxy-specific ones that must never travel on.
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"proxy-authorization",
    b"proxy-authenticate", b"te", b"trailer", b"upgrade",
})


class HttpError(Exception):
    """A message that cannot be handled; ``status`` is what the proxy answers (400, 502, ...)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class RequestHead:
    method: bytes
    target: bytes
    version: bytes
    headers: Headers


@dataclass(frozen=True)
class ResponseHead:
    version: bytes
    status: int
    reason: bytes
    headers: Headers


@dataclass(frozen=True)
class ProxyTarget:
    """Where an absolute-form request goes; ``path`` is the origin-form bytes as received."""

    host: str
    port: int
    authority: bytes
    path: bytes


class Framing(enum.Enum):
    NONE = "none"
    LENGTH = "length"
    CHUNKED = "chunked"
    UNTIL_CLOSE = "until_close"


@dataclass(frozen=True)
class BodyFraming:
    kind: Framing
    length: int = 0


def find_head_end(buffer: bytes | bytearray) -> int | None:
    """Index just past the blank line ending a head, or None while the head is incomplete."""
    match = _HEAD_END.search(buffer)
    return None if match is None else match.end()


def _split_lines(head: bytes) -> list[bytes]:
    # Bare LF line ends are tolerated (RFC 9112 2.2); a stray CR elsewhere is caught per line.
    lines = head.split(b"\n")
    return [line[:-1] if line.endswith(b"\r") else line for line in lines]


def _parse_header_lines(lines: list[bytes], status: int) -> Headers:
    headers: list[tuple[bytes, bytes]] = []
    for line in lines:
        if not line:
            continue
        if line[:1] in (b" ", b"\t"):
            raise HttpError(status, "obsolete line folding in header")
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.match(name):
            # Covers "Accept : */*": a space before the colon makes the name invalid.
            raise HttpError(status, "malformed header line")
        value = value.strip(b" \t")
        if _BAD_VALUE_CHARS.search(value):
            raise HttpError(status, "control character in header value")
        headers.append((name, value))
    return tuple(headers)


def parse_request_head(head: bytes) -> RequestHead:
    """Parse a request head (request line and headers, blank line included or not)."""
    lines = _split_lines(head.lstrip(b"\r\n"))
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        raise HttpError(400, "malformed request line")
    method, target, version = parts
    if not _TOKEN.match(method) or not target or not _VERSION.match(version):
        raise HttpError(400, "malformed request line")
    if _BAD_VALUE_CHARS.search(target):
        raise HttpError(400, "control character in request target")
    return RequestHead(method, target, version, _parse_header_lines(lines[1:], 400))


def parse_response_head(head: bytes) -> ResponseHead:
    """Parse a response head from an origin; errors carry 502 (the upstream misbehaved)."""
    lines = _split_lines(head)
    version, _, rest = lines[0].partition(b" ")
    code, _, reason = rest.partition(b" ")
    if not _VERSION.match(version) or len(code) != 3 or not code.isdigit():
        raise HttpError(502, "malformed response status line")
    return ResponseHead(version, int(code), reason, _parse_header_lines(lines[1:], 502))


def header_values(headers: Headers, name: bytes) -> list[bytes]:
    """All values of header ``name`` (lower-case), in order."""
    return [value for key, value in headers if key.lower() == name]


def _tokens(headers: Headers, name: bytes) -> list[bytes]:
    return [
        token.strip().lower()
        for value in header_values(headers, name)
        for token in value.split(b",")
        if token.strip()
    ]


def hop_by_hop_names(headers: Headers) -> frozenset[bytes]:
    """Lower-case names not to forward: the fixed set plus those that ``Connection`` lists."""
    return HOP_BY_HOP | frozenset(_tokens(headers, b"connection"))


def strip_hop_by_hop(headers: Headers) -> Headers:
    drop = hop_by_hop_names(headers)
    return tuple((name, value) for name, value in headers if name.lower() not in drop)


def wants_close(head: RequestHead) -> bool:
    """Whether the client asked (or, for HTTP/1.0, defaults) to close after this exchange."""
    tokens = set(_tokens(head.headers, b"connection"))
    tokens |= set(_tokens(head.headers, b"proxy-connection"))
    if head.version == b"HTTP/1.0":
        # HTTP/1.0 keep-alive is an old, fragile extension: close after each response.
        return True
    return b"close" in tokens


def _content_length(headers: Headers, status: int) -> int | None:
    values = header_values(headers, b"content-length")
    if not values:
        return None
    # "Content-Length: 5, 5" and repeated equal headers are legal; differing ones are not.
    parts = {part.strip() for value in values for part in value.split(b",")}
    if len(parts) != 1:
        raise HttpError(status, "conflicting Content-Length")
    (text,) = parts
    if not _DIGITS.match(text):
        raise HttpError(status, "invalid Content-Length")
    return int(text)


def request_framing(head: RequestHead) -> BodyFraming:
    """How the request body is delimited. Ambiguous framing is refused (request smuggling)."""
    codings = _tokens(head.headers, b"transfer-encoding")
    if codings:
        if codings != [b"chunked"]:
            raise HttpError(400, "unsupported Transfer-Encoding")
        if header_values(head.headers, b"content-length"):
            raise HttpError(400, "both Transfer-Encoding and Content-Length")
        return BodyFraming(Framing.CHUNKED)
    length = _content_length(head.headers, 400)
    if not length:
        return BodyFraming(Framing.NONE)
    return BodyFraming(Framing.LENGTH, length)


def response_framing(head: ResponseHead, *, request_method: bytes) -> BodyFraming:
    """How the response body is delimited (RFC 9112 6.3)."""
    if request_method == b"HEAD" or head.status in (204, 304) or 100 <= head.status < 200:
        return BodyFraming(Framing.NONE)
    codings = _tokens(head.headers, b"transfer-encoding")
    if codings:
        # Chunked must be the final coding to delimit the body; anything else runs to close.
        if codings[-1] == b"chunked":
            return BodyFraming(Framing.CHUNKED)
        return BodyFraming(Framing.UNTIL_CLOSE)
    length = _content_length(head.headers, 502)
    if length is None:
        return BodyFraming(Framing.UNTIL_CLOSE)
    if length == 0:
        return BodyFraming(Framing.NONE)
    return BodyFraming(Framing.LENGTH, length)


def _parse_host_port(authority: bytes, *, default_port: int | None) -> tuple[str, int]:
    try:
        text = authority.decode("ascii")
    except UnicodeDecodeError:
        raise HttpError(400, "non-ASCII host") from None
    if "@" in text or not text:
        raise HttpError(400, "invalid authority")
    if text.startswith("["):
        close = text.find("]")
        if close == -1:
            raise HttpError(400, "invalid IPv6 literal")
        host, rest = text[1:close], text[close + 1:]
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            raise HttpError(400, "invalid IPv6 literal") from None
        if rest and not rest.startswith(":"):
            raise HttpError(400, "invalid authority")
        port_text = rest[1:] if rest else ""
    else:
        host, _, port_text = text.partition(":")
        if not host or not re.fullmatch(r"[A-Za-z0-9._\-]+", host):
            raise HttpError(400, "invalid host")
    if not port_text:
        if default_port is None:
            raise HttpError(400, "port required")
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise HttpError(400, "invalid port")
    return host, int(port_text)


def parse_proxy_target(target: bytes) -> ProxyTarget:
    """Split an absolute-form ``http://host[:port]/path`` target; other forms/schemes are 400."""
    scheme, sep, rest = target.partition(b"://")
    if not sep:
        raise HttpError(400, "absolute-form request target required")
    if scheme.lower() != b"http":
        raise HttpError(400, "unsupported scheme")
    cut = len(rest)
    for delimiter in (b"/", b"?", b"#"):
        index = rest.find(delimiter)
        if index != -1:
            cut = min(cut, index)
    authority, path = rest[:cut], rest[cut:]
    if path.startswith(b"#"):
        path = b""
    if not path.startswith(b"/"):
        path = b"/" + path
    host, port = _parse_host_port(authority, default_port=80)
    return ProxyTarget(host=host, port=port, authority=authority, path=path)


def parse_connect_target(target: bytes) -> tuple[str, int]:
    """Split a CONNECT ``host:port`` (or ``[v6]:port``) target."""
    return _parse_host_port(target, default_port=None)


def upstream_request_head(head: RequestHead, target: ProxyTarget) -> bytes:
    """The origin-form head sent to the origin: hop-by-hop removed, Host from the URL, one exchange.

    ``Connection: close`` upstream keeps each upstream connection to one exchange, so the origin
    delimits its answer and the instance never holds idle origin sockets.
    """
    headers = [(b"Host", target.authority)]
    headers += [(name, value) for name, value in strip_hop_by_hop(head.headers)
                if name.lower() != b"host"]
    headers.append((b"Connection", b"close"))
    return serialize_head(head.method + b" " + target.path + b" HTTP/1.1", headers)


def client_response_head(head: ResponseHead, *, decode_chunked: bool, close: bool) -> bytes:
    """The response head for the client: hop-by-hop removed and exactly one body framing.

    ``decode_chunked`` is set for HTTP/1.0 clients, which must never see Transfer-Encoding; the
    body then ends at close. ``close`` adds ``Connection: close``.
    """
    headers = list(strip_hop_by_hop(head.headers))
    names = {name.lower() for name, _ in headers}
    if b"transfer-encoding" in names:
        # Transfer-Encoding wins over Content-Length (RFC 9112 6.3); never send both.
        drop = {b"content-length", b"transfer-encoding"} if decode_chunked else {b"content-length"}
        headers = [(name, value) for name, value in headers if name.lower() not in drop]
    if close:
        headers.append((b"Connection", b"close"))
    return serialize_head(b"HTTP/1.1 %d %s" % (head.status, head.reason), headers)


def serialize_head(first_line: bytes, headers: Headers | list[tuple[bytes, bytes]]) -> bytes:
    parts = [first_line]
    parts += [name + b": " + value for name, value in headers]
    return b"\r\n".join(parts) + b"\r\n\r\n"


def check_proxy_authorization(headers: Headers, expected: bytes) -> bool:
    """Whether ``Proxy-Authorization: Basic ...`` carries ``expected`` (``user:password``)."""
    supplied = b""
    for value in header_values(headers, b"proxy-authorization"):
        scheme, _, token = value.partition(b" ")
        if scheme.lower() == b"basic":
            try:
                supplied = base64.b64decode(token.strip(), validate=True)
            except (binascii.Error, ValueError):
                supplied = b""
            break
    # Constant time whatever was supplied, so a timing probe learns nothing about the secret.
    return hmac.compare_digest(supplied, expected) and bool(supplied)


class LengthReader:
    """Counts a Content-Length body. ``feed`` returns (bytes consumed, payload)."""

    def __init__(self, length: int) -> None:
        self._remaining = length

    @property
    def done(self) -> bool:
        return self._remaining == 0

    def feed(self, data: bytes) -> tuple[int, bytes]:
        take = min(self._remaining, len(data))
        self._remaining -= take
        return take, data[:take]


class _ChunkState(enum.Enum):
    SIZE = "size"
    DATA = "data"
    DATA_END = "data_end"
    TRAILER = "trailer"
    DONE = "done"


class ChunkedReader:
    """Finds the end of a chunked body. ``feed`` returns (bytes consumed, decoded payload).

    The proxy relays the consumed bytes unchanged (one framing, the sender's) or, for an
    HTTP/1.0 client, the decoded payload. Errors raise :class:`HttpError` with ``status``.
    """

    def __init__(self, *, error_status: int = 400) -> None:
        self._state = _ChunkState.SIZE
        self._remaining = 0
        self._line = b""
        self._error_status = error_status

    @property
    def done(self) -> bool:
        return self._state is _ChunkState.DONE

    def feed(self, data: bytes) -> tuple[int, bytes]:
        pos, end = 0, len(data)
        payload: list[bytes] = []
        while pos < end and self._state is not _ChunkState.DONE:
            if self._state is _ChunkState.DATA:
                take = min(self._remaining, end - pos)
                payload.append(data[pos:pos + take])
                pos += take
                self._remaining -= take
                if self._remaining == 0:
                    self._state = _ChunkState.DATA_END
                continue
            newline = data.find(b"\n", pos)
            if newline == -1:
                self._line += data[pos:]
                pos = end
                if len(self._line) > MAX_LINE_BYTES:
                    raise HttpError(self._error_status, "chunk line too long")
                break
            line = self._line + data[pos:newline]
            self._line = b""
            pos = newline + 1
            if len(line) > MAX_LINE_BYTES:
                raise HttpError(self._error_status, "chunk line too long")
            self._on_line(line[:-1] if line.endswith(b"\r") else line)
        return pos, b"".join(payload)

    def _on_line(self, line: bytes) -> None:
        if self._state is _ChunkState.SIZE:
            size_text = line.split(b";", 1)[0].strip(b" \t")
            if not _HEX.match(size_text):
                raise HttpError(self._error_status, "invalid chunk size")
            self._remaining = int(size_text, 16)
            self._state = _ChunkState.DATA if self._remaining else _ChunkState.TRAILER
        elif self._state is _ChunkState.DATA_END:
            if line:
                raise HttpError(self._error_status, "chunk not followed by CRLF")
            self._state = _ChunkState.SIZE
        elif not line:  # TRAILER: the blank line ends the body; trailer fields relay as bytes
            self._state = _ChunkState.DONE


def body_reader(framing: BodyFraming, *, error_status: int) -> LengthReader | ChunkedReader | None:
    """A reader for LENGTH or CHUNKED framing; None for NONE and UNTIL_CLOSE."""
    if framing.kind is Framing.LENGTH:
        return LengthReader(framing.length)
    if framing.kind is Framing.CHUNKED:
        return ChunkedReader(error_status=error_status)
    return None


REASONS = {
    400: b"Bad Request", 407: b"Proxy Authentication Required",
    431: b"Request Header Fields Too Large",
    502: b"Bad Gateway", 504: b"Gateway Timeout",
}


ERROR_CODES = {400: "bad_request", 407: "auth", 431: "bad_request", 502: "upstream",
               504: "timeout"}


def error_response(status: int, message: str, *, extra_headers: Headers = ()) -> bytes:
    """A complete short answer that closes the connection.

    Shaped like the master's own errors (``x-scrapoxy-error: CODE`` and a JSON body), which
    the master relays unchanged: a scraper reads the same thing whichever hop failed.
    """
    code = ERROR_CODES.get(status, "upstream")
    body = json.dumps({"error": code, "message": message}).encode()
    headers = [
        (b"Content-Type", b"application/json"),
        (b"Content-Length", str(len(body)).encode()),
        (b"x-scrapoxy-error", code.encode()),
        (b"Connection", b"close"),
        *extra_headers,
    ]
    status_line = b"HTTP/1.1 %d %s" % (status, REASONS.get(status, b"Error"))
    return serialize_head(status_line, headers) + body
