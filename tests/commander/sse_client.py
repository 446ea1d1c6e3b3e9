"""A minimal Server-Sent Events reader over ``requests`` (stream=True), for tests."""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import requests


@dataclass(frozen=True)
class ReceivedEvent:
    id: str | None
    kind: str
    data: Any


class EventStream:
    """``GET /api/events``; ``next_event()`` parses one event, ``until(kind, predicate)``
    reads until a matching one arrives or the deadline passes."""

    def __init__(self, session: requests.Session, url: str, *,
                 last_event_id: str | None = None, read_timeout: float = 10.0) -> None:
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        self.response = session.get(url, headers=headers, stream=True,
                                    timeout=(5, read_timeout))
        self._lines: Iterator[bytes] = self.response.iter_lines(chunk_size=1,
                                                                delimiter=b"\n")
        self.last_id: str | None = last_event_id
        self.comments = 0
        self.retry: int | None = None

    def next_event(self) -> ReceivedEvent:
        event_id, kind, data = None, "message", []
        for raw in self._lines:
            line = raw.decode("utf-8")
            if line == "":
                if data:
                    if event_id is not None:
                        self.last_id = event_id
                    return ReceivedEvent(event_id, kind, json.loads("\n".join(data)))
                continue
            if line.startswith(":"):
                self.comments += 1
                continue
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "id":
                event_id = value
            elif field == "event":
                kind = value
            elif field == "data":
                data.append(value)
            elif field == "retry":
                self.retry = int(value)
        raise EOFError("the event stream ended")

    def until(self, kind: str, predicate=lambda data: True, *,
              timeout: float = 10.0) -> ReceivedEvent:
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            event = self.next_event()
            if event.kind == kind and predicate(event.data):
                return event
            seen.append(event.kind)
        raise AssertionError(f"no matching {kind!r} event within {timeout}s (saw {seen})")

    def close(self) -> None:
        self.response.close()
