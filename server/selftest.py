"""``scrapoxy-server test``: send requests through the master, count the egress addresses.

A blocking command-line tool (it runs outside the server's reactor).
"""
from __future__ import annotations

import sys
from collections import Counter
from urllib.parse import urlsplit

import requests

DEFAULT_URL = "http://127.0.0.1:8889/ip"


def run_test(*, master: str, url: str | None, count: int) -> int:
    if count < 1:
        print("scrapoxy-server test: --count must be at least 1", file=sys.stderr)
        return 2
    url = url or DEFAULT_URL
    if urlsplit(url).scheme not in ("http", "https"):
        print(f"scrapoxy-server test: {url!r} is not an http(s) URL", file=sys.stderr)
        return 2
    proxies = {"http": master, "https": master}
    egress: Counter[str] = Counter()
    instances: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    session = requests.Session()
    print(f"sending {count} request(s) to {url} through {master}")
    for i in range(1, count + 1):
        try:
            response = session.get(url, proxies=proxies, timeout=30)
        except requests.RequestException as exc:
            failures[type(exc).__name__] += 1
            print(f"  [{i}/{count}] failed: {exc}")
            continue
        name = response.headers.get("x-cache-proxyname", "?")
        if response.status_code != 200:
            reason = response.headers.get("x-scrapoxy-error") or f"HTTP {response.status_code}"
            failures[reason] += 1
            print(f"  [{i}/{count}] {reason} via {name}: {response.text[:120]}")
            continue
        address = response.text.strip()[:64] or "(empty body)"
        egress[address] += 1
        instances[name] += 1
        print(f"  [{i}/{count}] {address} via {name}")
    print(f"\n{len(egress)} distinct egress address(es):")
    for address, n in egress.most_common():
        print(f"  {address:<40} {n}")
    if failures:
        print("failures:")
        for reason, n in failures.most_common():
            print(f"  {reason:<40} {n}")
    return 0 if egress and not failures else 1
