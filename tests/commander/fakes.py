"""A fake manager facade for commander tests: the same contract, state in memory."""
from __future__ import annotations

from scrapoxy_server.config import merge_scaling, validate_scaling
from scrapoxy_server.models import Scaling


class FakeControl:
    """Behaves like ``Manager``'s facade (docs/ARCHITECTURE.md), and records the changes."""

    def __init__(self, *, instances: list[dict] | None = None,
                 scaling: Scaling = Scaling(min=1, required=1, max=3)) -> None:
        self.instances = {i["name"]: i for i in (instances or [])}
        self.scaling = scaling
        self.stopped: list[str] = []
        self.scaling_updates: list[dict] = []
        self._listeners: list = []

    def on_change(self, listener) -> None:
        """Like ``Manager.on_change``: ``listener("instances" | "scaling")`` after a change."""
        self._listeners.append(listener)

    def notify(self, kind: str) -> None:
        for listener in list(self._listeners):
            listener(kind)

    def list_instances(self) -> list[dict]:
        return list(self.instances.values())

    def get_scaling(self) -> Scaling:
        return self.scaling

    def update_scaling(self, changes: dict) -> Scaling | None:
        merged = merge_scaling(self.scaling.as_dict(), changes)
        validate_scaling(merged, prefix="scaling.")
        updated = Scaling(**merged)
        if updated == self.scaling:
            return None
        self.scaling_updates.append(dict(changes))
        self.scaling = updated
        self.notify("scaling")
        return updated

    def stop_instance(self, name: str) -> int:
        if name not in self.instances:
            raise KeyError(name)
        del self.instances[name]
        self.stopped.append(name)
        self.notify("instances")
        return sum(1 for i in self.instances.values() if i["alive"])


def instance(name: str, *, alive: bool = True, port: int = 3128) -> dict:
    return {
        "name": name, "provider": "local", "status": "started", "alive": alive,
        "fingerprint": "127.0.0.2" if alive else None,
        "address": {"hostname": "127.0.0.1", "port": port}, "region": None,
        "started_at": 1_700_000_000.0, "requests": 7,
    }


class FakeControlWithProviders(FakeControl):
    """A FakeControl whose ``provider_status`` a test sets (``self.providers``)."""

    def __init__(self, *, providers: list[dict], **kwargs) -> None:
        super().__init__(**kwargs)
        self.providers = providers

    def provider_status(self) -> list[dict]:
        return [dict(p) for p in self.providers]


def provider(name: str, *, type: str = "awsec2", instances: int = 0, alive: int = 0,
             error: str | None = None, action: str = "create",
             since: float = 1_700_000_000.0) -> dict:
    return {
        "name": name, "type": type, "instances": instances, "alive": alive,
        "error": None if error is None else {
            "action": action, "message": error, "since": since, "failures": 2,
            "retry_at": since + 60.0},
    }
