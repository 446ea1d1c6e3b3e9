"""An instance started by the ``local`` provider dies with the server that started it.

A server killed with ``kill -9`` (or by the OOM killer) runs no shutdown: its
``scrapoxy-instance`` children would keep their ports and source addresses forever, and the next
server would not know them. The provider puts its pid in ``SCRAPOXY_PARENT_PID``; the instance
then

- asks Linux for SIGTERM when its parent goes (``prctl(PR_SET_PDEATHSIG)``), which arrives at
  once, even while the instance's reactor is busy. The kernel ties it to the parent *thread*
  that forked: that is the server's reactor thread, which lives as long as the server;
- and watches ``getppid()`` on its reactor every ``WATCH_INTERVAL`` seconds, which also covers
  systems without ``prctl`` and a parent that died before ``prctl`` was called.

Either way the instance stops as on SIGTERM: in-flight work ends, the process exits 0.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from twisted.internet import task
from twisted.logger import Logger

log = Logger()

PARENT_PID_ENV = "SCRAPOXY_PARENT_PID"
WATCH_INTERVAL = 1.0
_PR_SET_PDEATHSIG = 1


def parent_pid_from(environ: dict[str, str]) -> int | None:
    """The pid to outlive no longer, from ``SCRAPOXY_PARENT_PID``; None if unset.

    Raises ``ValueError`` naming the variable when it is not a positive integer.
    """
    text = environ.get(PARENT_PID_ENV)
    if text is None or text == "":
        return None
    if not text.isdigit() or int(text) <= 1:
        raise ValueError(f"{PARENT_PID_ENV} must be a process id, got {text!r}")
    return int(text)


def request_death_signal(signum: int = signal.SIGTERM) -> bool:
    """Ask the kernel to send ``signum`` when the parent exits; False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def watch_parent(*, clock: Any, parent_pid: int, stop: Callable[[], None],
                 getppid: Callable[[], int] = os.getppid,
                 interval: float = WATCH_INTERVAL) -> task.LoopingCall:
    """Call ``stop()`` once ``getppid()`` is no longer ``parent_pid`` (checked now, then every
    ``interval`` seconds on ``clock``). Returns the running loop."""

    def check() -> None:
        if getppid() != parent_pid:
            log.warn("parent process {pid} is gone: stopping", pid=parent_pid)
            if loop.running:
                loop.stop()
            stop()

    loop = task.LoopingCall(check)
    loop.clock = clock
    loop.start(interval, now=True)
    return loop
