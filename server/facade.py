"""The manager as the commander sees it: the manager facade plus what only the composition
root knows (each provider's type from the config).

The commander talks to this object, never to the manager directly; every method runs on
the reactor thread, like the manager's.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .manager import Manager
from .models import Scaling


class CommanderFacade:
    """Delegates to ``manager``; ``provider_status`` adds each provider's ``type``."""

    def __init__(self, *, manager: Manager, provider_types: Mapping[str, str]) -> None:
        self._manager = manager
        self._provider_types = dict(provider_types)

    def list_instances(self) -> list[dict[str, Any]]:
        return self._manager.list_instances()

    def get_scaling(self) -> Scaling:
        return self._manager.get_scaling()

    def update_scaling(self, changes: dict[str, Any]) -> Any:
        return self._manager.update_scaling(changes)

    def stop_instance(self, name: str) -> int:
        return self._manager.stop_instance(name)

    def on_change(self, listener: Callable[[str], None]) -> None:
        self._manager.on_change(listener)

    def provider_status(self) -> list[dict[str, Any]]:
        return [{**status, "type": self._provider_types.get(status["name"])}
                for status in self._manager.provider_status()]
