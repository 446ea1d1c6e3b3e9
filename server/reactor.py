"""The reactor the server processes run on: Twisted's epoll reactor without per-event log context.

Twisted wraps every socket event in ``log.callWithLogger``, which pushes a logging context
(the protocol's log prefix) for legacy ``twisted.python.log`` observers. This project logs
through :mod:`logging` and never reads that context, yet paid for it on every read and write:
about 5% of the master's CPU per proxied request in the benchmark's profile. This reactor
dispatches events directly; an exception escaping a protocol is still logged and the loop goes on.

``install()`` must run before anything imports ``twisted.internet.reactor``; where epoll is
missing (not Linux), Twisted's default reactor is kept.
"""

from __future__ import annotations

import errno

from twisted.python import log

try:
    from twisted.internet.epollreactor import EPollReactor
except ImportError:  # pragma: no cover - not Linux
    EPollReactor = None  # type: ignore[assignment,misc]


if EPollReactor is not None:

    class LeanEPollReactor(EPollReactor):  # type: ignore[misc,valid-type]
        """EPollReactor whose ``doPoll`` calls ``_doReadOrWrite`` without a log context."""

        def doPoll(self, timeout):  # noqa: N802 - Twisted's name
            if timeout is None:
                timeout = -1
            try:
                events = self._poller.poll(timeout, len(self._selectables))
            except OSError as err:
                if err.errno == errno.EINTR:
                    return
                raise
            selectables = self._selectables
            dispatch = self._doReadOrWrite
            for fd, event in events:
                selectable = selectables.get(fd)
                if selectable is None:
                    continue
                try:
                    # Handles (and logs) a failing doRead/doWrite itself, disconnecting it.
                    dispatch(selectable, fd, event)
                except Exception:  # noqa: BLE001 - the loop must go on, as Twisted's does
                    log.err(None, "Unhandled error in the reactor's event dispatch")

        doIteration = doPoll


def install() -> bool:
    """Install the lean reactor if no reactor is installed yet; True when it was."""
    import sys

    if "twisted.internet.reactor" in sys.modules or EPollReactor is None:
        return False
    from twisted.internet.main import installReactor

    installReactor(LeanEPollReactor())
    return True
