"""Where the master's time goes on its per-request path: py-spy samples, summarised.

``record`` samples the master process (py-spy, from PyPI: ``pip install py-spy``) while a
load runs; ``summarise`` folds py-spy's raw stacks into the functions that take the most
time themselves (self) and with what they call (inclusive), as shares of the busy samples
(idle threads and the reactor's wait in epoll are left out).
"""
from __future__ import annotations

import collections
import shutil
import subprocess
from pathlib import Path
from typing import Any

PY_SPY = shutil.which("py-spy")
# Frames that are waiting, not working.
_IDLE = ("Condition.wait", "_bootstrap", "select (selectors", "Queue.get")


def available() -> bool:
    return PY_SPY is not None


def record(pid: int, *, seconds: float, out: Path, rate: int = 400) -> subprocess.Popen:
    """Start sampling ``pid`` for ``seconds``; wait on the returned process."""
    return subprocess.Popen(
        [PY_SPY, "record", "--nonblocking", "-r", str(rate), "-d", str(max(1, round(seconds))),
         "-p", str(pid), "-f", "raw", "-o", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def summarise(raw: Path, *, top: int = 15) -> dict[str, Any]:
    """{"samples": n, "self": [[percent, frame], ...], "inclusive": [[percent, function], ...]}"""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        if not line.strip():
            continue
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if any(marker in frame for frame in frames for marker in _IDLE):
            continue
        samples = int(count)
        total += samples
        own[_short(frames[-1])] += samples
        for function in {_function(frame) for frame in frames}:
            inclusive[function] += samples
    if not total:
        return {"samples": 0, "self": [], "inclusive": []}

    def shares(counter: collections.Counter[str]) -> list[list]:
        return [[round(100 * n / total, 1), name] for name, n in counter.most_common(top)]

    return {"samples": total, "self": shares(own), "inclusive": shares(inclusive)}


def _function(frame: str) -> str:
    """``Exchange.start (server/master/proxy.py:301)`` -> ``Exchange.start (proxy.py)``"""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit('/', 1)[-1].split(':')[0]})" if where else name


def _short(frame: str) -> str:
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit('/', 1)[-1].rstrip(')')})" if where else name
