"""``scrapoxy-server start`` as a user runs it: piped into another program, on a busy port."""
from __future__ import annotations

import select
import signal
import socket
import time

import pytest

from tests.cli.running import (children_of, group_members, running, server_process, wait_for,
                               write_config)
from tests.lab.server import CommanderClient


def read_banner(process, *, timeout: float = 30.0) -> str:
    """stdout up to the banner's last line (``providers: ...``)."""
    deadline = time.monotonic() + timeout
    text = b""
    while b"providers:" not in text:
        left = deadline - time.monotonic()
        if left <= 0 or process.poll() is not None:
            raise AssertionError(f"no banner: {text!r}; stderr: {process.stderr.read()!r}")
        ready, _, _ = select.select([process.stdout], [], [], left)
        if ready:
            chunk = process.stdout.read1(4096)
            if not chunk:
                raise AssertionError(f"stdout closed before the banner: {text!r}")
            text += chunk
    return text.decode()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_exits_on_signal_after_its_stdout_reader_went_away(tmp_path, lab_ca, signum):
    """``scrapoxy-server start | grep x`` then Ctrl-C: the shutdown message cannot be written,
    yet the process exits at once, with every instance process gone."""
    path, config = write_config(tmp_path, lab_ca=lab_ca)
    with server_process(["start", str(path)], cwd=tmp_path) as process:
        read_banner(process)
        api = CommanderClient(f"http://127.0.0.1:{config['commander']['port']}")
        api.wait_alive(2, timeout=30)
        instances = children_of(process.pid)
        assert len(instances) == 2
        process.stdout.close()  # the reader (grep, head, a supervisor) is gone
        process.send_signal(signum)
        try:
            code = process.wait(10)
        except Exception:
            raise AssertionError(f"still running 10 s after {signum.name}; children: "
                                 f"{children_of(process.pid)}") from None
        stderr = process.stderr.read().decode(errors="replace")
        assert code == 0, stderr
        assert "Traceback" not in stderr
        assert wait_for(lambda: not any(running(pid) for pid in instances), timeout=5), \
            f"instance processes outlived the server: {instances}"


def test_shutdown_says_what_it_did_when_stdout_is_read(tmp_path, lab_ca):
    path, config = write_config(tmp_path, lab_ca=lab_ca)
    with server_process(["start", str(path)], cwd=tmp_path) as process:
        read_banner(process)
        CommanderClient(f"http://127.0.0.1:{config['commander']['port']}").wait_alive(2)
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=15)
        assert process.returncode == 0
        assert "terminated 2 instance(s)" in out.decode()


def _busy_port() -> socket.socket:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    return taken


@pytest.mark.parametrize("part", ["master", "commander"])
def test_busy_port_stops_the_start_with_its_name_and_nothing_left_running(tmp_path, lab_ca, part):
    with _busy_port() as taken:
        port = taken.getsockname()[1]
        path, _ = write_config(tmp_path, lab_ca=lab_ca, overrides={part: {"port": port}})
        with server_process(["start", str(path)], cwd=tmp_path) as process:
            try:
                code = process.wait(15)
            except Exception:
                raise AssertionError(f"still running with {part}.port {port} taken") from None
            stderr = process.stderr.read().decode()
            assert code == 1
            assert f"cannot listen on 127.0.0.1:{port} for the {part} ({part}.port)" in stderr
            assert "Address already in use" in stderr
            assert "Traceback" not in stderr
            assert process.stdout.read() == b""  # no banner: it never claimed to run
            assert group_members(process.pid) == []


def test_master_and_commander_on_one_port_stops_the_start(tmp_path, lab_ca):
    path, config = write_config(tmp_path, lab_ca=lab_ca)
    port = config["master"]["port"]
    path, _ = write_config(tmp_path, lab_ca=lab_ca,
                           overrides={"master": {"port": port}, "commander": {"port": port}})
    with server_process(["start", str(path)], cwd=tmp_path) as process:
        code = process.wait(15)
        stderr = process.stderr.read().decode()
        assert code == 1
        assert f"cannot listen on 127.0.0.1:{port} for the commander" in stderr
        assert group_members(process.pid) == []


def test_instances_die_with_a_server_killed_with_sigkill(server_factory):
    """``kill -9`` runs no shutdown: the local instances notice their parent is gone."""
    server = server_factory(instances=2)
    server.api.wait_alive(2)
    instances = children_of(server.process.pid)
    assert len(instances) == 2
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(5)
    assert wait_for(lambda: not any(running(pid) for pid in instances), timeout=5), \
        f"instance processes outlived the killed server: {instances}"


def test_a_ca_file_that_cannot_be_loaded_stops_the_start_naming_the_key(tmp_path, lab_ca):
    path, _ = write_config(tmp_path, lab_ca=lab_ca,
                           overrides={"master": {"ca_file": str(tmp_path / "missing.pem")}})
    with server_process(["start", str(path)], cwd=tmp_path) as process:
        code = process.wait(15)
        stderr = process.stderr.read().decode()
        assert code == 2, stderr
        assert "master.ca_file: cannot load" in stderr and "no such file" in stderr
        assert "Traceback" not in stderr
        assert group_members(process.pid) == []
