"""``scrapoxy-instance`` as a process: the ``listening on`` line, arguments, clean shutdown."""
from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from scrapoxy_server.instance.cli import (
    PASSWORD_ENV, build_parser, listening_line, settings_from_args,
)
from tests.instance.lab import running_origin


@contextmanager
def instance_process(*args: str, env: dict[str, str] | None = None,
                     ) -> Iterator[tuple[subprocess.Popen, str]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "scrapoxy_server.instance", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **(env or {})},
    )
    try:
        line = process.stdout.readline()
        yield process, line
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        process.stdout.close()
        process.stderr.close()


def test_process_prints_its_address_serves_from_the_source_and_stops_on_sigterm():
    with running_origin() as (server, origin_port):
        with instance_process("--port", "0", "--source", "127.0.0.7") as (process, line):
            assert line.startswith("listening on 127.0.0.1:")
            port = int(line.strip().rsplit(":", 1)[1])
            assert port > 0
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", f"http://127.0.0.1:{origin_port}/via-process")
            assert json.loads(conn.getresponse().read())["path"] == "/via-process"
            conn.close()
            assert server.seen[0].client_host == "127.0.0.7"
            process.send_signal(signal.SIGTERM)
            assert process.wait(10) == 0
            assert process.stdout.read() == ""  # the one line only


def test_a_second_sigterm_while_stopping_exits_cleanly_without_a_traceback():
    # The manager terminates an instance, then the provider's shutdown signals it again.
    with instance_process("--port", "0") as (process, line):
        assert line.startswith("listening on")
        process.send_signal(signal.SIGTERM)
        process.send_signal(signal.SIGTERM)
        process.send_signal(signal.SIGINT)
        rc = process.wait(10)
        err = process.stderr.read()
        assert rc == 0, err
        assert "Traceback" not in err


def test_process_takes_its_password_from_the_environment():
    with running_origin() as (server, origin_port):
        with instance_process("--port", "0", "--username", "u",
                              env={PASSWORD_ENV: "secret"}) as (process, line):
            port = int(line.strip().rsplit(":", 1)[1])
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", f"http://127.0.0.1:{origin_port}/")
            assert conn.getresponse().status == 407
            conn.close()
            assert server.seen == []


def test_process_exits_nonzero_when_the_port_is_taken():
    with instance_process("--port", "0") as (first, line):
        port = line.strip().rsplit(":", 1)[1]
        second = subprocess.run([sys.executable, "-m", "scrapoxy_server.instance", "--port", port],
                                capture_output=True, text=True, timeout=30)
    assert second.returncode != 0
    assert second.stdout == ""
    assert "cannot listen" in second.stderr


def _settings(*argv: str, environ: dict[str, str] | None = None):
    return settings_from_args(build_parser().parse_args(list(argv)), environ or {})


def test_defaults_listen_on_loopback_3128_without_auth():
    args = build_parser().parse_args([])
    assert (args.host, args.port, args.source) == ("127.0.0.1", 3128, None)
    settings = _settings()
    assert settings.credentials is None and settings.connect_timeout_s == 10.0


def test_credentials_from_arguments_or_environment():
    assert _settings("--username", "u", "--password", "p").credentials == b"u:p"
    assert _settings("--username", "u", environ={PASSWORD_ENV: "e"}).credentials == b"u:e"
    # An explicit --password wins over the environment.
    assert _settings("--username", "u", "--password", "p",
                     environ={PASSWORD_ENV: "e"}).credentials == b"u:p"


@pytest.mark.parametrize("argv", [
    ("--username", "u"), ("--password", "p"), ("--username", "a:b", "--password", "p"),
    ("--port", "70000"), ("--connect-timeout", "0"),
])
def test_inconsistent_arguments_are_refused(argv):
    with pytest.raises(ValueError):
        _settings(*argv)


def test_settings_repr_hides_the_password():
    assert "secret" not in repr(_settings("--username", "u", "--password", "secret"))
    assert isinstance(build_parser(), argparse.ArgumentParser)


def test_listening_line_brackets_ipv6_hosts():
    assert listening_line("127.0.0.1", 3128) == "listening on 127.0.0.1:3128"
    assert listening_line("::1", 3128) == "listening on [::1]:3128"
