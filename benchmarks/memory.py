"""Memory checks of the master: RSS while clients stream large bodies, and idle connections.

Both run in this process with asyncio and sample the master's RSS from ``/proc``.

``stream_big_bodies``: ``clients`` connections each ask for the origin's 100 MiB body through
the master. First every client *stops reading* for ``stall`` seconds once the headers arrived:
a master without flow control would then buffer what squid keeps sending (up to 100 MiB per
client); with flow control its RSS stays flat. Then every client reads to the end, discarding.
The peak RSS over both phases is compared with the idle RSS.

``hold_idle_connections``: ``count`` client connections opened to the master and held with
nothing sent; after ``hold`` seconds we count the ones the master closed or reset, then send a
real request on a sample of them and on a fresh connection.
"""
from __future__ import annotations

import asyncio
import time

from lab import HOST, rss_bytes

MIB = 1024 * 1024


class _Sampler:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self.samples: list[tuple[float, int]] = []
        self.t0 = time.monotonic()

    def sample(self) -> int:
        try:
            value = rss_bytes(self.pid)
        except OSError:
            return 0
        self.peak = max(self.peak, value)
        self.samples.append((round(time.monotonic() - self.t0, 2), value))
        return value

    async def run(self, stop: asyncio.Event, every: float = 0.1) -> None:
        while not stop.is_set():
            self.sample()
            try:
                await asyncio.wait_for(stop.wait(), every)
            except asyncio.TimeoutError:
                pass


class _Streamer(asyncio.Protocol):
    def __init__(self, request: bytes, expect: int, headers_seen: asyncio.Event,
                 done: asyncio.Future) -> None:
        self.request = request
        self.expect = expect
        self.headers_seen = headers_seen
        self.done = done
        self.head = bytearray()
        self.received = 0
        self.status = b""

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if not self.status:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            self.status = bytes(self.head[:end]).split(b" ", 2)[1]
            self.received = len(self.head) - end - 4
            self.head.clear()
            self.transport.pause_reading()
            self.headers_seen.set()
        else:
            self.received += len(data)
        if self.received >= self.expect and not self.done.done():
            self.done.set_result((self.status, self.received))
            self.transport.close()

    def connection_lost(self, exc) -> None:
        if not self.done.done():
            self.done.set_result((self.status or b"lost", self.received))


async def _stream(*, master_port: int, origin_port: int, pid: int, clients: int, size: int,
                  stall: float, timeout: float) -> dict:
    loop = asyncio.get_running_loop()
    sampler = _Sampler(pid)
    idle = sampler.sample()
    request = (f"GET http://{HOST}:{origin_port}/100m HTTP/1.1\r\n"
               f"Host: {HOST}:{origin_port}\r\n\r\n").encode()
    stop = asyncio.Event()
    sampling = asyncio.create_task(sampler.run(stop))
    streamers, futures, events = [], [], []
    started = time.monotonic()
    for _ in range(clients):
        done, seen = loop.create_future(), asyncio.Event()
        _, protocol = await loop.create_connection(
            lambda done=done, seen=seen: _Streamer(request, size, seen, done), HOST, master_port)
        streamers.append(protocol)
        futures.append(done)
        events.append(seen)
    result: dict = {"clients": clients, "body_bytes": size, "stall_s": stall,
                    "idle_rss_mib": round(idle / MIB, 1)}
    try:
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in events)), timeout=30)
        await asyncio.sleep(stall)
        result["rss_after_stall_mib"] = round(sampler.sample() / MIB, 1)
        for protocol in streamers:
            if not protocol.transport.is_closing():
                protocol.transport.resume_reading()
        outcomes = await asyncio.wait_for(asyncio.gather(*futures), timeout=timeout)
    except asyncio.TimeoutError:
        result["error"] = f"not finished within {timeout:g}s (stall?)"
        outcomes = [(p.status, p.received) for p in streamers]
        for protocol in streamers:
            protocol.transport.abort()
    finally:
        stop.set()
        await sampling
    elapsed = time.monotonic() - started
    complete = sum(1 for status, got in outcomes if status == b"200" and got >= size)
    total = sum(got for _, got in outcomes)
    result.update(
        complete=complete,
        seconds=round(elapsed, 1),
        throughput_mib_s=round(total / MIB / elapsed, 1),
        peak_rss_mib=round(sampler.peak / MIB, 1),
        growth_mib=round((sampler.peak - idle) / MIB, 1),
    )
    if complete < clients and "error" not in result:
        result["error"] = f"{clients - complete} of {clients} streams incomplete: " + ", ".join(
            sorted({f"{s.decode(errors='replace')}/{g}" for s, g in outcomes
                    if not (s == b'200' and g >= size)})[:5])
    return result


def stream_big_bodies(*, master_port: int, origin_port: int, pid: int, clients: int = 50,
                      size: int = 100 * MIB, stall: float = 3.0, timeout: float = 150.0) -> dict:
    return asyncio.run(_stream(master_port=master_port, origin_port=origin_port, pid=pid,
                               clients=clients, size=size, stall=stall, timeout=timeout))


class _Idle(asyncio.Protocol):
    def __init__(self) -> None:
        self.lost = False
        self.data = bytearray()
        self.answer: asyncio.Future | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.data += data
        if self.answer is not None and b"\r\n\r\n" in self.data and not self.answer.done():
            self.answer.set_result(bytes(self.data).split(b" ", 2)[1])

    def connection_lost(self, exc) -> None:
        self.lost = True
        if self.answer is not None and not self.answer.done():
            self.answer.set_result(b"lost")


async def _hold(*, master_port: int, origin_port: int, pid: int, count: int, hold: float,
                sample: int, timeout: float) -> dict:
    loop = asyncio.get_running_loop()
    before = rss_bytes(pid)
    protocols: list[_Idle] = []
    errors: dict[str, int] = {}
    gate = asyncio.Semaphore(200)  # Twisted's listen backlog is 50: do not flood the queue.

    async def one() -> None:
        async with gate:
            try:
                _, protocol = await asyncio.wait_for(
                    loop.create_connection(_Idle, HOST, master_port), 10)
                protocols.append(protocol)
            except (OSError, asyncio.TimeoutError) as exc:
                key = type(exc).__name__
                errors[key] = errors.get(key, 0) + 1

    started = time.monotonic()
    try:
        await asyncio.wait_for(asyncio.gather(*(one() for _ in range(count))), timeout=timeout)
    except asyncio.TimeoutError:
        errors["open_timeout"] = 1
    opened_in = time.monotonic() - started
    await asyncio.sleep(hold)
    closed = sum(1 for p in protocols if p.lost)
    held_rss = rss_bytes(pid)
    request = (f"GET http://{HOST}:{origin_port}/1k HTTP/1.1\r\n"
               f"Host: {HOST}:{origin_port}\r\n\r\n").encode()
    probes = [p for p in protocols if not p.lost][:: max(1, len(protocols) // sample)][:sample]
    for protocol in probes:
        protocol.answer = loop.create_future()
        protocol.transport.write(request)
    try:
        answers = await asyncio.wait_for(asyncio.gather(*(p.answer for p in probes)), 30)
    except asyncio.TimeoutError:
        answers = [p.answer.result() if p.answer.done() else b"timeout" for p in probes]
    fresh = _Idle()
    fresh.answer = loop.create_future()
    await loop.create_connection(lambda: fresh, HOST, master_port)
    fresh.transport.write(request)
    try:
        fresh_status = await asyncio.wait_for(fresh.answer, 10)
    except asyncio.TimeoutError:
        fresh_status = b"timeout"
    for protocol in protocols + [fresh]:
        protocol.transport.abort()
    ok = sum(1 for a in answers if a == b"200")
    return {
        "requested": count,
        "opened": len(protocols),
        "open_seconds": round(opened_in, 1),
        "open_errors": errors,
        "closed_by_master_during_hold": closed,
        "hold_s": hold,
        "rss_before_mib": round(before / MIB, 1),
        "rss_held_mib": round(held_rss / MIB, 1),
        "probe_requests": len(probes),
        "probe_200": ok,
        "fresh_connection_status": fresh_status.decode(errors="replace"),
        "ok": (len(protocols) == count and closed == 0 and ok == len(probes)
               and fresh_status == b"200"),
    }


def hold_idle_connections(*, master_port: int, origin_port: int, pid: int, count: int = 10_000,
                          hold: float = 3.0, sample: int = 100, timeout: float = 60.0) -> dict:
    return asyncio.run(_hold(master_port=master_port, origin_port=origin_port, pid=pid,
                             count=count, hold=hold, sample=sample, timeout=timeout))
