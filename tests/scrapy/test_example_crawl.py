"""The example project's ``site`` spider crawls an https site through a (fake) master.

``scrapy crawl`` runs as a subprocess, as a user would run it, against :class:`FakeMaster`; this
proves the middleware end to end on the Scrapy side without the real server.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.scrapy.fake_master import FakeMaster

ROOT = Path(__file__).resolve().parents[2]
PROJECT = ROOT / "example_project"


@pytest.fixture
def master() -> Iterator[FakeMaster]:
    fake = FakeMaster().start()
    yield fake
    fake.stop()


def crawl(master: FakeMaster, tmp_path: Path, *args: str, credentials: str = "",
          path: str = "/") -> tuple[list[dict], str]:
    out = tmp_path / "out.json"
    env = {
        **os.environ,
        "SCRAPOXY_MASTER": f"http://{credentials}127.0.0.1:{master.port}",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        # An empty tldextract cache: only the project's offline setting keeps it off the network.
        "TLDEXTRACT_CACHE": str(tmp_path / "tldextract"),
    }
    env.pop("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", None)
    url = f"https://127.0.0.1:{master.port}{path}"
    result = subprocess.run(
        [sys.executable, "-m", "scrapy", "crawl", "site", "-a", f"url={url}", *args,
         "-O", str(out)],
        cwd=PROJECT, env=env, capture_output=True, text=True, timeout=45,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text()), result.stderr


def test_site_spider_crawls_https_site_through_master(master, tmp_path):
    items, log = crawl(master, tmp_path, credentials="a%40b:p%3Aw%2F%25@")
    base = f"https://127.0.0.1:{master.port}"

    # Every page 200, every URL https: links and the redirect resolved against the https URL.
    assert sorted(item["url"] for item in items) == sorted([
        f"{base}/", f"{base}/a", f"{base}/b?x=1", f"{base}/c", f"{base}/c?from=old", f"{base}/d",
    ])
    assert all(item["status"] == 200 for item in items)
    assert {item["title"] for item in items} == {"Home", "Page A", "Page B", "Page C", "Page D"}
    assert {item["proxyname"] for item in items} == {"inst-1", "inst-2"}

    # The master saw absolute-form http with the real URL in Location, never a CONNECT.
    assert master.seen, "the fake master got no request"
    assert all(seen.command == "GET" for seen in master.seen)
    for seen in master.seen:
        assert seen.location is not None and seen.location.startswith(base + "/")
        assert seen.target == "http://" + seen.location[len("https://"):]
        assert seen.proxy_authorization == "Basic YUBiOnA6dy8l"  # base64("a@b:p:w/%")
        assert seen.proxyname is None  # not sticky
    # The Secure cookie set by the first page came back: cookies were kept for the https URLs.
    assert any(seen.cookie == "visited=1" for seen in master.seen)
    assert "Public Suffix List" not in log


def test_site_spider_respects_max_pages(master, tmp_path):
    items, _ = crawl(master, tmp_path, "-a", "max_pages=2")
    assert len(items) == 2


def test_sticky_crawl_stays_on_one_instance(master, tmp_path):
    items, _ = crawl(master, tmp_path, "-a", "sticky=1", "-a", "max_pages=3")
    assert len(items) == 3
    # Requests after the first response name the instance that served the session.
    assert {item["proxyname"] for item in items} == {"inst-1"}
    assert any(seen.proxyname == "inst-1" for seen in master.seen)


def test_site_spider_reports_json_pages_and_master_errors_instead_of_crashing(master, tmp_path):
    items, log = crawl(master, tmp_path, path="/mixed")
    base = f"https://127.0.0.1:{master.port}"

    by_url = {item["url"]: item for item in items}
    assert sorted(by_url) == [f"{base}/data.json", f"{base}/gone", f"{base}/mixed"], log[-3000:]
    assert by_url[f"{base}/data.json"]["status"] == 200
    assert by_url[f"{base}/data.json"]["title"] is None
    gone = by_url[f"{base}/gone"]
    assert (gone["status"], gone["error"]) == (502, "upstream")
    assert gone["message"] == "instance inst-1: TLS handshake failed"
    assert "Traceback" not in log
    assert "scrapoxy master error on " + base + "/gone: 502 upstream" in log
