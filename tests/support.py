"""Small helpers shared by tests: free ports, the reactor thread handle, waiting with deadlines."""
from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from twisted.internet import threads

T = TypeVar("T")


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ReactorThread:
    """Handle on the reactor running in a background thread."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn`` on the reactor thread and return its result (waiting for Deferreds)."""
        return threads.blockingCallFromThread(self.reactor, fn, *args, **kwargs)


def wait_until(predicate: Callable[[], T], *, timeout: float = 20.0, interval: float = 0.05,
               message: str = "condition") -> T:
    """Poll ``predicate`` until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message} (last: {last!r})")


REQUIRE_ALL = "SCRAPOXY_TEST_REQUIRE_ALL"


def skip_or_fail(reason: str) -> None:
    """Skip a test whose real component (tinyproxy, squid, chromium) is missing, unless the
    run says every component is there (CI sets ``SCRAPOXY_TEST_REQUIRE_ALL=1`` after it has
    installed them): then a missing one is a failure, not a quiet skip."""
    if os.environ.get(REQUIRE_ALL) == "1":
        pytest.fail(f"{reason} (and {REQUIRE_ALL}=1)")
    pytest.skip(reason)
