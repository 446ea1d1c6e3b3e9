"""Command line of ``scrapoxy-instance``.

Process protocol (the ``local`` provider depends on it): after binding, exactly one line
``listening on HOST:PORT`` goes to stdout (the actual port when ``--port 0``) and is flushed;
everything else is logged to stderr. SIGTERM and SIGINT stop the process cleanly (exit 0).
HOST is printed as given to ``--host``, in brackets when it is IPv6 (``listening on [::1]:PORT``).
With ``SCRAPOXY_PARENT_PID`` set (the local provider sets it), the process also stops when that
parent process is gone (``parent``), so a server killed with ``kill -9`` leaves no instance.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from twisted.logger import FilteringLogObserver, LogLevel, LogLevelFilterPredicate
from twisted.logger import globalLogBeginner, textFileLogObserver

from scrapoxy_server.instance.parent import (parent_pid_from, request_death_signal,
                                             watch_parent)
from scrapoxy_server.instance.proxy import InstanceSettings, listen

PASSWORD_ENV = "SCRAPOXY_INSTANCE_PASSWORD"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scrapoxy-instance",
        description="Small forward proxy (CONNECT + absolute-form HTTP) for Scrapoxy.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=3128, help="listen port; 0 = any free port")
    parser.add_argument("--source", default=None,
                        help="source address of outgoing connections, e.g. 127.0.0.5")
    parser.add_argument("--username", default=None, help="require this proxy username")
    parser.add_argument("--password", default=None,
                        help=f"require this proxy password (or set {PASSWORD_ENV})")
    parser.add_argument("--connect-timeout", type=float, default=10.0,
                        help="seconds to wait for a target connection (default 10)")
    parser.add_argument("--verbose", action="store_true", help="log per-connection failures")
    return parser


def settings_from_args(args: argparse.Namespace, environ: dict[str, str]) -> InstanceSettings:
    """Validate arguments into settings; raises ``ValueError`` with a message for the user."""
    password = args.password if args.password is not None else environ.get(PASSWORD_ENV)
    if (args.username is None) != (password is None):
        raise ValueError(f"--username and --password (or {PASSWORD_ENV}) go together")
    if not 0 <= args.port < 65536:
        raise ValueError("--port must be between 0 and 65535")
    if args.connect_timeout <= 0:
        raise ValueError("--connect-timeout must be positive")
    credentials = None
    if args.username is not None:
        if ":" in args.username:
            raise ValueError("--username cannot contain ':'")
        credentials = f"{args.username}:{password}".encode()
    return InstanceSettings(source=args.source, credentials=credentials,
                            connect_timeout_s=args.connect_timeout)


def listening_line(host: str, port: int) -> str:
    """The one stdout line announcing the bound address; IPv6 hosts are bracketed."""
    shown = f"[{host}]" if ":" in host else host
    return f"listening on {shown}:{port}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(args, dict(os.environ))
        parent_pid = parent_pid_from(dict(os.environ))
    except ValueError as exc:
        parser.error(str(exc))
    if parent_pid is not None:
        # Before anything else: a parent killed from now on takes this process with it.
        request_death_signal()

    from ..reactor import install

    install()
    from twisted.internet import reactor

    level = LogLevel.debug if args.verbose else LogLevel.warn
    observer = FilteringLogObserver(textFileLogObserver(sys.stderr),
                                    [LogLevelFilterPredicate(defaultLogLevel=level)])
    # stdout carries the one "listening on" line only: never let Twisted redirect it.
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    try:
        port = listen(reactor, host=args.host, port=args.port, settings=settings)
    except Exception as exc:  # noqa: BLE001 - any bind failure is reported, not traced
        print(f"scrapoxy-instance: cannot listen on {args.host}:{args.port}: {exc}",
              file=sys.stderr)
        return 1
    # Handlers before the announcement: the provider may SIGTERM the instance as soon as it
    # reads the line, and the default disposition would kill it (exit -15, no clean stop).
    stop = _stop_on_signals(reactor)
    print(listening_line(args.host, port.getHost().port), flush=True)
    if parent_pid is not None:
        watch_parent(clock=reactor, parent_pid=parent_pid, stop=stop)
    reactor.run(installSignalHandlers=False)
    return 0


def _stop_on_signals(reactor: Any) -> Callable[[], None]:
    """SIGINT/SIGTERM stop the reactor once. A second signal (the manager's terminate, then
    the provider's shutdown; or Ctrl-C reaching the whole process group) is a no-op instead
    of Twisted's ``ReactorNotRunning`` traceback. Returns that stop-once function (to be
    called on the reactor thread) for other reasons to stop."""
    stopping = []

    def stop() -> None:
        if not stopping:
            stopping.append(True)
            reactor.stop()

    def handler(signum: int, frame: Any) -> None:
        # Later signals stay blocked (pending, dropped at exit): the interpreter puts back
        # SIG_DFL while it exits, and one landing then would kill the process with -15. Not
        # SIG_IGN: a signal already caught would then raise "ignored due to race condition".
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        reactor.callFromThread(stop)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


if __name__ == "__main__":
    raise SystemExit(main())
