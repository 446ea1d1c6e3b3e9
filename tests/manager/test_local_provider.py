"""The local provider: real child processes (a stub speaking the instance protocol, and the
real ``scrapoxy-instance`` when it is installed), plus source-address allocation in isolation."""
from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path

import pytest
from twisted.internet import task

from scrapoxy_server.config import LocalProviderConfig
from scrapoxy_server.models import Address, Status
from scrapoxy_server.providers.local import LocalProvider, parse_listening
from tests.support import wait_until

STUB = str(Path(__file__).with_name("stub_instance.py"))


def listed(reactor_thread, provider):
    return reactor_thread.call(provider.list_instances)


def start_provider(reactor_thread, config):
    return LocalProvider(reactor=reactor_thread.reactor, config=config, kill_after=2.0)


def exercise(reactor_thread, provider):
    reactor_thread.call(provider.create_instances, 2)
    started = wait_until(
        lambda: [i for i in listed(reactor_thread, provider) if i.status is Status.STARTED]
        if len([i for i in listed(reactor_thread, provider) if i.status is Status.STARTED]) == 2
        else None,
        timeout=20, message="two STARTED instances")
    assert len({i.address for i in started}) == 2
    assert all(i.address.hostname == "127.0.0.1" and i.address.port > 0 for i in started)
    victim = started[0].id
    reactor_thread.call(provider.terminate_instances, [victim])
    wait_until(lambda: victim not in [i.id for i in listed(reactor_thread, provider)],
               timeout=10, message=f"{victim} to disappear")
    assert [i.id for i in listed(reactor_thread, provider)] == [started[1].id]
    return started


def test_instances_start_with_distinct_addresses_and_a_terminated_one_disappears(reactor_thread):
    provider = start_provider(reactor_thread, LocalProviderConfig(
        name="loc", command=(sys.executable, STUB)))
    try:
        started = exercise(reactor_thread, provider)
        assert {i.id for i in started} == {"loc-1", "loc-2"}
    finally:
        reactor_thread.call(provider.shutdown)
    assert listed(reactor_thread, provider) == []


@pytest.mark.skipif(importlib.util.find_spec("scrapoxy_server.instance.__main__") is None,
                    reason="scrapoxy_server.instance is not written yet")
def test_real_scrapoxy_instance_processes(reactor_thread):
    provider = start_provider(reactor_thread, LocalProviderConfig(name="real"))
    try:
        exercise(reactor_thread, provider)
    finally:
        reactor_thread.call(provider.shutdown)


def test_a_crashing_instance_disappears_and_its_stderr_is_logged(reactor_thread, caplog):
    caplog.set_level(logging.INFO, logger="scrapoxy_server.providers.local")
    provider = start_provider(reactor_thread, LocalProviderConfig(
        name="bad", command=(sys.executable, STUB, "--fail-with", "no such port")))
    reactor_thread.call(provider.create_instances, 1)
    wait_until(lambda: listed(reactor_thread, provider) == [], timeout=10,
               message="the crashed instance to disappear")
    wait_until(lambda: "exited unexpectedly" in caplog.text, timeout=5, message="exit log")
    assert "bad-1: no such port" in caplog.text
    reactor_thread.call(provider.shutdown)


def test_missing_command_is_a_provider_error_or_an_exit(reactor_thread):
    provider = start_provider(reactor_thread, LocalProviderConfig(
        name="gone", command=("/nonexistent/scrapoxy-instance",)))
    try:
        reactor_thread.call(provider.create_instances, 1)
    except Exception as exc:  # spawn refused up front
        assert "instance" in str(exc)
    wait_until(lambda: listed(reactor_thread, provider) == [], timeout=10,
               message="the failed instance to disappear")
    reactor_thread.call(provider.shutdown)


class SpawnRecorder(task.Clock):
    """A clock that records spawnProcess calls instead of running anything."""

    def __init__(self):
        super().__init__()
        self.spawned = []

    def spawnProcess(self, process, executable, args, env=None, **kwargs):
        self.spawned.append(args)
        process.transport = None


def sources(reactor):
    return [args[args.index("--source") + 1] for args in reactor.spawned]


def test_source_addresses_rotate_skip_in_use_and_wrap_before_255():
    reactor = SpawnRecorder()
    provider = LocalProvider(reactor=reactor, config=LocalProviderConfig(first_source_octet=250))
    provider.create_instances(3)
    assert sources(reactor) == ["127.0.0.250", "127.0.0.251", "127.0.0.252"]
    # 251 exits; the cursor moves on rather than reusing it at once
    provider._processes.pop("local-2")
    provider.create_instances(4)
    # 253, 254, then wrap: 250 is in use, 251 is free; then all in use: reuse the next one.
    assert sources(reactor)[3:] == ["127.0.0.253", "127.0.0.254", "127.0.0.251", "127.0.0.252"]
    assert all(int(s.rsplit(".", 1)[1]) <= 254 for s in sources(reactor))
    assert reactor.spawned[0][:3] == [sys.executable, "-m", "scrapoxy_server.instance"]
    assert reactor.spawned[0][3:7] == ["--host", "127.0.0.1", "--port", "0"]


def test_names_count_up_with_the_prefix():
    reactor = SpawnRecorder()
    provider = LocalProvider(reactor=reactor, config=LocalProviderConfig(name="loc"),
                             name_prefix="px")
    provider.create_instances(2)
    result = []
    provider.list_instances().addCallback(result.append)
    assert [(i.id, i.provider, i.status, i.address) for i in result[0]] == [
        ("px-1", "loc", Status.STARTING, None), ("px-2", "loc", Status.STARTING, None)]


@pytest.mark.parametrize("line,expected", [
    ("listening on 127.0.0.1:3128", Address("127.0.0.1", 3128)),
    ("listening on [::1]:80", Address("::1", 80)),
    ("listening on 127.0.0.1:", None),
    ("listening on 127.0.0.1:99999", None),
    ("listening on nowhere", None),
])
def test_parse_listening(line, expected):
    assert parse_listening(line) == expected
