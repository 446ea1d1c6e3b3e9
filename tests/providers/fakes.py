"""Test doubles for providers: a clock whose "threads" run inline, and an EC2 client that
fails on cue.

``deferToThreadPool`` hands work to a pool and the result back with ``reactor.callFromThread``;
with ``InlineThreadPool`` and ``InlineClock`` both happen at once on the test thread, so a test
drives retries and backoff entirely with ``Clock.advance``.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError
from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure


class InlineClock(task.Clock):
    """A ``task.Clock`` that also accepts ``callFromThread`` (runs the call at once)."""

    def callFromThread(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        fn(*args, **kwargs)


class InlineThreadPool:
    """Runs "thread" work synchronously, counting how much went through it."""

    def __init__(self) -> None:
        self.calls = 0

    def callInThreadWithCallback(self, on_result: Callable[[bool, Any], None],
                                 fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.calls += 1
        try:
            result = fn(*args, **kwargs)
        except BaseException:
            on_result(False, Failure())
        else:
            on_result(True, result)


def client_error(code: str, message: str = "", operation: str = "Operation") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message or f"{code} (injected)"}},
                       operation)


class FlakyClient:
    """Wraps a real (moto) EC2 client; ``fail(operation, errors)`` makes the next calls of
    that operation raise those errors, in order, before reaching the real client.
    ``fail_always`` makes every call raise. Every call is recorded in ``calls``."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self._queued: dict[str, list[Exception]] = defaultdict(list)
        self._always: dict[str, Exception] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def fail(self, operation: str, *errors: Exception) -> None:
        self._queued[operation].extend(errors)

    def fail_always(self, operation: str, error: Exception) -> None:
        self._always[operation] = error

    def calls_to(self, operation: str) -> list[dict[str, Any]]:
        return [params for name, params in self.calls if name == operation]

    def __getattr__(self, operation: str) -> Callable[..., Any]:
        real_method = getattr(self._real, operation)

        def call(**params: Any) -> Any:
            self.calls.append((operation, dict(params)))
            if operation in self._always:
                raise self._always[operation]
            if self._queued[operation]:
                raise self._queued[operation].pop(0)
            return real_method(**params)

        return call


def drive(clock: task.Clock, deferred: Deferred, *, step: float = 1.0, limit: float = 600.0) -> Any:
    """Advance ``clock`` until ``deferred`` fires; return its result or raise its failure."""
    waited = 0.0
    while not deferred.called and waited < limit:
        clock.advance(step)
        waited += step
    results: list[Any] = []
    deferred.addBoth(results.append)
    if not results:
        raise AssertionError(f"deferred did not fire within {limit} clock seconds")
    outcome = results[0]
    if isinstance(outcome, Failure):
        outcome.raiseException()
    return outcome
