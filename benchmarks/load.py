"""Load generators: wrk for HTTP (direct and through a proxy), a Python client for CONNECT.

``run_wrk`` drives one point and samples the CPU of the measured processes around it.
Requests through a proxy are absolute-form: a Lua script sets wrk's request path to the full
URL (and ``Host`` to the origin), while wrk itself connects to the proxy. The request is static,
so wrk formats it once (no Lua call per request).
"""
from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from lab import HOST, cpu_seconds

WRK = shutil.which("wrk") or "/usr/bin/wrk"


@dataclass
class Point:
    """One measured point; CPU figures are microseconds of CPU per completed request."""

    path: str
    body: str
    concurrency: int
    duration: float
    requests: int = 0
    rps: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    non_2xx: int = 0
    socket_errors: dict = field(default_factory=dict)
    cpu_us_per_request: dict = field(default_factory=dict)
    transfer_per_sec: str = ""
    note: str = ""
    error: str = ""

    @property
    def failed(self) -> int:
        return self.non_2xx + sum(self.socket_errors.values())


def lua_script(workdir: Path, *, url: str | None, headers: dict[str, str]) -> Path:
    """A wrk script that sends ``url`` as an absolute-form request target (if given)."""
    lines = []
    if url is not None:
        lines.append(f'wrk.path = "{url}"')
    for name, value in headers.items():
        lines.append(f'wrk.headers["{name}"] = "{value}"')
    name = f"wrk-{abs(hash((url, tuple(headers.items()))))}.lua"
    path = workdir / name
    path.write_text("\n".join(lines) + "\n")
    return path


def run_wrk(*, label: str, body: str, concurrency: int, duration: float, connect_url: str,
            script: Path | None, pids: dict[str, int], timeout_s: float = 10.0) -> Point:
    """Run wrk against ``connect_url`` and measure CPU of ``pids`` over the run."""
    threads = 1 if concurrency < 8 else 2
    command = [WRK, "-t", str(threads), "-c", str(concurrency), "-d", f"{duration:g}s",
               "--latency", "--timeout", f"{timeout_s:g}s"]
    if script is not None:
        command += ["-s", str(script)]
    command.append(connect_url)
    point = Point(path=label, body=body, concurrency=concurrency, duration=duration)
    before = {name: _cpu(pid) for name, pid in pids.items()}
    started = time.monotonic()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=duration + 30)
    except subprocess.TimeoutExpired:
        point.error = "wrk did not finish (stall?)"
        return point
    elapsed = time.monotonic() - started
    after = {name: _cpu(pid) for name, pid in pids.items()}
    parse_wrk(done.stdout, point)
    if done.returncode != 0 or point.requests == 0:
        point.error = (done.stderr.strip() or done.stdout.strip())[-500:] or "no requests"
    if point.requests:
        for name in pids:
            if before[name] is not None and after[name] is not None:
                point.cpu_us_per_request[name] = round(
                    (after[name] - before[name]) / point.requests * 1e6, 1)
    point.note = f"wall {elapsed:.1f}s"
    return point


def _cpu(pid: int) -> float | None:
    try:
        return cpu_seconds(pid)
    except OSError:
        return None


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(text)
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str, point: Point) -> None:
    """Fill ``point`` from wrk's text output (``--latency`` format)."""
    for line in output.splitlines():
        words = line.split()
        if len(words) == 2 and words[0] in ("50%", "99%"):
            value = _ms(words[1])
            if words[0] == "50%":
                point.p50_ms = value
            else:
                point.p99_ms = value
        elif "requests in" in line:
            point.requests = int(words[0])
        elif line.startswith("Requests/sec:"):
            point.rps = float(words[1])
        elif line.startswith("Transfer/sec:"):
            point.transfer_per_sec = words[1]
        elif line.strip().startswith("Non-2xx or 3xx responses:"):
            point.non_2xx = int(words[-1])
        elif line.strip().startswith("Socket errors:"):
            for key, value in re.findall(r"(\w+) (\d+)", line.split(":", 1)[1]):
                point.socket_errors[key] = int(value)


# --- CONNECT tunnels ---------------------------------------------------------------------


class _TunnelClient(asyncio.Protocol):
    """One CONNECT tunnel to the origin, then keep-alive GETs inside it, one at a time."""

    def __init__(self, *, target: str, request: bytes, body_size: int, stop_at: float,
                 latencies: list[float], done: asyncio.Future) -> None:
        self.target = target
        self.request = request
        self.expect = body_size
        self.stop_at = stop_at
        self.latencies = latencies
        self.done = done
        self.buffer = bytearray()
        self.tunnelled = False
        self.left = -1
        self.sent_at = 0.0
        self.error = ""

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(f"CONNECT {self.target} HTTP/1.1\r\nHost: {self.target}\r\n\r\n".encode())

    def data_received(self, data: bytes) -> None:
        if not self.tunnelled:
            self.buffer += data
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status = self.buffer[:end].split(b" ", 2)[1]
            if status != b"200":
                self._finish(f"CONNECT answered {status.decode(errors='replace')}")
                return
            self.tunnelled = True
            rest = bytes(self.buffer[end + 4:])
            self.buffer.clear()
            self._send()
            if rest:
                self.data_received(rest)
            return
        if self.left < 0:
            self.buffer += data
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).lower()
            if not head.startswith(b"http/1.1 200"):
                self._finish("non-200 inside the tunnel: " + head[:40].decode(errors="replace"))
                return
            length = int(re.search(rb"content-length: *(\d+)", head).group(1))
            got = len(self.buffer) - end - 4
            self.buffer.clear()
            self.left = length - got
        else:
            self.left -= len(data)
        if self.left == 0:
            self.latencies.append(time.perf_counter() - self.sent_at)
            self.left = -1
            if time.perf_counter() >= self.stop_at:
                self._finish("")
            else:
                self._send()
        elif self.left < 0:
            self._finish("more bytes than Content-Length (pipelining is not used)")

    def _send(self) -> None:
        self.sent_at = time.perf_counter()
        self.transport.write(self.request)

    def _finish(self, error: str) -> None:
        self.error = error
        self.transport.close()

    def connection_lost(self, exc) -> None:
        if not self.done.done():
            if not self.error and (self.left != -1 or time.perf_counter() < self.stop_at):
                self.error = f"connection lost: {exc or 'closed by peer'}"
            self.done.set_result(self.error)


async def _connect_load(*, proxy_port: int, target: str, path: str, body_size: int,
                        concurrency: int, duration: float) -> tuple[list[float], list[str]]:
    loop = asyncio.get_running_loop()
    stop_at = time.perf_counter() + duration
    latencies: list[float] = []
    request = f"GET {path} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode()
    futures = []
    for _ in range(concurrency):
        done = loop.create_future()
        futures.append(done)
        try:
            await loop.create_connection(
                lambda done=done: _TunnelClient(target=target, request=request,
                                                body_size=body_size, stop_at=stop_at,
                                                latencies=latencies, done=done),
                HOST, proxy_port)
        except OSError as exc:
            done.set_result(f"connect: {exc}")
    errors = await asyncio.wait_for(asyncio.gather(*futures), timeout=duration + 30)
    return latencies, [e for e in errors if e]


def run_connect(*, label: str, proxy_port: int, target: str, path: str, body: str,
                body_size: int, concurrency: int, duration: float, pids: dict[str, int]) -> Point:
    """``concurrency`` CONNECT tunnels to ``target``, each running keep-alive GETs of ``path``.

    The requests inside the tunnel are plain HTTP: a tunnel relays bytes without reading them,
    so TLS inside would only add client and origin CPU (this client is Python, on the same
    cores) without changing what the proxy does per byte.
    """
    point = Point(path=label, body=body, concurrency=concurrency, duration=duration)
    before = {name: _cpu(pid) for name, pid in pids.items()}
    started = time.perf_counter()
    try:
        latencies, errors = asyncio.run(_connect_load(
            proxy_port=proxy_port, target=target, path=path, body_size=body_size,
            concurrency=concurrency, duration=duration))
    except asyncio.TimeoutError:
        point.error = "CONNECT client did not finish (stall?)"
        return point
    elapsed = time.perf_counter() - started
    after = {name: _cpu(pid) for name, pid in pids.items()}
    point.requests = len(latencies)
    point.rps = round(len(latencies) / elapsed, 1)
    if latencies:
        latencies.sort()
        point.p50_ms = round(latencies[len(latencies) // 2] * 1000, 3)
        point.p99_ms = round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000, 3)
        for name in pids:
            if before[name] is not None and after[name] is not None:
                point.cpu_us_per_request[name] = round(
                    (after[name] - before[name]) / point.requests * 1e6, 1)
    if errors:
        point.socket_errors["tunnel"] = len(errors)
        point.error = "; ".join(sorted(set(errors)))[:300]
    point.note = f"wall {elapsed:.1f}s; python client"
    return point
