"""What the commander's views need from the rest of the server, in one value.

Blueprints are built from a ``Commander`` by factory functions instead of reading module
globals, so a test passes fakes in and two apps in one process never share state.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from scrapoxy_server.models import Scaling


class Control(Protocol):
    """The manager facade (docs/ARCHITECTURE.md); every method runs on the reactor thread."""

    def list_instances(self) -> list[dict]: ...

    def get_scaling(self) -> Scaling: ...

    def update_scaling(self, changes: dict) -> Scaling | None: ...

    def stop_instance(self, name: str) -> int: ...


# call_in_reactor(fn, *args): run fn on the reactor thread, wait, return its result.
CallInReactor = Callable[..., Any]


@dataclass(frozen=True)
class Commander:
    control: Control
    call_in_reactor: CallInReactor
    config_view: Callable[[], dict] | None = None
    stats_view: Callable[[], dict] | None = None

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on the reactor thread: views live in the WSGI thread pool."""
        return self.call_in_reactor(fn, *args)
