"""Child processes whose end is always noticed, with or without a SIGCHLD handler."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from twisted.internet import protocol

# Seconds between checks for an exited child that has not been reaped yet.
REAP_POLL = 0.2


class ReapingProcessProtocol(protocol.ProcessProtocol):
    """A ``ProcessProtocol`` whose ``processEnded`` fires even without SIGCHLD handling.

    Twisted reaps a child on SIGCHLD, or once when its pipes close. When the reactor runs
    without signal handlers (embedded in another program, or in a test thread) and the child
    is not yet reapable at the instant its last pipe closes, nothing would ever call
    ``processEnded``. Once every pipe in ``watched_fds`` is closed, this polls until Twisted
    has reaped the child (it clears ``transport.pid`` then).
    """

    def __init__(self, *, reactor: Any, watched_fds: Iterable[int]) -> None:
        self._reap_reactor = reactor
        self._watched_fds = frozenset(watched_fds)
        self._closed_fds: set[int] = set()

    def childConnectionLost(self, childFD: int) -> None:
        self._closed_fds.add(childFD)
        if self._watched_fds <= self._closed_fds:
            self._poll_reap()

    def _poll_reap(self) -> None:
        if self.transport is None or self.transport.pid is None:
            return
        self.transport.reapProcess()
        if self.transport.pid is not None:
            self._reap_reactor.callLater(REAP_POLL, self._poll_reap)
