"""Fixtures for the instance tests: the proxy in-process on the session reactor thread."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from scrapoxy_server.instance.proxy import InstanceSettings, listen
from tests.instance.lab import running_origin

SOURCE = "127.0.0.7"


@pytest.fixture
def start_proxy(reactor_thread: Any) -> Iterator[Callable[..., int]]:
    """Start ``scrapoxy-instance`` in-process (source 127.0.0.7 by default); returns its port."""
    ports: list[Any] = []

    def start(*, source: str | None = SOURCE, credentials: bytes | None = None,
              connect_timeout_s: float = 10.0) -> int:
        settings = InstanceSettings(source=source, credentials=credentials,
                                    connect_timeout_s=connect_timeout_s)
        port = reactor_thread.call(listen, reactor_thread.reactor, host="127.0.0.1", port=0,
                                   settings=settings)
        ports.append(port)
        return port.getHost().port

    yield start
    for port in ports:
        reactor_thread.call(port.stopListening)


@pytest.fixture
def proxy_port(start_proxy: Callable[..., int]) -> int:
    return start_proxy()


@pytest.fixture
def origin() -> Iterator[tuple[Any, int]]:
    with running_origin() as server_and_port:
        yield server_and_port
