"""Pytest fixtures of the lab.

``tests/conftest.py`` makes them available to every test. Session-scoped (one per run, shared; use ``origin.mark()``/``origin.since(mark)`` to look only
at a test's own requests): ``lab_ca``, ``lab_cert``, ``origin``, ``tls_origin``, ``origin6``,
``tinyproxy_instance``, ``squid_instance``. Function-scoped: ``stock_proxies`` (a factory that
starts more tinyproxy/squid instances and stops them after the test) and ``server_factory``
(starts ``scrapoxy-server`` subprocesses; stopped after the test).

The ``pytest_runtest_makereport`` hook appends the output of every lab process a failing test
used (server, stock proxies) to its report, so a red test shows what the server logged.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.lab.instances import ProxyStartError, StockProxy, start_squid, start_tinyproxy
from tests.lab.origin import Origin
from tests.lab.server import ScrapoxyServer, start_server
from tests.lab.tls import LabCA, ServerCert
from tests.support import skip_or_fail

__all__ = [
    "lab_ca", "lab_cert", "origin", "tls_origin", "origin6", "tinyproxy_instance",
    "squid_instance", "stock_proxies", "server_factory", "pytest_runtest_makereport",
]

# Egress addresses of the session's stock proxies; the local provider starts at 127.0.0.2 and
# counts up, so these stay clear of it.
TINYPROXY_SOURCE = "127.0.0.201"
SQUID_SOURCE = "127.0.0.202"


@pytest.fixture(scope="session")
def lab_ca(tmp_path_factory: pytest.TempPathFactory) -> LabCA:
    """The lab CA; ``lab_ca.ca_file`` is the PEM the master gets as ``master.ca_file``."""
    return LabCA(tmp_path_factory.mktemp("lab-ca"))


@pytest.fixture(scope="session")
def lab_cert(lab_ca: LabCA) -> ServerCert:
    """A server certificate for 127.0.0.1, ::1 and localhost, signed by ``lab_ca``."""
    return lab_ca.issue("origin")


@pytest.fixture(scope="session")
def origin() -> Iterator[Origin]:
    """ORIGIN over HTTP on 127.0.0.1."""
    server = Origin(host="127.0.0.1")
    yield server
    server.close()


@pytest.fixture(scope="session")
def tls_origin(lab_cert: ServerCert) -> Iterator[Origin]:
    """ORIGIN over HTTPS on 127.0.0.1, with a certificate from ``lab_ca``."""
    server = Origin(host="127.0.0.1", cert=lab_cert)
    yield server
    server.close()


@pytest.fixture(scope="session")
def origin6() -> Iterator[Origin]:
    """ORIGIN over HTTP on [::1]."""
    server = Origin(host="::1")
    yield server
    server.close()


def _start_or_skip(start: Callable[..., StockProxy], **kwargs: Any) -> StockProxy:
    try:
        return start(**kwargs)
    except ProxyStartError as exc:
        if "not installed" in str(exc):
            skip_or_fail(str(exc))
        raise


@pytest.fixture(scope="session")
def tinyproxy_instance() -> Iterator[StockProxy]:
    """Stock tinyproxy on a free loopback port, egressing from 127.0.0.201."""
    proxy = _start_or_skip(start_tinyproxy, source=TINYPROXY_SOURCE)
    yield proxy
    proxy.stop()


@pytest.fixture(scope="session")
def squid_instance() -> Iterator[StockProxy]:
    """Stock squid on a free loopback port, egressing from 127.0.0.202."""
    proxy = _start_or_skip(start_squid, source=SQUID_SOURCE)
    yield proxy
    proxy.stop()


@pytest.fixture
def stock_proxies(request: pytest.FixtureRequest) -> Iterator[Callable[..., StockProxy]]:
    """``stock_proxies("tinyproxy" | "squid", source="127.0.0.N", **options)`` -> StockProxy."""
    started: list[StockProxy] = []
    request.node.lab_processes = started

    def start(kind: str, *, source: str, **options: Any) -> StockProxy:
        starter = {"tinyproxy": start_tinyproxy, "squid": start_squid}[kind]
        proxy = _start_or_skip(starter, source=source, **options)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


@pytest.fixture
def server_factory(request: pytest.FixtureRequest, tmp_path: Path,
                   lab_ca: LabCA) -> Iterator[Callable[..., ScrapoxyServer]]:
    """``server_factory(overrides={...}, instances=3)`` -> a running ScrapoxyServer."""
    started: list[ScrapoxyServer] = []
    request.node.lab_servers = started

    def start(**options: Any) -> ScrapoxyServer:
        workdir = tmp_path / f"server-{len(started)}"
        server = start_server(workdir, ca_file=lab_ca.ca_file, **options)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    report = yield
    if report.failed:
        for server in _lab_servers(item):
            report.sections.append(
                (f"scrapoxy-server output ({server.workdir})", _tail(server.output()))
            )
        for proxy in getattr(item, "lab_processes", []):
            report.sections.append((f"{proxy.kind} output ({proxy.url})", _tail(proxy.output())))
    return report


def _lab_servers(item: pytest.Item) -> list[ScrapoxyServer]:
    servers = list(getattr(item, "lab_servers", []))
    funcargs = getattr(item, "funcargs", {}) or {}
    for value in funcargs.values():
        if isinstance(value, ScrapoxyServer) and value not in servers:
            servers.append(value)
    return servers


def _tail(text: str, limit: int = 20000) -> str:
    return text if len(text) <= limit else "...\n" + text[-limit:]
