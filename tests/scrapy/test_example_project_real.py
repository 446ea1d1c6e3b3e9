"""The example project's spiders, run with ``scrapy crawl`` as a user runs them, through a real
``scrapy-server`` (local instances) to loopback sites.

- ``site`` against an https site whose certificate the master does not trust: the master
  answers its own 502 ``upstream`` (JSON, ``x-scrapoxy-error``); the crawl reports it instead of
  crashing in a selector.
- ``account`` (sessions and ban handling) against a shop that bans an IP after a few requests:
  every page is scraped, bans are counted in the stats, banned instances are replaced.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.server import COMMANDER_PASSWORD, COMMANDER_USERNAME, ScrapoxyServer
from tests.lab.tls import LabCA
from tests.scrapy.ban_site import BanSite

ROOT = Path(__file__).resolve().parents[2]
PROJECT = ROOT / "example_project"


def scrapy_crawl(server: ScrapoxyServer, tmp_path: Path, spider: str, *args: str,
                 env: dict[str, str] | None = None, timeout: float = 90,
                 ) -> tuple[list[dict], str]:
    """``scrapy crawl SPIDER ARGS -O out.json`` in the example project; returns items and log."""
    out = tmp_path / f"{spider}.json"
    process_env = {
        **os.environ,
        "SCRAPOXY_MASTER": server.master_url,
        "SCRAPOXY_API": server.commander_url + "/api",
        "SCRAPOXY_USERNAME": COMMANDER_USERNAME,
        "SCRAPOXY_PASSWORD": COMMANDER_PASSWORD,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "TLDEXTRACT_CACHE": str(tmp_path / "tldextract"),
        **(env or {}),
    }
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        process_env.pop(name, None)
    result = subprocess.run(
        [sys.executable, "-m", "scrapy", "crawl", spider, *args, "-O", str(out),
         "-s", "SCRAPOXY_BACKOFF_BASE=0.2", "-s", "SCRAPOXY_BACKOFF_MAX=1"],
        cwd=PROJECT, env=process_env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(out.read_text()), result.stderr


def logged_stats(log: str) -> dict[str, int]:
    """The integer ``scrapoxy/...`` entries of the stats Scrapy dumps at the end of a crawl."""
    return {key: int(value) for key, value in re.findall(r"'(scrapoxy/[^']+)': (\d+)", log)}


@pytest.fixture
def untrusted_site(tmp_path: Path) -> Iterator[BanSite]:
    """An https site whose certificate comes from a CA the master was not told about."""
    rogue = LabCA(tmp_path / "rogue-ca", name="Not Trusted CA")
    site = BanSite(pages=2, ban_after=100, cert=rogue.issue("rogue"))
    yield site
    site.close()


@pytest.fixture
def shop(lab_cert) -> Iterator[BanSite]:
    site = BanSite(pages=4, ban_after=3, cert=lab_cert)
    yield site
    site.close()


def test_site_spider_reports_master_errors_of_an_untrusted_https_site(
        server_factory, untrusted_site, tmp_path):
    server = server_factory(instances=1)
    server.api.wait_alive(1, timeout=30)

    items, log = scrapy_crawl(server, tmp_path, "site", "-a",
                              f"url={untrusted_site.https_url}/shop/")

    assert len(items) == 1, log[-3000:]
    [item] = items
    assert (item["url"], item["status"], item["error"]) == \
        (untrusted_site.https_url + "/shop/", 502, "upstream")
    assert item["message"] and item["proxyname"]
    assert "Traceback" not in log and "spider_exceptions" not in log


@pytest.mark.parametrize("https_mode", ["location", "connect"])
def test_account_spider_scrapes_every_page_of_a_banning_shop_and_replaces_banned_instances(
        server_factory, shop, tmp_path, https_mode):
    server = server_factory(instances=2)
    before = {i["name"] for i in server.api.wait_alive(2, timeout=30)}

    items, log = scrapy_crawl(
        server, tmp_path, "account", "-a", f"url={shop.https_url}/shop/", "-a", "accounts=3",
        "-a", f"pages={shop.pages}", "-s", "SCRAPOXY_BAN_RETRY_TIMES=10",
        env={"SCRAPOXY_HTTPS_MODE": https_mode})

    # Every account read its login page and every product page, all 200.
    expected = sorted((account, f"{shop.https_url}/shop/{page}") for account in (1, 2, 3)
                      for page in ["", *(f"p{k}" for k in range(1, shop.pages + 1))])
    scraped = sorted((item["account"], item["url"]) for item in items if item["status"] == 200)
    assert scraped == expected, (items, log[-3000:])
    assert all(item["status"] == 200 for item in items), items
    # 3 accounts x 5 pages through IPs banned after 3 requests: bans were met and handled.
    stats = logged_stats(log)
    assert stats["scrapoxy/ban/reason_count/http_429"] >= 1
    assert stats["scrapoxy/ban/instance_stopped"] >= 1
    assert "scrapoxy/ban/max_reached" not in stats
    assert len(shop.banned_ips) >= 1
    after = {i["name"] for i in server.api.wait_alive(2, timeout=30)}
    assert after - before, "the banned instances were not replaced"
