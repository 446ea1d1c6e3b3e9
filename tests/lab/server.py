"""Run ``scrapoxy-server start CONFIG`` as a real subprocess, and talk to its commander.

End-to-end tests drive the product the way a user does: a TOML file, the CLI, a proxy port and
the REST API. The lab config puts master and commander on free loopback ports, gives the
commander the password ``pw``, runs the ``local`` provider with 3 instances, ticks fast
(0.5 s) and trusts the lab CA for HTTPS targets. The server's output goes to a file, which
``output()`` returns for failure reports.
"""
from __future__ import annotations

import copy
import json
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import requests

from tests.support import free_port, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
COMMANDER_USERNAME = "admin"
COMMANDER_PASSWORD = "pw"


def lab_config(*, master_port: int, commander_port: int, ca_file: str | os.PathLike,
               state_file: str | os.PathLike, instances: int = 3) -> dict[str, Any]:
    """The lab's server config as plain data (see ``scrapoxy_server.config`` for the keys)."""
    return {
        "state_file": str(state_file),
        "master": {
            "host": "127.0.0.1",
            "port": master_port,
            "ca_file": str(ca_file),
            "wait_for_instance": 10.0,
        },
        "commander": {
            "host": "127.0.0.1",
            "port": commander_port,
            "username": COMMANDER_USERNAME,
            "password": COMMANDER_PASSWORD,
        },
        "scaling": {"min": instances, "required": instances, "max": instances},
        "manager": {"check_interval": 0.5, "alive_check_interval": 0.5},
        "providers": [{"type": "local"}],
    }


def deep_merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` applied; nested tables merge, anything else replaces."""
    merged = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def to_toml(data: dict[str, Any]) -> str:
    """Serialize plain data (tables, arrays of tables, scalars, lists of scalars) as TOML."""
    lines: list[str] = []
    _emit_table(data, [], lines)
    return "\n".join(lines).lstrip("\n") + "\n"


def _emit_table(table: dict[str, Any], path: list[str], lines: list[str]) -> None:
    nested: list[tuple[str, Any]] = []
    for key, value in table.items():
        if value is None:
            continue  # TOML has no null: leave the key to its default
        if isinstance(value, dict) or (
            isinstance(value, list) and value and all(isinstance(v, dict) for v in value)
        ):
            nested.append((key, value))
        else:
            lines.append(f"{_key(key)} = {_value(value)}")
    for key, value in nested:
        sub = path + [key]
        if isinstance(value, dict):
            lines += ["", f"[{'.'.join(_key(k) for k in sub)}]"]
            _emit_table(value, sub, lines)
        else:
            for item in value:
                lines += ["", f"[[{'.'.join(_key(k) for k in sub)}]]"]
                _emit_table(item, sub, lines)


def _key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


class CommanderClient:
    """The commander's REST API with Basic auth; methods return parsed JSON or raw responses."""

    def __init__(self, base_url: str, *, username: str = COMMANDER_USERNAME,
                 password: str = COMMANDER_PASSWORD, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.auth = (username, password)
        self.session.trust_env = False  # never route loopback API calls through a proxy

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        return self.session.request(method, self.base_url + path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("PATCH", path, **kwargs)

    def instances(self) -> list[dict[str, Any]]:
        response = self.get("/api/instances")
        response.raise_for_status()
        return response.json()

    def alive(self) -> list[dict[str, Any]]:
        return [instance for instance in self.instances() if instance.get("alive") is True]

    def stop_instance(self, name: str) -> requests.Response:
        return self.post("/api/instances/stop", json={"name": name})

    def scaling(self) -> dict[str, Any]:
        response = self.get("/api/scaling")
        response.raise_for_status()
        return response.json()

    def wait_instances(self, predicate: Callable[[list[dict[str, Any]]], bool], *,
                       timeout: float = 60.0, message: str = "instances") -> list[dict[str, Any]]:
        """Poll ``GET /api/instances`` until ``predicate(instances)`` holds; returns them."""
        last: list[dict[str, Any]] = []
        last_error = ""

        def check() -> bool:
            nonlocal last, last_error
            try:
                last = self.instances()
            except (requests.RequestException, ValueError) as exc:
                last_error = f"{type(exc).__name__}: {exc}"
                return False  # still starting, or a transient error: keep polling
            return predicate(last)

        try:
            wait_until(check, timeout=timeout, interval=0.2, message=message)
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}; last GET /api/instances: {last!r}; last error: {last_error or 'none'}"
            ) from None
        return last

    def wait_alive(self, n: int, *, timeout: float = 60.0) -> list[dict[str, Any]]:
        """Wait until at least ``n`` instances are alive; returns the alive ones."""
        instances = self.wait_instances(
            lambda found: sum(1 for i in found if i.get("alive") is True) >= n,
            timeout=timeout, message=f"{n} alive instances",
        )
        return [instance for instance in instances if instance.get("alive") is True]


@dataclass
class ScrapoxyServer:
    """A running ``scrapoxy-server`` subprocess."""

    process: subprocess.Popen
    workdir: Path
    config_path: Path
    log_path: Path
    master_port: int
    commander_port: int
    config: dict[str, Any] = field(repr=False)
    orphans_killed: bool = False

    @property
    def master_url(self) -> str:
        return f"http://127.0.0.1:{self.master_port}"

    @property
    def commander_url(self) -> str:
        return f"http://127.0.0.1:{self.commander_port}"

    @property
    def api(self) -> CommanderClient:
        return CommanderClient(self.commander_url)

    def proxies(self) -> dict[str, str]:
        """``proxies=`` for ``requests``: plain HTTP and CONNECT both through the master."""
        return {"http": self.master_url, "https": self.master_url}

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(no output: {exc})"

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, *, timeout: float = 20.0) -> int:
        """SIGTERM, wait, then SIGKILL the process group if it lingers; returns the exit code.

        Processes left in the server's group after it exited (local instances it did not
        terminate) are killed too, and ``orphans_killed`` says so: a dedicated test can assert
        on it, and no test run leaves proxies behind.
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                _kill_group(self.process.pid)
                self.process.wait(5)
        self.orphans_killed = _kill_group(self.process.pid)
        return self.process.returncode


class ServerStartError(RuntimeError):
    pass


def start_server(workdir: Path, *, ca_file: str | os.PathLike,
                 overrides: dict[str, Any] | None = None, instances: int = 3,
                 timeout: float = 30.0, env: dict[str, str] | None = None) -> ScrapoxyServer:
    """Write the lab config (plus ``overrides``) to ``workdir`` and start the server on it.

    Returns once both the master and the commander accept connections; raises
    ``ServerStartError`` with the server's output if it exits or does not come up in time.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    master_port = free_port()
    commander_port = free_port()
    while commander_port == master_port:
        commander_port = free_port()
    config = lab_config(master_port=master_port, commander_port=commander_port,
                        ca_file=ca_file, state_file=workdir / "state.json", instances=instances)
    if overrides:
        config = deep_merge(config, overrides)
    config_path = workdir / "scrapoxy.toml"
    config_path.write_text(to_toml(config))
    log_path = workdir / "server.log"
    process_env = dict(os.environ)
    process_env["PYTHONUNBUFFERED"] = "1"
    process_env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT)] + ([process_env["PYTHONPATH"]] if process_env.get("PYTHONPATH") else [])
    )
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        process_env.pop(name, None)
    process_env.update(env or {})
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "scrapoxy_server.cli", "start", str(config_path)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=workdir,
            env=process_env, start_new_session=True,
        )
    server = ScrapoxyServer(process=process, workdir=workdir, config_path=config_path,
                            log_path=log_path, master_port=master_port,
                            commander_port=commander_port, config=config)

    def up() -> bool:
        return not server.running() or (_accepts(master_port) and _accepts(commander_port))

    try:
        wait_until(up, timeout=timeout, interval=0.1, message="scrapoxy-server listening")
    except AssertionError:
        server.stop()
        raise ServerStartError(
            f"scrapoxy-server did not listen within {timeout}s\n{server.output()}"
        ) from None
    if not server.running():
        raise ServerStartError(
            f"scrapoxy-server exited with {process.returncode}\n{server.output()}"
        )
    return server


def _kill_group(pgid: int) -> bool:
    """SIGKILL process group ``pgid``; False when no process was left in it."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _accepts(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False
