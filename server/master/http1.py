"""HTTP/1.1 on bytes: request and response heads, header hygiene, body framing (RFC 9112).

Pure functions and small state machines with no I/O, so that the proxy's protocol layer stays
thin and everything here is tested from tables. Parsing errors raise ``HttpError``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

MAX_HEAD_BYTES = 64 * 1024
MAX_CHUNK_LINE = 4096

# RFC 9110 token characters; a space before the colon or any control byte is refused
# (request smuggling and header injection both start there).
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
# A field value without its surrounding spaces: visible bytes, with spaces or tabs only
# between them. Greedy, so that it does not retry the rest of the pattern at every byte.
_HEADER_VALUE = rb"(?:[^\x00-\x20\x7f](?:[^\x00-\x08\x0a-\x1f\x7f]*[^\x00-\x20\x7f])?)?"
# One header line, and the same anchored at line starts (each match is one whole line, LF or
# CRLF ended): a section is valid when findall finds as many pairs as it has lines.
_HEADER_LINE = re.compile(rb"(" + _TOKEN + rb"):[ \t]*(" + _HEADER_VALUE + rb")[ \t]*")
_HEADER_PAIRS = re.compile(rb"^(" + _TOKEN + rb"):[ \t]*(" + _HEADER_VALUE + rb")[ \t]*\r?\n",
                           re.MULTILINE)
# Any visible byte (and obs-text); no space, control or DEL.
REQUEST_TARGET = re.compile(rb"[\x21-\x7e\x80-\xff]+")
_METHOD = re.compile(_TOKEN)
_VERSION = re.compile(rb"HTTP/1\.[01]")
# chunk-size [ chunk-ext ]: hex digits, then ;name[=token|quoted-string] with optional spaces.
_QUOTED = rb'"(?:[^"\\\x00-\x08\x0a-\x1f\x7f]|\\[^\x00-\x08\x0a-\x1f\x7f])*"'
_CHUNK_SIZE_LINE = re.compile(
    rb"([0-9A-Fa-f]+)(?:[ \t]*;[ \t]*" + _TOKEN + rb"(?:[ \t]*=[ \t]*(?:" + _TOKEN + rb"|"
    + _QUOTED + rb"))?)*")
_STATUS_LINE = re.compile(rb"(HTTP/1\.[01]) ([0-9]{3})(?: ([^\x00-\x08\x0a-\x1f\x7f]*))?")

# Hop-by-hop headers (RFC 9110 7.6.1) plus the proxy's own: never forwarded in either direction.
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding",
    b"upgrade", b"proxy-authorization", b"proxy-authenticate",
})
PROXYNAME_HEADER = b"x-cache-proxyname"
ERROR_HEADER = b"x-scrapoxy-error"


class HttpError(Exception):
    """A message the proxy must refuse; ``status`` is what the client gets."""

    def __init__(self, message: str, *, status: int = 400, code: str = "bad_request"):
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code


Headers = list[tuple[bytes, bytes]]


@dataclass(slots=True)
class RequestHead:
    method: bytes
    target: bytes
    version: bytes
    headers: Headers

    def get(self, name: bytes) -> bytes | None:
        """First value of header ``name`` (lower-case), or None."""
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


@dataclass(slots=True)
class ResponseHead:
    version: bytes
    status: int
    reason: bytes
    headers: Headers


def find_head_end(buffer: bytes) -> tuple[int, int] | None:
    """Where the head in ``buffer`` ends: (end of head, start of body), or None if not yet.

    The head ends at the *first* empty line, whether its line ends are CRLF or a bare LF
    (RFC 9112 2.2). Looking for CRLFCRLF first would let ``...\n\nX-Injected: 1\r\n\r\n``
    smuggle body bytes into the head.
    """
    end = buffer.find(b"\n\r\n")
    bare = buffer.find(b"\n\n", 0, end if end >= 0 else len(buffer))
    if bare >= 0:
        return bare, bare + 2
    if end >= 0:
        return end, end + 3
    return None


def _split_lines(block: bytes) -> list[bytes]:
    # Recipients may accept a bare LF as a line end (RFC 9112 2.2); a stray CR is refused
    # by the header regex.
    lines = block.split(b"\n")
    return [line[:-1] if line.endswith(b"\r") else line for line in lines]


def _parse_headers(section: bytes) -> Headers:
    """The header lines after the start line (line ends CRLF or LF, the last one optional).

    On the hot path one C-level pass extracts every pair: matches start only at line starts
    and span one line each, so a section is valid exactly when every line gave a pair. Only a
    refused section is walked line by line, to name the bad line.
    """
    if not section:
        return []
    if not section.endswith(b"\n"):
        section += b"\n"
    pairs = _HEADER_PAIRS.findall(section)
    if len(pairs) == section.count(b"\n"):
        return pairs
    for line in _split_lines(section[:-1]):
        if _HEADER_LINE.fullmatch(line) is None:
            if line[:1] in (b" ", b"\t"):
                raise HttpError("obsolete header line folding is not accepted")
            raise HttpError(f"malformed header line {_show(line)}")
    raise HttpError("malformed header section")  # unreachable: some line must have failed


def _start_line(block: bytes) -> tuple[bytes, bytes]:
    """(start line without its line end, the header section after it)."""
    newline = block.find(b"\n")
    if newline < 0:
        line, section = block, b""
    else:
        line, section = block[:newline], block[newline + 1:]
    if line.endswith(b"\r"):
        line = line[:-1]
    return line, section


def parse_request_head(block: bytes) -> RequestHead:
    """Parse a request head (without the final empty line)."""
    line, section = _start_line(block)
    parts = line.split(b" ")
    if len(parts) != 3:
        raise HttpError(f"malformed request line {_show(line)}")
    method, target, version = parts
    if not _METHOD.fullmatch(method):
        raise HttpError(f"malformed method {_show(method)}")
    if not _VERSION.fullmatch(version):
        raise HttpError(f"unsupported HTTP version {_show(version)}", status=505)
    if not REQUEST_TARGET.fullmatch(target):
        raise HttpError("malformed request target")
    return RequestHead(method, target, version, _parse_headers(section))


def parse_response_head(block: bytes) -> ResponseHead:
    line, section = _start_line(block)
    match = _STATUS_LINE.fullmatch(line)
    if match is None:
        raise HttpError(f"malformed status line {_show(line)}", status=502, code="upstream")
    try:
        headers = _parse_headers(section)
    except HttpError as exc:
        raise HttpError(exc.message, status=502, code="upstream") from None
    return ResponseHead(match.group(1), int(match.group(2)), match.group(3) or b"", headers)


def connection_tokens(headers: Headers) -> set[bytes]:
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return tokens


def forwarded_headers(headers: Headers, *, drop: frozenset[bytes] = frozenset()) -> bytes:
    """The header lines to send on: without hop-by-hop ones, the names ``Connection``
    lists, and ``drop``; serialized in the same pass (it runs twice per request)."""
    listed = connection_tokens(headers)
    out: list[bytes] = []
    for name, value in headers:
        lower = name.lower()
        if lower in HOP_BY_HOP or lower in listed or lower in drop:
            continue
        out += (name, b": ", value, b"\r\n")
    return b"".join(out)


# --- body framing ----------------------------------------------------------------------

NO_BODY = 0
LENGTH = 1
CHUNKED = 2
UNTIL_CLOSE = 3


def _transfer_codings(headers: Headers) -> list[bytes] | None:
    codings: list[bytes] | None = None
    for name, value in headers:
        if name.lower() == b"transfer-encoding":
            codings = codings or []
            codings.extend(c.strip().lower() for c in value.split(b",") if c.strip())
    return codings


def _content_length(headers: Headers, *, upstream: bool) -> int | None:
    length: int | None = None
    for name, value in headers:
        if name.lower() == b"content-length":
            for item in value.split(b","):
                item = item.strip()
                if not item.isdigit() or len(item) > 18 or (
                        length is not None and int(item) != length):
                    if upstream:
                        raise HttpError("invalid Content-Length from upstream", status=502,
                                        code="upstream")
                    raise HttpError("invalid Content-Length")
                length = int(item)
    return length


def request_framing(head: RequestHead) -> tuple[int, int]:
    """(kind, length) of a request body; refuses ambiguous framing (smuggling)."""
    codings = _transfer_codings(head.headers)
    if codings is not None:
        if head.version == b"HTTP/1.0":
            raise HttpError("Transfer-Encoding is not allowed in an HTTP/1.0 request")
        if codings != [b"chunked"]:
            raise HttpError(f"unsupported Transfer-Encoding {b', '.join(codings).decode('latin-1')!r}")
        if head.get(b"content-length") is not None:
            raise HttpError("both Content-Length and Transfer-Encoding are set")
        return CHUNKED, 0
    length = _content_length(head.headers, upstream=False)
    if length is None or length == 0:
        return NO_BODY, 0
    return LENGTH, length


def response_framing(head: ResponseHead, *, request_method: bytes) -> tuple[int, int]:
    """(kind, length) of a response body, per RFC 9112 6.3."""
    status = head.status
    if request_method == b"HEAD" or 100 <= status < 200 or status in (204, 304):
        return NO_BODY, 0
    codings = _transfer_codings(head.headers)
    if codings is not None:
        if codings and codings[-1] == b"chunked":
            return CHUNKED, 0
        return UNTIL_CLOSE, 0
    length = _content_length(head.headers, upstream=True)
    if length is None:
        return UNTIL_CLOSE, 0
    if length == 0:
        return NO_BODY, 0
    return LENGTH, length


class ChunkedReader:
    """Finds the end of a chunked body fed piece by piece.

    ``feed`` returns how many bytes belong to the body (the rest is the next message). With
    ``decode`` the payload is collected in ``decoded`` (for HTTP/1.0 clients); otherwise the
    caller passes the consumed bytes through unchanged.
    """

    __slots__ = ("done", "decode", "strict", "decoded", "_state", "_remaining", "_line")

    _SIZE, _DATA, _DATA_END, _TRAILER = range(4)

    def __init__(self, *, decode: bool = False, strict: bool = False) -> None:
        self.done = False
        self.decode = decode
        # Strict (request bodies, which the master forwards byte for byte): CRLF line ends,
        # chunk sizes and extensions exactly as RFC 9112 7.1 spells them. Lenient readings
        # of the same bytes by the next hop are how chunked smuggling starts.
        self.strict = strict
        self.decoded: list[bytes] = []
        self._state = self._SIZE
        self._remaining = 0
        self._line = b""

    def feed(self, data: bytes) -> int:
        pos = 0
        end = len(data)
        while pos < end and not self.done:
            state = self._state
            if state == self._DATA:
                take = min(self._remaining, end - pos)
                if self.decode:
                    self.decoded.append(data[pos:pos + take])
                pos += take
                self._remaining -= take
                if self._remaining == 0:
                    self._state = self._DATA_END
                continue
            newline = data.find(b"\n", pos)
            if newline < 0:
                self._line += data[pos:]
                if len(self._line) > MAX_CHUNK_LINE:
                    raise HttpError("chunk line too long")
                return end
            line = self._line + data[pos:newline]
            self._line = b""
            pos = newline + 1
            if line.endswith(b"\r"):
                line = line[:-1]
            elif self.strict:
                raise HttpError("chunked body line without CRLF")
            if state == self._SIZE:
                if self.strict:
                    match = _CHUNK_SIZE_LINE.fullmatch(line)
                    if match is None:
                        raise HttpError("malformed chunk size line")
                    size_text = match.group(1)
                else:
                    size_text = line.split(b";", 1)[0].strip()
                if not size_text or len(size_text) > 16 or any(
                    c not in b"0123456789abcdefABCDEF" for c in size_text
                ):
                    raise HttpError("malformed chunk size")
                size = int(size_text, 16)
                if size == 0:
                    self._state = self._TRAILER
                else:
                    self._remaining = size
                    self._state = self._DATA
            elif state == self._DATA_END:
                if line:
                    raise HttpError("missing CRLF after chunk data")
                self._state = self._SIZE
            else:  # trailer section: ends at the first empty line
                if not line:
                    self.done = True
                elif self.strict and _HEADER_LINE.fullmatch(line) is None:
                    raise HttpError("malformed trailer line")
        return pos


def _show(raw: bytes) -> str:
    text = raw[:60].decode("latin-1")
    return repr(text + ("..." if len(raw) > 60 else ""))
