"""The leader's side: start the master workers, feed them the pool, fold in their reports.

``MasterWorkers`` spawns ``count`` worker processes (``python -m
scrapoxy_server.cluster.worker``), sends each the ``start`` message, forwards every change of
the routable instances, and turns their reports into calls on the leader's own pool and
stats sink, so the manager and the commander see one server. A worker that dies is started
again after a backoff; ``stop`` closes their stdin (they drain and exit) and kills those still
running after a grace period.
"""
from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from twisted.internet import defer, error as neterror
from twisted.python.failure import Failure

from ..childproc import ReapingProcessProtocol
from ..models import Endpoint
from ..pool import InstancePool
from ..stats import StatsSink
from .channel import ChannelError, FrameDecoder, encode
from .messages import endpoint_to_wire

log = logging.getLogger(__name__)

START_TIMEOUT = 30.0
STOP_GRACE = 8.0
RESTART_BACKOFF_CAP = 30.0


class _WorkerProcess(ReapingProcessProtocol):
    def __init__(self, owner: "MasterWorkers", slot: int) -> None:
        super().__init__(reactor=owner.reactor, watched_fds=(1,))
        self.owner = owner
        self.slot = slot
        self.decoder = FrameDecoder()
        self.listening: defer.Deferred = defer.Deferred()
        self.ended: defer.Deferred = defer.Deferred()
        self.pid: int | None = None
        self.alive = False

    def connectionMade(self) -> None:
        self.alive = True
        self.pid = self.transport.pid
        self.send(self.owner.start_message)
        self.send(self.owner.pool_message())

    def send(self, message: dict[str, Any]) -> None:
        if self.alive:
            self.transport.writeToChild(0, encode(message))

    def childDataReceived(self, fd: int, data: bytes) -> None:
        try:
            messages = self.decoder.feed(data)
        except ChannelError as exc:
            log.error("master worker %s sent garbage (%s); stopping it", self.pid, exc)
            self.transport.signalProcess("KILL")
            return
        for message in messages:
            try:
                self.owner.handle(self, message)
            except Exception:  # noqa: BLE001 - one bad report must not break the leader
                log.exception("handling master worker %s's %r message failed",
                              self.pid, message.get("kind"))

    def processEnded(self, reason: Failure) -> None:
        self.alive = False
        if not self.listening.called:
            self.listening.errback(RuntimeError(
                f"master worker {self.pid} exited before listening ({reason.value})"))
        self.ended.callback(reason.value)
        self.owner.ended(self, reason)


class MasterWorkers:
    """``count`` master worker processes sharing the leader's listening port.

    :param start_message: the ``start`` message for each worker (see ``messages``).
    :param pool: the leader's pool: published changes go to the workers; their activity,
        failures and in-flight counts come back into it.
    :param stats: the leader's stats sink; workers' records are recorded there.
    :param spawn: ``reactor.spawnProcess``-like; injected in tests.
    """

    def __init__(self, *, reactor: Any, count: int, start_message: dict[str, Any],
                 pool: InstancePool, stats: StatsSink, spawn: Any = None,
                 argv: Sequence[str] | None = None) -> None:
        self.reactor = reactor
        self.count = count
        self.start_message = start_message
        self.pool = pool
        self.stats = stats
        self._spawn = spawn if spawn is not None else reactor.spawnProcess
        self._argv = list(argv) if argv is not None else [
            sys.executable, "-m", "scrapoxy_server.cluster.worker"]
        self._workers: dict[int, _WorkerProcess] = {}
        self._restarts: dict[int, int] = {}
        self._endpoints: tuple[Endpoint, ...] = ()
        self._stopping = False
        pool.on_publish(self._published)

    def start(self) -> defer.Deferred:
        """Fires once every worker listens; fails if one cannot start in time."""
        waits = [self._launch(slot) for slot in range(self.count)]
        d = defer.gatherResults(waits, consumeErrors=True)
        d.addTimeout(START_TIMEOUT, self.reactor)
        return d

    def _launch(self, slot: int) -> defer.Deferred:
        worker = _WorkerProcess(self, slot)
        self._workers[slot] = worker
        self._spawn(worker, self._argv[0], self._argv, env=dict(os.environ),
                    childFDs={0: "w", 1: "r", 2: 2})
        return worker.listening

    def reconfigure(self, *, settings: dict[str, Any], auth: dict[str, str] | None) -> None:
        """New master settings and scraper auth (wire form) for every worker, and for those
        started later."""
        self.start_message = {**self.start_message, "settings": settings, "auth": auth}
        message = {"kind": "settings", "settings": settings, "auth": auth}
        for worker in self._workers.values():
            worker.send(message)

    def pids(self) -> list[int]:
        return [w.pid for w in self._workers.values() if w.alive and w.pid is not None]

    def pool_message(self) -> dict[str, Any]:
        return {"kind": "pool", "endpoints": [endpoint_to_wire(e) for e in self._endpoints]}

    def _published(self, endpoints: Sequence[Endpoint]) -> None:
        self._endpoints = tuple(endpoints)
        message = self.pool_message()
        for worker in self._workers.values():
            worker.send(message)

    def handle(self, worker: _WorkerProcess, message: dict[str, Any]) -> None:
        kind = message["kind"]
        if kind == "listening":
            self._restarts.pop(worker.slot, None)
            if not worker.listening.called:
                worker.listening.callback(worker.pid)
            return
        if kind != "report":
            log.warning("unknown message %r from master worker %s", kind, worker.pid)
            return
        record, pool = self.stats.record, self.pool
        for instance, status, error, bytes_in, bytes_out, duration in message["records"]:
            record(instance=instance, status=status, error=error, bytes_in=bytes_in,
                   bytes_out=bytes_out, duration=duration)
            if instance is not None and error is None:
                pool.served(instance)
        if message.get("activity"):
            self.pool.activity()
        for name in message.get("failures", ()):
            self.pool.report_failure(name)
        inflight = message.get("inflight")
        if inflight is not None:
            self.pool.set_remote_inflight(f"worker-{worker.slot}", inflight)

    def ended(self, worker: _WorkerProcess, reason: Failure) -> None:
        if self._workers.get(worker.slot) is worker:
            del self._workers[worker.slot]
        self.pool.set_remote_inflight(f"worker-{worker.slot}", {})
        if self._stopping:
            return
        failures = self._restarts.get(worker.slot, 0) + 1
        self._restarts[worker.slot] = failures
        delay = min(RESTART_BACKOFF_CAP, 2.0 ** (failures - 1))
        log.error("master worker %s exited (%s); starting another in %.0f s",
                  worker.pid, reason.value, delay)
        self.reactor.callLater(delay, self._relaunch, worker.slot)

    def _relaunch(self, slot: int) -> None:
        if self._stopping or slot in self._workers:
            return
        d = self._launch(slot)
        d.addErrback(lambda failure: log.error("master worker did not start: %s",
                                               failure.getErrorMessage()))

    @defer.inlineCallbacks
    def stop(self) -> Any:
        """Close every worker's stdin, wait up to ``STOP_GRACE`` s, kill the rest."""
        self._stopping = True
        workers = [w for w in self._workers.values() if w.alive]
        for worker in workers:
            try:
                worker.transport.closeStdin()
            except Exception:  # noqa: BLE001 - the process may be gone already
                pass
        ends = defer.DeferredList([w.ended for w in workers], consumeErrors=True)
        timer = self.reactor.callLater(STOP_GRACE, self._kill, workers)
        yield ends
        if timer.active():
            timer.cancel()

    @staticmethod
    def _kill(workers: list[_WorkerProcess]) -> None:
        for worker in workers:
            if worker.alive:
                log.warning("master worker %s did not stop in %.0f s: killing it",
                            worker.pid, STOP_GRACE)
                try:
                    worker.transport.signalProcess("KILL")
                except neterror.ProcessExitedAlready:
                    pass
