"""Fixtures for the master's loopback tests: a master in-process, in front of real instances."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import logging

import pytest
from twisted.logger import formatEvent, globalLogPublisher

from scrapoxy_server.instance.proxy import InstanceSettings, listen
from scrapoxy_server.master.auth import ScraperAuth
from scrapoxy_server.master.proxy import MasterFactory, MasterSettings
from scrapoxy_server.master.tls import TlsCreators
from scrapoxy_server.models import Address, Endpoint
from scrapoxy_server.pool import InstancePool
from scrapoxy_server.stats import Stats
from tests.lab.instances import ProxyStartError, start_squid, start_tinyproxy
from tests.support import skip_or_fail

INSTANCE_SOURCES = ("127.0.0.11", "127.0.0.12", "127.0.0.13")


@dataclass
class Master:
    port: int
    pool: InstancePool
    stats: Stats
    instances: dict[str, Endpoint]
    sources: dict[str, str]
    factory: Any = None
    kind: str = "scrapoxy"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def proxies(self) -> dict[str, str]:
        return {"http": self.url, "https": self.url}


@pytest.fixture(scope="session")
def instance_endpoints(reactor_thread: Any) -> Iterator[tuple[list[Endpoint], dict[str, str]]]:
    """Three in-process scrapoxy-instances p1..p3 with distinct egress addresses."""
    ports = []
    endpoints = []
    sources = {}
    for i, source in enumerate(INSTANCE_SOURCES, start=1):
        port = reactor_thread.call(listen, reactor_thread.reactor, host="127.0.0.1", port=0,
                                   settings=InstanceSettings(source=source))
        ports.append(port)
        name = f"p{i}"
        endpoints.append(Endpoint(name, Address("127.0.0.1", port.getHost().port)))
        sources[name] = source
    yield endpoints, sources
    for port in ports:
        reactor_thread.call(port.stopListening)


STOCK_SOURCES = {"tinyproxy": ("127.0.0.21", "127.0.0.22", "127.0.0.23"),
                 "squid": ("127.0.0.31", "127.0.0.32", "127.0.0.33")}
INSTANCE_KINDS = ("scrapoxy", "tinyproxy", "squid")


@pytest.fixture(scope="session")
def stock_endpoints() -> Iterator[Callable[[str], tuple[list[Endpoint], dict[str, str]]]]:
    """Three stock tinyproxy or squid processes as instances p1..p3, started once per kind."""
    started: dict[str, tuple[list[Endpoint], dict[str, str]]] = {}
    processes = []

    def get(kind: str) -> tuple[list[Endpoint], dict[str, str]]:
        if kind not in started:
            starter = {"tinyproxy": start_tinyproxy, "squid": start_squid}[kind]
            endpoints, sources = [], {}
            for i, source in enumerate(STOCK_SOURCES[kind], start=1):
                try:
                    proxy = starter(source=source)
                except ProxyStartError as exc:
                    if "not installed" in str(exc):
                        skip_or_fail(str(exc))
                    raise
                processes.append(proxy)
                endpoints.append(Endpoint(f"p{i}", Address(proxy.host, proxy.port)))
                sources[f"p{i}"] = source
            started[kind] = (endpoints, sources)
        return started[kind]

    yield get
    for proxy in processes:
        proxy.stop()


@pytest.fixture(params=INSTANCE_KINDS)
def make_kind_master(request: pytest.FixtureRequest, start_master: Callable[..., "Master"],
                     instance_endpoints: Any, stock_endpoints: Any) -> Callable[..., "Master"]:
    """Masters in front of three instances of one kind: scrapoxy-instance, tinyproxy, squid."""
    kind = request.param
    endpoints, sources = instance_endpoints if kind == "scrapoxy" else stock_endpoints(kind)

    def make(**options: Any) -> "Master":
        master = start_master(endpoints=endpoints, **options)
        master.sources = sources
        master.kind = kind
        return master

    return make


@pytest.fixture
def kind_master(make_kind_master: Callable[..., "Master"]) -> "Master":
    return make_kind_master()


@pytest.fixture
def start_master(reactor_thread: Any, instance_endpoints: Any,
                 lab_ca: Any) -> Iterator[Callable[..., Master]]:
    listening = []

    def start(*, endpoints: list[Endpoint] | None = None, wait_for_instance: float = 0.0,
              idle_timeout: float = 5.0, connect_timeout: float = 3.0,
              auth: tuple[str, str] | None = None, deny: tuple[str, ...] = (),
              allow: tuple[str, ...] = (), access_log: bool = False,
              trust_lab_ca: bool = True, tls_verify: bool = True) -> Master:
        base, sources = instance_endpoints
        pool = InstancePool()
        stats = Stats()
        chosen = base if endpoints is None else endpoints
        reactor_thread.call(pool.publish, chosen)
        factory = MasterFactory(
            reactor=reactor_thread.reactor, pool=pool, stats=stats,
            settings=MasterSettings(connect_timeout=connect_timeout, idle_timeout=idle_timeout,
                                    wait_for_instance=wait_for_instance, deny=deny,
                                    allow=allow, access_log=access_log),
            auth=ScraperAuth(username=auth[0], password=auth[1]) if auth else None,
            tls=TlsCreators(verify=tls_verify,
                            ca_file=str(lab_ca.ca_file) if trust_lab_ca else None))
        port = reactor_thread.call(reactor_thread.reactor.listenTCP, 0, factory,
                                   interface="127.0.0.1")
        listening.append(port)
        return Master(port=port.getHost().port, pool=pool, stats=stats,
                      instances={e.name: e for e in chosen}, sources=sources, factory=factory)

    yield start
    for port in listening:
        reactor_thread.call(port.stopListening)


@pytest.fixture
def master(start_master: Callable[..., Master]) -> Master:
    return start_master()


@pytest.fixture(autouse=True)
def no_errors_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Whatever a test throws at the master, nothing may end as a traceback or an error in
    the log: every failure must become an answer (H03, H06, H07)."""
    failures: list[dict] = []

    def observe(event: dict) -> None:
        if event.get("log_failure") is not None or event.get("isError"):
            failures.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        yield
    finally:
        globalLogPublisher.removeObserver(observe)
    errors = [r.getMessage() for r in caplog.get_records("call") if r.levelno >= logging.ERROR]
    assert not failures, [formatEvent(e) for e in failures[:3]]
    assert not errors, errors[:3]
