"""The one small interface every provider implements.

Calls return Deferreds and never block the reactor: a provider whose SDK blocks (boto3) runs
it in a thread. ``list_instances`` is the truth the manager reconciles against on every tick;
a provider must not assume its own earlier answers are still true.
"""
from __future__ import annotations

from typing import Protocol, Sequence

from twisted.internet.defer import Deferred

from ..models import ProviderInstance


class ProviderError(Exception):
    """A provider call failed; ``retryable`` is False for capacity or limit errors that a
    quick retry will not fix."""

    def __init__(self, message: str, *, retryable: bool = True):
        super().__init__(message)
        self.retryable = retryable


class Provider(Protocol):
    name: str
    # False for a provider whose instances exist without us (``static``: the user's proxies):
    # the manager never asks it to create, and at shutdown releases its instances instead of
    # terminating them. Read with a default of True.
    creates_instances: bool

    def list_instances(self) -> Deferred[Sequence[ProviderInstance]]: ...

    def create_instances(self, count: int) -> Deferred[None]: ...

    def terminate_instances(self, ids: Sequence[str]) -> Deferred[None]: ...

    def shutdown(self) -> Deferred[None]:
        """Release resources at server stop (not terminating instances: the manager decides)."""
        ...
