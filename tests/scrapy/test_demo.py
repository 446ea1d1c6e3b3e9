"""The README's first command, ``python example_project/demo.py``, as a new user runs it (on free
ports, and stopping at the end): a real server, the rotation crawl and the banning-shop crawl."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_demo_crawls_the_site_over_three_addresses_and_the_banning_shop_page_by_page(tmp_path):
    env = {**os.environ, "TLDEXTRACT_CACHE": str(tmp_path / "tldextract"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        env.pop(name, None)
    result = subprocess.run(
        [sys.executable, str(ROOT / "example_project" / "demo.py"), "--exit",
         "--master-port", "0", "--commander-port", "0"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=150)
    output = result.stdout + result.stderr

    assert result.returncode == 0, output[-5000:]
    assert "1. scraped 9 pages through scrapoxy" in output
    assert "the site saw 3 client addresses" in output
    shop_lines = re.findall(r"account (\d)  (\d{3})  \S+/shop/", output)
    assert len(shop_lines) == 3 * 5 and {status for _, status in shop_lines} == {"200"}, output
    bans = re.search(r"bans: (\d+), banned instances stopped: (\d+)", output)
    assert bans and int(bans.group(1)) >= 1 and int(bans.group(2)) >= 1, output[-3000:]
