"""Fakes for manager tests: a provider and a health checker whose behaviour a test scripts."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from twisted.internet import defer

from scrapoxy_server.models import Address, Endpoint, ProviderInstance, Status
from scrapoxy_server.providers.base import ProviderError


class FakeProvider:
    """Instances in a dict; creation makes them STARTED with an address unless told otherwise.

    ``fail_list`` / ``fail_create`` / ``fail_terminate`` make the next calls fail; ``calls`` records every call.
    """

    def __init__(self, name: str = "fake", *, start_with_address: bool = True) -> None:
        self.name = name
        self.instances: dict[str, ProviderInstance] = {}
        self.start_with_address = start_with_address
        self.fail_list: Exception | None = None
        self.fail_create: Exception | None = None
        self.fail_terminate: Exception | None = None
        # True: terminations never finish (a slow cloud); the instances stay listed.
        self.hold_terminations = False
        self.calls: list[tuple] = []
        self.terminated: list[str] = []
        self.shut_down = False
        self._counter = 0

    # scripting helpers
    def add(self, id: str, *, status: Status = Status.STARTED, address: Address | None = None,
            ) -> ProviderInstance:
        instance = ProviderInstance(id=id, provider=self.name, status=status, address=address)
        self.instances[id] = instance
        return instance

    def set_address(self, id: str, address: Address | None, status: Status = Status.STARTED) -> None:
        self.instances[id] = replace(self.instances[id], address=address, status=status)

    def names(self) -> list[str]:
        return sorted(self.instances)

    # the Provider interface
    def list_instances(self) -> defer.Deferred:
        self.calls.append(("list",))
        if self.fail_list is not None:
            return defer.fail(self.fail_list)
        return defer.succeed(list(self.instances.values()))

    def create_instances(self, count: int) -> defer.Deferred:
        self.calls.append(("create", count))
        if self.fail_create is not None:
            return defer.fail(self.fail_create)
        for _ in range(count):
            self._counter += 1
            id = f"{self.name}-{self._counter}"
            if self.start_with_address:
                self.add(id, address=Address("127.0.0.1", 10000 + self._counter))
            else:
                self.add(id, status=Status.STARTING)
        return defer.succeed(None)

    def terminate_instances(self, ids: Sequence[str]) -> defer.Deferred:
        self.calls.append(("terminate", tuple(ids)))
        if self.fail_terminate is not None:
            return defer.fail(self.fail_terminate)
        if self.hold_terminations:
            return defer.Deferred()
        for id in ids:
            if id in self.instances:
                del self.instances[id]
                self.terminated.append(id)
        return defer.succeed(None)

    def shutdown(self) -> defer.Deferred:
        self.shut_down = True
        return defer.succeed(None)

    def count(self, op: str) -> int:
        return sum(1 for call in self.calls if call[0] == op)


class FakeHealth:
    """Passes every check with ``127.0.0.<port % 250 + 2>`` except for names in ``failing``
    (refused at once) and ``hanging`` (never answered)."""

    def __init__(self) -> None:
        self.failing: set[str] = set()
        # Names whose checks never answer (a hung instance; the manager's timeout ends them).
        self.hanging: set[str] = set()
        self.checked: list[str] = []
        self.answers: dict[str, str] = {}

    def check(self, endpoint: Endpoint) -> defer.Deferred:
        self.checked.append(endpoint.name)
        if endpoint.name in self.hanging:
            return defer.Deferred()
        if endpoint.name in self.failing:
            return defer.fail(ConnectionRefusedError(f"{endpoint.address.port}: refused"))
        answer = self.answers.get(endpoint.name, f"127.0.0.{endpoint.address.port % 250 + 2}")
        return defer.succeed(answer)


def provider_error(message: str = "boom", *, retryable: bool = True) -> ProviderError:
    return ProviderError(message, retryable=retryable)
