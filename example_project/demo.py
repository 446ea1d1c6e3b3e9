"""The whole product in one command: a server, a pool, a site, and a Scrapy crawl through them.

    python example_project/demo.py            # keeps the server running afterwards (Ctrl-C)
    python example_project/demo.py --exit     # stops everything after the crawl

It starts ``scrapoxy-server start`` on its embedded default (3 local instances, master on
127.0.0.1:8888, commander on 127.0.0.1:8889), serves a small multi-page site on loopback that
records who connects, runs the example spider through the master, and prints which instance
served each page and which client addresses the site saw.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent
PAGES = 8


class _Site(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    clients: set[str] = set()

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        _Site.clients.add(self.client_address[0])
        match = re.fullmatch(r"/(?:page/(\d+))?", self.path)
        if match is None or (match.group(1) and not 1 <= int(match.group(1)) <= PAGES):
            self.send_error(404)
            return
        number = int(match.group(1) or 0)
        links = "".join(f'<li><a href="/page/{i}">page {i}</a></li>' for i in range(1, PAGES + 1))
        title = f"Demo page {number}" if number else "Demo home"
        body = (f"<html><head><title>{title}</title></head><body><h1>{title}</h1>"
                f"<ul>{links}</ul></body></html>").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exit", action="store_true", help="stop the server after the crawl")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds to wait for the pool to come alive")
    args = parser.parse_args()

    site = ThreadingHTTPServer(("127.0.0.1", 0), _Site)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    site_url = f"http://127.0.0.1:{site.server_address[1]}/"
    print(f"demo site:   {site_url}")

    server = subprocess.Popen(
        [sys.executable, "-m", "scrapoxy_server.cli", "start"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        password = _read_banner(server)
        # Keep draining the server's output so it never blocks on a full pipe.
        relay = _Relay(server)
        relay.start()
        auth = ("admin", password)
        print("waiting for 3 alive instances ", end="", flush=True)
        _wait_alive(auth, want=3, timeout=args.timeout, server=server)
        print(" ok")
        with tempfile.TemporaryDirectory() as folder:
            out = Path(folder) / "items.json"
            env = {**os.environ, "SCRAPOXY_MASTER": "http://127.0.0.1:8888"}
            crawl = subprocess.run(
                [sys.executable, "-m", "scrapy", "crawl", "site", "-a", f"url={site_url}",
                 "-a", "max_pages=20", "-O", str(out), "-s", "LOG_LEVEL=WARNING"],
                cwd=HERE, env=env, check=False)
            if crawl.returncode != 0 or not out.exists():
                print("the crawl failed", file=sys.stderr)
                return 1
            items = json.loads(out.read_text())
        print(f"\nscraped {len(items)} pages through scrapoxy:")
        for item in sorted(items, key=lambda i: i["url"]):
            print(f"  {item['status']}  {item['url']:<40} via {item.get('proxyname')}")
        served_by = {item.get("proxyname") for item in items}
        print(f"\n{len(served_by)} instances served the crawl; the site saw "
              f"{len(_Site.clients)} client addresses: {', '.join(sorted(_Site.clients))}")
        if args.exit:
            return 0 if items and all(i["status"] == 200 for i in items) else 1
        print("\nThe server keeps running: GUI at http://127.0.0.1:8889/ "
              f"(admin / {password}). Ctrl-C stops it. Its log follows.")
        relay.live = True
        server.wait()
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
        site.shutdown()


def _read_banner(server: subprocess.Popen) -> str:
    """Echo the server's banner and pick up the generated commander password."""
    assert server.stdout is not None
    for line in server.stdout:
        print(line, end="")
        match = re.search(r"commander login: \S+ / (\S+)", line)
        if match:
            return match.group(1)
    raise SystemExit(f"scrapoxy-server exited early (code {server.wait()})")


def _wait_alive(auth: tuple[str, str], *, want: int, timeout: float,
                server: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"scrapoxy-server exited (code {server.returncode})")
        try:
            instances = requests.get("http://127.0.0.1:8889/api/instances", auth=auth,
                                     timeout=5).json()
            if sum(1 for i in instances if i["alive"]) >= want:
                return
        except (requests.RequestException, ValueError):
            pass
        print(".", end="", flush=True)
        time.sleep(0.5)
    raise SystemExit(f"\nfewer than {want} instances alive after {timeout:g}s")


class _Relay(threading.Thread):
    """Reads the server's output; prints it once ``live`` is set."""

    def __init__(self, server: subprocess.Popen) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.live = False

    def run(self) -> None:
        assert self.server.stdout is not None
        for line in self.server.stdout:
            if self.live:
                print(line, end="", flush=True)


if __name__ == "__main__":
    sys.exit(main())
