"""The ``local`` provider: ``scrapoxy-instance`` child processes on loopback.

Each instance is a process started with ``--host 127.0.0.1 --port 0 --source 127.0.0.N``: it
listens on a free port and egresses from its own source address, so an origin on loopback sees
distinct client IPs, as it would with cloud VMs. The process prints
``listening on HOST:PORT`` once it is ready; until then the instance is ``starting`` with no
address. A process that exits disappears from the list, and the manager replaces it. Each child
gets ``SCRAPOXY_PARENT_PID`` and stops when this server is gone, even after a ``kill -9``.

Source octets are handed out from ``first_source_octet`` upwards with a moving cursor that
wraps before 255, skipping octets in use, so a replacement gets a *new* address (rotation
means a new IP), and only reuses one once the range is exhausted.
"""
from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from twisted.internet import defer, error
from twisted.python.failure import Failure

from ..config import LocalProviderConfig
from ..models import Address, ProviderInstance, Status
from ..childproc import ReapingProcessProtocol
from ..instance.parent import PARENT_PID_ENV
from .base import ProviderError

log = logging.getLogger(__name__)

LISTENING_PREFIX = "listening on "
# Seconds between SIGTERM and SIGKILL for a process that does not exit.
KILL_AFTER = 5.0
# A child that writes this much without a newline is not speaking the protocol; drop the excess.
MAX_LINE = 65536
LAST_OCTET = 254


class _InstanceProcess(ReapingProcessProtocol):
    """One child process: reads its announcement, relays its stderr to the log."""

    def __init__(self, *, provider: "LocalProvider", name: str, octet: int) -> None:
        super().__init__(reactor=provider._reactor, watched_fds=(1, 2))
        self.provider = provider
        self.name = name
        self.octet = octet
        self.status = Status.STARTING
        self.address: Address | None = None
        self.terminating = False
        self.kill_timer: Any = None
        self.ended: defer.Deferred = defer.Deferred()
        self._stdout = b""
        self._stderr = b""

    @property
    def source(self) -> str:
        return f"127.0.0.{self.octet}"

    def snapshot(self) -> ProviderInstance:
        return ProviderInstance(id=self.name, provider=self.provider.name, status=self.status,
                                address=self.address)

    def connectionMade(self) -> None:
        self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        self._stdout = self._lines(self._stdout + data, self._stdout_line)

    def errReceived(self, data: bytes) -> None:
        self._stderr = self._lines(self._stderr + data, self._stderr_line)

    def _lines(self, buffer: bytes, handle: Any) -> bytes:
        *lines, rest = buffer.split(b"\n")
        for line in lines:
            handle(line.decode("utf-8", "replace").rstrip("\r"))
        return rest[-MAX_LINE:]

    def _stdout_line(self, line: str) -> None:
        if self.address is None and line.startswith(LISTENING_PREFIX):
            address = parse_listening(line)
            if address is not None:
                self.address = address
                if not self.terminating:
                    self.status = Status.STARTED
                log.info("instance %s listening on %s:%d (source %s)",
                         self.name, address.hostname, address.port, self.source)
                return
        if line:
            log.info("%s: %s", self.name, line)

    def _stderr_line(self, line: str) -> None:
        if line:
            log.info("%s: %s", self.name, line)

    def processEnded(self, reason: Failure) -> None:
        for buffered, handle in ((self._stdout, self._stdout_line),
                                 (self._stderr, self._stderr_line)):
            if buffered:
                handle(buffered.decode("utf-8", "replace"))
        self._stdout = self._stderr = b""
        if self.kill_timer is not None and self.kill_timer.active():
            self.kill_timer.cancel()
        self.provider._ended(self, reason)
        self.ended.callback(None)

    def terminate(self, *, kill_after: float) -> None:
        """SIGTERM now, SIGKILL after ``kill_after`` seconds if still running."""
        self.terminating = True
        self.status = Status.STOPPING
        self._signal("TERM")
        if self.kill_timer is None:
            self.kill_timer = self.provider._reactor.callLater(kill_after, self._signal, "KILL")

    def _signal(self, name: str) -> None:
        try:
            self.transport.signalProcess(name)
        except error.ProcessExitedAlready:
            pass


def parse_listening(line: str) -> Address | None:
    """``listening on 127.0.0.1:PORT`` (or ``[::1]:PORT``) -> Address; None if malformed."""
    rest = line[len(LISTENING_PREFIX):].strip()
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return None
    number = int(port)
    if not 0 < number <= 65535:
        return None
    return Address(host.strip("[]"), number)


class LocalProvider:
    """Runs instances as child processes of this server.

    :param reactor: spawns the processes and times the SIGKILL fallback.
    :param config: the provider's config (``name``, ``first_source_octet``, ``command``).
    :param name_prefix: instance names are ``{name_prefix}-{n}``; default: the provider name.
    :param kill_after: seconds between SIGTERM and SIGKILL.
    """

    creates_instances = True

    def __init__(self, *, reactor: Any, config: LocalProviderConfig,
                 name_prefix: str | None = None, kill_after: float = KILL_AFTER) -> None:
        self.name = config.name
        self._reactor = reactor
        self._config = config
        self._prefix = name_prefix if name_prefix is not None else config.name
        self._kill_after = kill_after
        self._processes: dict[str, _InstanceProcess] = {}
        self._counter = 0
        self._next_octet = config.first_source_octet
        self._closed = False

    def list_instances(self) -> defer.Deferred:
        return defer.succeed([p.snapshot() for p in self._processes.values()])

    def create_instances(self, count: int) -> defer.Deferred:
        if self._closed:
            return defer.fail(ProviderError("provider is shut down", retryable=False))
        for _ in range(count):
            try:
                self._spawn()
            except OSError as exc:
                return defer.fail(ProviderError(f"cannot start an instance process: {exc}"))
        return defer.succeed(None)

    def terminate_instances(self, ids: Sequence[str]) -> defer.Deferred:
        for name in ids:
            process = self._processes.get(name)
            # Already gone is what was wanted: not an error.
            if process is not None:
                process.terminate(kill_after=self._kill_after)
        return defer.succeed(None)

    def shutdown(self) -> defer.Deferred:
        """Stop every process left (children cannot outlive the server usefully)."""
        self._closed = True
        processes = list(self._processes.values())
        for process in processes:
            process.terminate(kill_after=self._kill_after)
        d = defer.DeferredList([p.ended for p in processes])
        d.addCallback(lambda _: None)
        return d

    def command(self, source: str) -> list[str]:
        """The argv that starts one instance egressing from ``source``."""
        if self._config.command is not None:
            base = list(self._config.command)
        else:
            base = [sys.executable, "-m", "scrapoxy_server.instance"]
        return base + ["--host", "127.0.0.1", "--port", "0", "--source", source]

    def _spawn(self) -> None:
        self._counter += 1
        name = f"{self._prefix}-{self._counter}"
        process = _InstanceProcess(provider=self, name=name, octet=self._take_octet())
        argv = self.command(process.source)
        env = dict(os.environ)
        # The announcement line must not sit in a pipe buffer.
        env.setdefault("PYTHONUNBUFFERED", "1")
        # The instance stops when this process is gone, even after a kill -9 (no shutdown).
        env[PARENT_PID_ENV] = str(os.getpid())
        self._reactor.spawnProcess(process, argv[0], argv, env=env)
        self._processes[name] = process
        log.info("instance %s starting (source %s)", name, process.source)

    def _take_octet(self) -> int:
        first = self._config.first_source_octet
        in_use = {p.octet for p in self._processes.values()}
        span = LAST_OCTET - first + 1
        chosen = self._next_octet
        for step in range(span):
            candidate = first + (self._next_octet - first + step) % span
            if candidate not in in_use:
                chosen = candidate
                break
        self._next_octet = first + (chosen - first + 1) % span
        return chosen

    def _ended(self, process: _InstanceProcess, reason: Failure) -> None:
        self._processes.pop(process.name, None)
        code = getattr(reason.value, "exitCode", None)
        sig = getattr(reason.value, "signal", None)
        how = f"signal {sig}" if sig is not None else f"exit code {code}"
        if process.terminating:
            log.info("instance %s stopped (%s)", process.name, how)
        else:
            log.warning("instance %s exited unexpectedly (%s)", process.name, how)
