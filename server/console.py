"""What ``scrapoxy-server`` tells its user on stdout, written so that a lost reader is harmless.

``scrapoxy-server start | grep master`` closes the pipe when grep exits, and a supervisor may
close the server's stdout at any time. A plain ``print`` then raises ``BrokenPipeError``; raised
inside the shutdown trigger, it skipped the rest of the shutdown (the commander's thread pool
was never stopped and the process hung in ``threading._shutdown``). ``say`` never raises: once
stdout is gone it is pointed at ``/dev/null``, so later messages and the interpreter's final
flush do not fail either.
"""
from __future__ import annotations

import os
import sys


def say(text: str) -> None:
    """Print one message for the user and flush it; a closed or broken stdout is ignored."""
    stream = sys.stdout
    if stream is None:  # started with stdout closed (``>&-``)
        return
    try:
        stream.write(text + "\n")
        stream.flush()
    except (OSError, ValueError):  # BrokenPipeError, EIO; ValueError: stream closed
        _discard_stdout()


def _discard_stdout() -> None:
    """Point fd 1 at /dev/null and drop what is buffered, so nothing writes to the dead pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        finally:
            os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass
    # The text stream may still hold the unsent bytes; a fresh one on the same fd has none.
    try:
        sys.stdout = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - lives until exit
    except OSError:
        sys.stdout = None  # type: ignore[assignment]
