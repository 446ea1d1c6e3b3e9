"""End to end, as a user runs it: ``scrapoxy-server start`` with a config file, 3 local instances,
plain clients and the example Scrapy project going through the master, the commander's API.

One server runs for the whole module (starting it costs seconds); the test that stops an
instance comes last because it changes the pool.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
import requests

from tests.lab.origin import SITE_PAGES
from tests.lab.server import REPO_ROOT, ScrapoxyServer, start_server

EXAMPLE_PROJECT = REPO_ROOT / "example_project"
PROXY_ENV = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY",
             "no_proxy", "NO_PROXY")
POOL = 3


@pytest.fixture(scope="module")
def scrapoxy(tmp_path_factory: pytest.TempPathFactory, lab_ca) -> Iterator[ScrapoxyServer]:
    server = start_server(tmp_path_factory.mktemp("e2e-server"), ca_file=lab_ca.ca_file,
                          instances=POOL)
    try:
        try:
            server.api.wait_alive(POOL, timeout=45)
        except AssertionError as exc:
            # A setup error has no test report to carry the server's output: attach it here.
            raise AssertionError(f"{exc}\n--- scrapoxy-server output\n{server.output()[-20000:]}")
        yield server
    finally:
        server.stop()


def master_session(server: ScrapoxyServer) -> requests.Session:
    """A client that goes through the master and ignores proxy settings of the environment."""
    session = requests.Session()
    session.trust_env = False
    session.proxies = server.proxies()
    return session


def alive_names(server: ScrapoxyServer) -> set[str]:
    return {instance["name"] for instance in server.api.alive()}


def test_get_through_master_answers_200_and_names_the_instance(scrapoxy, origin):
    mark = origin.mark()
    with master_session(scrapoxy) as session:
        response = session.get(origin.url + "/headers", timeout=15)
    assert response.status_code == 200, response.text
    name = response.headers.get("x-cache-proxyname")
    assert name in alive_names(scrapoxy)
    [seen] = origin.since(mark)
    assert seen.target == b"/headers"
    assert not seen.header_names() & {"x-cache-proxyname", "proxy-connection", "via",
                                      "x-forwarded-for", "forwarded"}


def test_requests_on_one_keepalive_connection_rotate_over_the_pool(scrapoxy, origin):
    mark = origin.mark()
    with master_session(scrapoxy) as session:
        names = [session.get(origin.url + "/ip", timeout=15).headers.get("x-cache-proxyname")
                 for _ in range(30)]
    assert len(set(names)) == POOL, names
    assert len(origin.clients(since=mark)) == POOL


def test_https_connect_through_master_reaches_tls_origin(scrapoxy, tls_origin, lab_ca):
    mark = tls_origin.mark()
    with master_session(scrapoxy) as session:
        response = session.get(tls_origin.url + "/headers", verify=str(lab_ca.ca_file), timeout=15)
    assert response.status_code == 200
    assert tls_origin.clients(since=mark) <= {i["fingerprint"] for i in scrapoxy.api.alive()}


def test_example_spider_crawls_the_tls_site_through_the_pool(scrapoxy, tls_origin, tmp_path):
    out = tmp_path / "items.json"
    mark = tls_origin.mark()
    env = {key: value for key, value in os.environ.items() if key not in PROXY_ENV}
    env["SCRAPOXY_MASTER"] = scrapoxy.master_url
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "scrapy", "crawl", "site",
               "-a", f"url={tls_origin.url}/site/", "-a", "max_pages=20", "-O", str(out)]
    result = subprocess.run(command, cwd=EXAMPLE_PROJECT, env=env, capture_output=True,
                            text=True, timeout=180)
    log = f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    assert result.returncode == 0, log
    items = json.loads(out.read_text())

    assert items, log
    assert all(item["status"] == 200 for item in items), items
    assert all(item["url"].startswith("https://") for item in items), items
    expected = {tls_origin.url + path for path in SITE_PAGES}
    assert {item["url"] for item in items} == expected
    titles = {item["url"]: item["title"] for item in items}
    assert titles == {tls_origin.url + path: title for path, title in SITE_PAGES.items()}
    assert all(item["proxyname"] for item in items), items

    site_requests = [r for r in tls_origin.since(mark) if r.path.startswith("/site")]
    assert len(tls_origin.clients(since=mark)) >= POOL
    for request in site_requests:
        # HTTPS by header: the master speaks TLS itself and strips its control headers.
        assert not request.header_names() & {"location", "x-cache-proxyname",
                                             "proxy-authorization", "proxy-connection"}


def test_sticky_session_stays_on_the_named_instance(scrapoxy, origin):
    with master_session(scrapoxy) as session:
        first = session.get(origin.url + "/ip", timeout=15)
    name = first.headers["x-cache-proxyname"]
    fingerprint = {i["name"]: i["fingerprint"] for i in scrapoxy.api.instances()}.get(name)
    mark = origin.mark()
    names = []
    for _ in range(10):
        # A new connection each time: pinning must not depend on the client connection.
        with master_session(scrapoxy) as session:
            response = session.get(origin.url + "/ip", headers={"x-cache-proxyname": name},
                                   timeout=15)
        assert response.status_code == 200
        names.append(response.headers.get("x-cache-proxyname"))
    assert names == [name] * 10
    clients = origin.clients(since=mark)
    assert len(clients) == 1
    if fingerprint:
        assert clients == {fingerprint}
    assert all(r.header("x-cache-proxyname") is None for r in origin.since(mark))


def test_stopped_instance_is_replaced_by_a_new_one(scrapoxy, origin):
    before = alive_names(scrapoxy)
    assert len(before) == POOL
    victim = sorted(before)[0]

    response = scrapoxy.api.stop_instance(victim)
    assert response.status_code == 200, response.text
    assert isinstance(response.json()["alive"], int)

    def replaced(found: list[dict]) -> bool:
        names = {instance["name"] for instance in found}
        alive = {instance["name"] for instance in found if instance.get("alive") is True}
        return victim not in names and len(alive) >= POOL and bool(alive - before)

    scrapoxy.api.wait_instances(replaced, timeout=60,
                                message=f"{victim} gone and {POOL} alive with a new name")
    with master_session(scrapoxy) as session:
        names = {session.get(origin.url + "/ip", timeout=15).headers.get("x-cache-proxyname")
                 for _ in range(12)}
    assert victim not in names
    assert len(names) == POOL
