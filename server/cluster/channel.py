"""The message channel between the leader and its master workers: length-prefixed JSON.

Each message is a JSON object, UTF-8, preceded by its length as 4 bytes big-endian. The same
framing runs both ways over the worker's stdin (leader -> worker) and stdout (worker ->
leader); stderr stays the worker's log. Pure functions and a small decoder, no I/O.
"""
from __future__ import annotations

import json
import struct
from typing import Any

_LENGTH = struct.Struct(">I")
# A pool of 10,000 instances is about 1.5 MB of JSON; anything far beyond is a broken peer.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class ChannelError(Exception):
    """The peer sent bytes that are not a message of this channel."""


def encode(message: dict[str, Any]) -> bytes:
    payload = json.dumps(message, separators=(",", ":")).encode("utf-8")
    return _LENGTH.pack(len(payload)) + payload


class FrameDecoder:
    """Turns a byte stream back into messages; ``feed`` returns those now complete."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self._buffer += data
        messages = []
        while len(self._buffer) >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(self._buffer)
            if length > MAX_MESSAGE_BYTES:
                raise ChannelError(f"message of {length} bytes announced (limit "
                                   f"{MAX_MESSAGE_BYTES})")
            end = _LENGTH.size + length
            if len(self._buffer) < end:
                break
            payload, self._buffer = self._buffer[_LENGTH.size:end], self._buffer[end:]
            try:
                message = json.loads(payload)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ChannelError(f"message is not JSON: {exc}") from None
            if not isinstance(message, dict) or not isinstance(message.get("kind"), str):
                raise ChannelError("message must be an object with a string 'kind'")
            messages.append(message)
        return messages
