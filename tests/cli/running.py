"""Run ``scrapoxy-server`` as a real process with pipes the test controls, and see its children.

``tests.lab.server`` sends the server's output to a file; these tests need the other cases a
user meets: stdout a pipe that the reader closes, a port already taken, a ``kill -9``.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.lab.server import REPO_ROOT, deep_merge, lab_config, to_toml
from tests.support import free_port


def write_config(workdir: Path, *, lab_ca: Any, overrides: dict[str, Any] | None = None,
                 instances: int = 2) -> tuple[Path, dict[str, Any]]:
    """The lab config on fresh free ports (plus ``overrides``), written to ``workdir``."""
    master_port = free_port()
    commander_port = free_port()
    while commander_port == master_port:
        commander_port = free_port()
    config = lab_config(master_port=master_port, commander_port=commander_port,
                        ca_file=lab_ca.ca_file, state_file=workdir / "state.json",
                        instances=instances)
    config = deep_merge(config, overrides or {})
    path = workdir / "scrapoxy.toml"
    path.write_text(to_toml(config))
    return path, config


def server_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy",
                 "ALL_PROXY"):
        env.pop(name, None)
    return env


@contextmanager
def server_process(args: list[str], *, cwd: Path, stdout: Any = subprocess.PIPE,
                   stderr: Any = subprocess.PIPE) -> Iterator[subprocess.Popen]:
    """``scrapoxy-server ARGS`` in its own session; whatever is left of it is killed after."""
    process = subprocess.Popen(
        [sys.executable, "-m", "scrapoxy_server.cli", *args], stdin=subprocess.DEVNULL,
        stdout=stdout, stderr=stderr, cwd=cwd, env=server_env(), start_new_session=True)
    try:
        yield process
    finally:
        kill_group(process.pid)
        if process.poll() is None:
            process.kill()
        process.wait(10)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces: split after the last ")".
    return text[text.rindex(")") + 2:].split()


def children_of(pid: int) -> list[int]:
    """Live (not zombie) processes whose parent is ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields is not None and fields[0] != "Z" and int(fields[1]) == pid:
                found.append(int(entry))
    return found


def running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def group_members(pgid: int) -> list[int]:
    """Live processes in process group ``pgid``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields is not None and fields[0] != "Z" and int(fields[3]) == pgid:
                found.append(int(entry))
    return found


def wait_for(predicate: Any, *, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
