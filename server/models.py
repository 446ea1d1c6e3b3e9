"""Values shared by the manager, the master, the providers and the commander.

Everything here is a plain, frozen value: the manager owns the mutable state, and hands
snapshots of it to the others.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Status(enum.Enum):
    """Lifecycle status of an instance as a provider reports it."""

    STARTING = "starting"
    STARTED = "started"
    STOPPING = "stopping"
    STOPPED = "stopped"
    ERROR = "error"


@dataclass(frozen=True)
class Address:
    hostname: str
    port: int


@dataclass(frozen=True)
class Credentials:
    """Credentials the master sends to an instance (never the scraper's own)."""

    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class ProviderInstance:
    """One instance as observed from its provider at one moment.

    ``id`` is unique within the provider; ``address`` is None while the provider has not
    given the instance an address yet (a cloud VM still pending, a process not yet listening).
    """

    id: str
    provider: str
    status: Status
    address: Address | None = None
    region: str | None = None
    credentials: Credentials | None = None
    # Provider-side error text, e.g. a capacity error while creating.
    error: str | None = None

    @property
    def name(self) -> str:
        """The instance name users see and pin with ``x-cache-proxyname``."""
        return self.id


@dataclass(frozen=True)
class Scaling:
    """Pool size wanted: ``min <= required <= max``."""

    min: int
    required: int
    max: int

    def as_dict(self) -> dict[str, int]:
        return {"min": self.min, "required": self.required, "max": self.max}


@dataclass(frozen=True)
class Endpoint:
    """What the master needs to send a request through an instance."""

    name: str
    address: Address
    credentials: Credentials | None = None
