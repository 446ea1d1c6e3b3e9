"""The manager as the commander sees it: the manager facade plus what only the composition
root knows (each provider's type from the config) and does (recording a scaling changed
through the API in the state file, so that it survives a restart).

The commander talks to this object, never to the manager directly; every method runs on
the reactor thread, like the manager's.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet import defer

from .manager import Manager
from .models import Scaling
from .state import StateKeeper


class CommanderFacade:
    """Delegates to ``manager``; ``provider_status`` adds each provider's ``type``;
    ``update_scaling`` records a change in ``state`` (when given)."""

    def __init__(self, *, manager: Manager, provider_types: Mapping[str, str],
                 state: StateKeeper | None = None) -> None:
        self._manager = manager
        self._provider_types = dict(provider_types)
        self._state = state

    def list_instances(self) -> list[dict[str, Any]]:
        return self._manager.list_instances()

    def get_scaling(self) -> Scaling:
        return self._manager.get_scaling()

    def update_scaling(self, changes: dict[str, Any]) -> Scaling | None | defer.Deferred:
        """The manager's answer; when something changed and a state file is kept, a
        Deferred firing with it once the state file holds the new scaling (so a 200 means
        the change survives a restart)."""
        updated = self._manager.update_scaling(changes)
        if updated is None or self._state is None:
            return updated
        return self._state.record_scaling(updated.as_dict(), sent=changes).addCallback(
            lambda _: updated)

    def stop_instance(self, name: str) -> int:
        return self._manager.stop_instance(name)

    def on_change(self, listener: Callable[[str], None]) -> None:
        self._manager.on_change(listener)

    def provider_status(self) -> list[dict[str, Any]]:
        return [{**status, "type": self._provider_types.get(status["name"])}
                for status in self._manager.provider_status()]
