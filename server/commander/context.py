"""What the commander's views need from the rest of the server, in one value.

Blueprints are built from a ``Commander`` by factory functions instead of reading module
globals, so a test passes fakes in and two apps in one process never share state.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from scrapoxy_server.models import Scaling

from .errors import ApiError

if TYPE_CHECKING:
    from .events import LiveFeed


class Control(Protocol):
    """The manager facade (docs/ARCHITECTURE.md); every method runs on the reactor thread."""

    def list_instances(self) -> list[dict]: ...

    def get_scaling(self) -> Scaling: ...

    def update_scaling(self, changes: dict) -> Scaling | None: ...

    def stop_instance(self, name: str) -> int: ...

    # Optional: ``provider_status() -> list[dict]`` (``GET /api/providers``, the
    # ``providers`` event, the provider metrics), and ``on_change(listener)``.


# call_in_reactor(fn, *args): run fn on the reactor thread, wait, return its result.
CallInReactor = Callable[..., Any]


@dataclass
class Commander:
    """``control`` may arrive after the app is built (the composition root needs the
    commander's port before it can build the manager): ``app.set_control`` sets it once."""

    control: Control | None
    call_in_reactor: CallInReactor
    config_view: Callable[[], dict] | None = None
    stats_view: Callable[..., dict] | None = None
    config_update: Callable[[dict], Any] | None = None
    live: LiveFeed | None = None
    # CONNECT session token -> name of the instance its tunnels go through (the master's map).
    session_instance: Callable[[str], str | None] | None = None

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on the reactor thread: views live in the WSGI thread pool.

        When ``fn`` answers a Deferred, this waits for it and returns its result (or raises
        its error), as ``blockingCallFromThread`` does."""
        return self.call_in_reactor(fn, *args)

    def ready_control(self) -> Control:
        """The manager facade, or a JSON 503 while the server is still starting."""
        control = self.control
        if control is None:
            raise ApiError(503, "starting", "the server is still starting, try again shortly")
        return control
