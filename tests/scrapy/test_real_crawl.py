"""Real crawls: Scrapy (in a subprocess) -> the real scrapoxy-server with local instances ->
a loopback site that bans IPs, redirects across http and https and sets cookies.

Each test starts its own small server (2 instances) because bans and sleeping change the pool.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.lab.server import COMMANDER_PASSWORD, COMMANDER_USERNAME, ScrapoxyServer
from tests.scrapy.ban_site import BanSite

if importlib.util.find_spec("scrapoxy_server.cli") is None:
    pytestmark = pytest.mark.skip(reason="scrapoxy_server.cli does not exist yet")

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("crawl_script.py")


@pytest.fixture
def site(lab_cert) -> Iterator[BanSite]:
    server = BanSite(pages=8, ban_after=3, cert=lab_cert)
    yield server
    server.close()


def crawl(server: ScrapoxyServer, tmp_path: Path, *, spider: dict[str, Any],
          settings: dict[str, Any] | None = None, timeout: float = 60) -> dict[str, Any]:
    job = {
        "out": str(tmp_path / "out.json"),
        "spider": spider,
        "settings": {
            "SCRAPOXY_MASTER": server.master_url,
            "SCRAPOXY_API": server.commander_url + "/api",
            "SCRAPOXY_USERNAME": COMMANDER_USERNAME,
            "SCRAPOXY_PASSWORD": COMMANDER_PASSWORD,
            "SCRAPOXY_BACKOFF_BASE": 0.2,
            "SCRAPOXY_BACKOFF_MAX": 1.0,
            **(settings or {}),
        },
    }
    job_path = tmp_path / "job.json"
    job_path.write_text(json.dumps(job))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS": "",
           "TLDEXTRACT_CACHE": str(tmp_path / "tldextract")}
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        env.pop(name, None)
    result = subprocess.run([sys.executable, str(SCRIPT), str(job_path)], env=env,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-4000:]
    output = json.loads((tmp_path / "out.json").read_text())
    output["log"] = result.stderr
    return output


@pytest.mark.parametrize("https_mode", ["location", "connect"])
def test_banning_site_is_crawled_whole_with_bans_counted_and_instances_replaced(
        server_factory, site, tmp_path, https_mode):
    server = server_factory(instances=2)
    before = {i["name"] for i in server.api.wait_alive(2, timeout=30)}

    result = crawl(server, tmp_path, spider={"start": [site.https_url + "/shop/"], "follow": True},
                   settings={"SCRAPOXY_BAN_RETRY_TIMES": 10, "CONCURRENT_REQUESTS": 2,
                             "SCRAPOXY_HTTPS_MODE": https_mode})

    pages = sorted(item["url"] for item in result["items"] if item["status"] == 200)
    expected = sorted([site.https_url + "/shop/"] +
                      [f"{site.https_url}/shop/p{k}" for k in range(1, 9)])
    assert pages == expected, (result["items"], result["log"][-3000:])
    stats = result["stats"]
    assert stats["scrapoxy/ban/reason_count/http_429"] >= 1
    assert stats["scrapoxy/ban/instance_stopped"] >= 1
    assert len(site.banned_ips) >= 1
    after = {i["name"] for i in server.api.wait_alive(2, timeout=30)}
    assert after - before, "the banned instances were not replaced"


def test_redirect_chain_across_https_and_http_ends_on_right_urls_with_cookies(
        server_factory, site, tmp_path):
    server = server_factory(instances=2)
    server.api.wait_alive(1, timeout=30)

    result = crawl(server, tmp_path, spider={"start": [site.https_url + "/chain/start"]})

    [item] = result["items"]
    assert item["status"] == 200
    assert item["url"] == site.https_url + "/chain/end"
    assert item["redirect_urls"] == [site.https_url + "/chain/start", site.http_url + "/chain/hop"]
    cookies = {path: cookie for _, path, cookie in site.hits}
    assert cookies["/chain/hop"] == "sid=42"  # the Secure cookie stays off plain http
    assert sorted(item["text"].removeprefix("cookie=").split("; ")) == ["sec=1", "sid=42"]


def test_crawl_started_with_pool_asleep_waits_for_it_and_succeeds(server_factory, site, tmp_path):
    server = server_factory(instances=2, overrides={
        "scaling": {"min": 0, "required": 0, "max": 2},
        "master": {"wait_for_instance": 1.0},
    })
    assert server.api.scaling()["required"] == 0

    result = crawl(server, tmp_path, spider={"start": [site.http_url + "/shop/p1",
                                                       site.https_url + "/shop/p2"]})

    assert sorted(item["status"] for item in result["items"]) == [200, 200], result["log"][-3000:]
    assert result["stats"]["scrapoxy/pool/wait_count/spider_opened"] == 1
    assert server.api.scaling()["required"] == 0  # put back to sleep on close


def test_connect_mode_session_keeps_one_egress_ip(server_factory, site, tmp_path):
    server = server_factory(instances=2)
    server.api.wait_alive(2, timeout=30)

    result = crawl(server, tmp_path, spider={
        "start": [f"{site.https_url}/chain/end?{k}" for k in range(6)], "session": "acct",
    }, settings={"SCRAPOXY_HTTPS_MODE": "connect"})

    assert [item["status"] for item in result["items"]] == [200] * 6
    assert len({ip for ip, path, _ in site.hits if path == "/chain/end"}) == 1
