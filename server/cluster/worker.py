"""A master worker process: only a master, fed and reported through the leader's channel.

Started by the leader as ``python -m scrapoxy_server.cluster.worker``; it reads the ``start``
message on stdin, listens on the shared port, mirrors the routable instances the leader
sends, and every ``REPORT_INTERVAL`` seconds sends what it served (the per-request records
the leader's stats sink wants), whether any request arrived (to wake the pool), the
instances it could not reach, and its in-flight counts (for draining).

When stdin closes (the leader stops, or died) it stops listening, lets in-flight requests
finish for up to ``DRAIN_SECONDS``, and exits.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
from typing import Any

from twisted.internet import stdio, task
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from ..master.proxy import MasterFactory
from ..master.tls import TlsCreators
from ..pool import InstancePool
from .channel import ChannelError, FrameDecoder, encode
from .listen import listen_shared
from .messages import auth_from_wire, endpoint_from_wire, settings_from_wire

log = logging.getLogger(__name__)

REPORT_INTERVAL = 0.25
DRAIN_SECONDS = 5.0
SWEEP_INTERVAL = 5.0


class ReportingStats:
    """The worker's stats sink: keeps each request's record until the next report."""

    def __init__(self) -> None:
        self.records: list[tuple] = []

    def record(self, *, instance: str | None, status: int, error: str | None,
               bytes_in: int, bytes_out: int, duration: float) -> None:
        self.records.append((instance, status, error, bytes_in, bytes_out, duration))

    def take(self) -> list[tuple]:
        records, self.records = self.records, []
        return records


class Worker:
    """The worker's state; ``send`` writes one message to the leader."""

    def __init__(self, *, reactor: Any, send: Any) -> None:
        self.reactor = reactor
        self.send = send
        self.pool = InstancePool()
        self.stats = ReportingStats()
        self.factory: MasterFactory | None = None
        self.port: Any = None
        self._active = False
        self._failures: list[str] = []
        self._inflight_sent: dict[str, int] = {}
        self._loops: list[task.LoopingCall] = []
        self._stopping = False
        self.pool.on_activity(self._on_activity)
        self.pool.on_failure(self._failures.append)

    def handle(self, message: dict[str, Any]) -> None:
        kind = message["kind"]
        if kind == "start":
            self.start(message)
        elif kind == "pool":
            self.pool.publish([endpoint_from_wire(e) for e in message["endpoints"]])
        elif kind == "settings":
            if self.factory is not None:
                self.factory.reconfigure(settings=settings_from_wire(message["settings"]),
                                         auth=auth_from_wire(message.get("auth")))
        else:
            log.warning("unknown message %r from the leader", kind)

    def start(self, message: dict[str, Any]) -> None:
        logging.getLogger().setLevel(message.get("log_level", "INFO"))
        tls = message["tls"]
        self.factory = MasterFactory(
            reactor=self.reactor, pool=self.pool, stats=self.stats,
            settings=settings_from_wire(message["settings"]),
            auth=auth_from_wire(message.get("auth")),
            tls=TlsCreators(verify=tls["verify"], ca_file=tls["ca_file"]))
        self.port = listen_shared(self.reactor, host=message["host"], port=message["port"],
                                  factory=self.factory, backlog=message["backlog"])
        self._every(REPORT_INTERVAL, self.report)
        self._every(SWEEP_INTERVAL, self.factory.upstreams.sweep)
        self.send({"kind": "listening", "pid": os.getpid()})

    def _every(self, seconds: float, fn: Any) -> None:
        def safe() -> None:
            try:
                fn()
            except Exception:  # noqa: BLE001 - a LoopingCall dies on its first error
                log.exception("worker loop %s failed", getattr(fn, "__name__", fn))

        loop = task.LoopingCall(safe)
        loop.clock = self.reactor
        loop.start(seconds, now=False)
        self._loops.append(loop)

    def _on_activity(self) -> None:
        self._active = True

    def report(self) -> None:
        records = self.stats.take()
        inflight = self.pool.inflight_counts()
        changed = inflight != self._inflight_sent
        if not (records or self._active or self._failures or changed):
            return
        self.send({"kind": "report", "records": records, "activity": self._active,
                   "failures": self._failures, "inflight": inflight if changed else None})
        self._active = False
        self._failures = []
        self._inflight_sent = inflight

    def stop(self) -> None:
        """Stop accepting, drain, exit."""
        if self._stopping:
            return
        self._stopping = True
        if self.port is not None:
            self.port.stopListening()
        waited = [0.0]

        def drained() -> None:
            if self.pool.inflight_counts() and waited[0] < DRAIN_SECONDS:
                waited[0] += 0.1
                self.reactor.callLater(0.1, drained)
                return
            for loop in self._loops:
                if loop.running:
                    loop.stop()
            if self.factory is not None:
                self.factory.upstreams.close_all()
            self.reactor.stop()

        drained()


class LeaderLink(Protocol):
    """stdin/stdout toward the leader."""

    def __init__(self, worker_factory: Any) -> None:
        self._decoder = FrameDecoder()
        self._worker_factory = worker_factory
        self.worker: Worker | None = None

    def connectionMade(self) -> None:
        self.worker = self._worker_factory(self._send)

    def _send(self, message: dict[str, Any]) -> None:
        self.transport.write(encode(message))

    def dataReceived(self, data: bytes) -> None:
        try:
            messages = self._decoder.feed(data)
        except ChannelError as exc:
            log.error("bad message from the leader: %s; stopping", exc)
            self.worker.stop()
            return
        for message in messages:
            try:
                self.worker.handle(message)
            except Exception:  # noqa: BLE001 - a bad message must not kill the worker silently
                log.exception("handling the leader's %r message failed", message.get("kind"))
                if message.get("kind") == "start":
                    self.worker.stop()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        # The leader closed our stdin (it stops) or died: either way, we are done.
        if self.worker is not None:
            self.worker.stop()


def main() -> int:
    logging.basicConfig(level="INFO", stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)s worker {os.getpid()} %(name)s: "
                               "%(message)s")
    from ..reactor import install

    install()
    from twisted.internet import reactor
    from twisted.logger import STDLibLogObserver, globalLogBeginner
    globalLogBeginner.beginLoggingTo([STDLibLogObserver()], redirectStandardIO=False)
    stdio.StandardIO(LeaderLink(lambda send: Worker(reactor=reactor, send=send)),
                     reactor=reactor)
    # Ctrl-C reaches the whole process group: the leader decides when workers stop (it
    # closes their stdin), so that in-flight requests drain. SIGTERM keeps its default.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    reactor.run(installSignalHandlers=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
