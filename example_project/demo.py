"""The whole product in one command: a server, a pool, a site, and Scrapy crawls through them.

    python example_project/demo.py            # keeps the server running afterwards (Ctrl-C)
    python example_project/demo.py --exit     # stops everything after the crawls
    python example_project/demo.py --master-port 0 --commander-port 0   # any free ports

It starts ``scrapoxy-server start`` on its embedded default (3 local instances, master on
127.0.0.1:8888, commander on 127.0.0.1:8889), serves a small site on loopback that records who
connects, and runs two crawls of the example project through the master:

1. ``site``: a multi-page site; prints which instance served each page and which client
   addresses the site saw (rotation).
2. ``account``: a shop that bans a client address after a few requests (429), crawled by three
   accounts, each with its own session (sessions may share an instance), with the commander's
   API on: bans stop the banned instance, the manager replaces it, the page is retried
   elsewhere, and every page arrives.

Ctrl-C, SIGTERM or SIGHUP (a closed terminal) stops the server and its instances too.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

HERE = Path(__file__).resolve().parent
PAGES = 8
SHOP_PAGES = 4
BAN_AFTER = 4  # shop requests one client address may make before it gets 429
DEFAULT_MASTER_PORT, DEFAULT_COMMANDER_PORT = 8888, 8889


class _Site(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    clients: set[str] = set()
    shop_requests: dict[str, int] = {}
    banned: set[str] = set()
    lock = threading.Lock()

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        client = self.client_address[0]
        with _Site.lock:
            _Site.clients.add(client)
        if self.path.startswith("/shop/"):
            self._shop(client)
            return
        match = re.fullmatch(r"/(?:page/(\d+))?", self.path)
        if match is None or (match.group(1) and not 1 <= int(match.group(1)) <= PAGES):
            self.send_error(404)
            return
        number = int(match.group(1) or 0)
        links = "".join(f'<li><a href="/page/{i}">page {i}</a></li>' for i in range(1, PAGES + 1))
        title = f"Demo page {number}" if number else "Demo home"
        self._html(200, title, f"<ul>{links}</ul>")

    def _shop(self, client: str) -> None:
        """A shop that bans a client address after BAN_AFTER requests, as real sites do."""
        with _Site.lock:
            count = _Site.shop_requests[client] = _Site.shop_requests.get(client, 0) + 1
            if count > BAN_AFTER:
                _Site.banned.add(client)
        if count > BAN_AFTER:
            self._html(429, "Too many requests", "<p>banned</p>")
            return
        match = re.fullmatch(r"/shop/(?:p(\d+))?", self.path)
        if match is None or (match.group(1) and not 1 <= int(match.group(1)) <= SHOP_PAGES):
            self.send_error(404)
            return
        title = f"Product {match.group(1)}" if match.group(1) else "Shop"
        self._html(200, title, "")

    def _html(self, status: int, title: str, content: str) -> None:
        body = (f"<html><head><title>{title}</title></head><body><h1>{title}</h1>"
                f"{content}</body></html>").encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _SiteServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        # A stopped (banned) instance takes its connections with it: not the site's error.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


@dataclass(frozen=True)
class Banner:
    """Where the server listens, as ``scrapoxy-server start`` printed it."""

    master: str
    commander: str
    password: str


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exit", action="store_true", help="stop the server after the crawls")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds to wait for the pool to come alive")
    parser.add_argument("--master-port", type=int, default=DEFAULT_MASTER_PORT,
                        help="port of the master (0: any free port)")
    parser.add_argument("--commander-port", type=int, default=DEFAULT_COMMANDER_PORT,
                        help="port of the commander (0: any free port)")
    args = parser.parse_args()
    # The server runs in a session of its own (Ctrl-C in the terminal reaches the demo only):
    # the demo's cleanup must run however it is asked to stop.
    _CHILDREN.catch_signals()

    site = _SiteServer(("127.0.0.1", 0), _Site)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    site_url = f"http://127.0.0.1:{site.server_address[1]}/"
    print(f"demo site:   {site_url}")

    folder = tempfile.TemporaryDirectory()
    # The embedded default (local provider, 3 instances) but for the ports and a state file
    # of its own: the demo neither picks up nor leaves changes in your server's state file.
    config = Path(folder.name) / "scrapoxy.toml"
    config.write_text(f"state_file = {json.dumps(str(Path(folder.name) / 'state.json'))}\n\n"
                      f"[master]\nport = {args.master_port}\n\n"
                      f"[commander]\nport = {args.commander_port}\n")
    command = [sys.executable, "-m", "scrapoxy_server.cli", "start", str(config)]
    try:
        server = _CHILDREN.start(command, graceful=True, start_new_session=True)
        # Keep draining the server's log so it never blocks on a full pipe; shown at the end.
        log = _Relay(server.stderr)
        log.start()
        banner = _read_banner(server, log)
        messages = _Relay(server.stdout)  # what the server says to the user (its exit summary)
        messages.show()
        messages.start()
        api = f"{banner.commander}/api"
        auth = ("admin", banner.password)
        print("waiting for 3 alive instances ", end="", flush=True)
        _wait_alive(api, auth, want=3, timeout=args.timeout, server=server)
        print(" ok")
        env = {**os.environ, "SCRAPOXY_MASTER": banner.master}

        items, _ = _crawl(["site", "-a", f"url={site_url}", "-a", "max_pages=20"], env=env,
                          out=Path(folder.name) / "pages.json")
        if items is None:
            return 1
        print(f"\n1. scraped {len(items)} pages through scrapoxy:")
        for item in sorted(items, key=lambda i: i["url"]):
            print(f"  {item['status']}  {item['url']:<40} via {item.get('proxyname')}")
        served_by = {item.get("proxyname") for item in items}
        print(f"\n{len(served_by)} instances served the crawl; the site saw "
              f"{len(_Site.clients)} client addresses: {', '.join(sorted(_Site.clients))}")

        before = {instance["name"] for instance in _instances(api, auth)}
        print(f"\n2. three accounts read a shop that bans an address after {BAN_AFTER} "
              "requests (ban handling on):")
        accounts, stats = _crawl(
            ["account", "-a", f"url={site_url}shop/", "-a", "accounts=3",
             "-a", f"pages={SHOP_PAGES}", "-s", "SCRAPOXY_BAN_RETRY_TIMES=10"],
            env={**env, "SCRAPOXY_API": api, "SCRAPOXY_USERNAME": "admin",
                 "SCRAPOXY_PASSWORD": banner.password},
            out=Path(folder.name) / "accounts.json")
        if accounts is None:
            return 1
        for item in sorted(accounts, key=lambda i: (i["account"], i["url"])):
            print(f"  account {item['account']}  {item['status']}  {item['url']:<40} "
                  f"via {item.get('proxyname') or '?'}")
        after = {instance["name"] for instance in _instances(api, auth)}
        print(f"\nthe shop banned {len(_Site.banned)} addresses; the crawl saw "
              f"{stats.get('scrapoxy/ban/count', 0)} ban answers (an instance may answer more "
              "than one before it stops) and stopped "
              f"{stats.get('scrapoxy/ban/instance_stopped', 0)} instances; new instances so far: "
              f"{', '.join(sorted(after - before)) or 'none yet'}")

        every = items + accounts
        if args.exit:
            return 0 if every and all(i["status"] == 200 for i in every) else 1
        print(f"\nThe server keeps running: GUI at {banner.commander}/ "
              f"(admin / {banner.password}). Ctrl-C stops it. Its log follows.")
        log.show()
        server.wait()
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        _CHILDREN.stop_all()
        site.shutdown()
        folder.cleanup()


class _Children:
    """The processes the demo started, stopped whatever way the demo is asked to stop.

    SIGINT, SIGTERM and SIGHUP raise KeyboardInterrupt, except while a child is being started:
    a signal then waits until the child is on the list, so no interruption can orphan one (the
    server, in a session of its own, would keep the ports and its instances)."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen] = []
        self._graceful: set[int] = set()  # pids stopped with SIGTERM (the server)
        self._starting = False
        self._pending: int | None = None

    def catch_signals(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self._signal)

    def _signal(self, signum: int, _frame: Any) -> None:
        if self._starting:
            self._pending = signum
            return
        raise KeyboardInterrupt(signal.Signals(signum).name)

    def start(self, argv: list[str], *, graceful: bool = False,
              **kwargs: Any) -> subprocess.Popen:
        """Start ``argv`` with pipes for its output; ``graceful``: stop it with SIGTERM and
        wait (the server terminates its instances), else kill it."""
        self._starting = True
        try:
            process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True, **kwargs)
            self.processes.append(process)
            if graceful:
                self._graceful.add(process.pid)
        finally:
            self._starting = False
        if self._pending is not None:
            signum, self._pending = self._pending, None
            raise KeyboardInterrupt(signal.Signals(signum).name)
        return process

    def stop_all(self) -> None:
        """The crawls are killed; the server gets SIGTERM, so it terminates its instances."""
        for process in reversed(self.processes):
            if process.poll() is not None:
                continue
            if process.pid not in self._graceful:
                process.kill()
                process.wait()
                continue
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


_CHILDREN = _Children()


def _crawl(arguments: list[str], *, env: dict[str, str],
           out: Path) -> tuple[list[dict] | None, dict[str, int]]:
    """``scrapy crawl ARGUMENTS`` in the example project: its items (None if it failed) and
    the ``scrapoxy/...`` counters of the stats it logged at the end."""
    crawl = _CHILDREN.start(
        [sys.executable, "-m", "scrapy", "crawl", *arguments, "-O", str(out),
         "-s", "LOG_LEVEL=INFO"], cwd=HERE, env=env)
    _, stderr = crawl.communicate()  # interrupted: stop_all kills it
    if crawl.returncode != 0 or not out.exists():
        print(stderr[-3000:], file=sys.stderr)
        print("the crawl failed", file=sys.stderr)
        return None, {}
    stats = {key: int(value)
             for key, value in re.findall(r"'(scrapoxy/[^']+)': (\d+)", stderr)}
    return json.loads(out.read_text()), stats


def _read_banner(server: subprocess.Popen, log: "_Relay") -> Banner:
    """Echo the server's banner; pick up its addresses and the generated commander password."""
    assert server.stdout is not None
    found: dict[str, str] = {}
    for line in server.stdout:
        print(line, end="", flush=True)
        for key, pattern in (("master", r"^\s*master:\s+(\S+)"),
                             ("commander", r"^\s*commander:\s+(\S+)"),
                             ("password", r"commander login: \S+ / (\S+)"),
                             ("providers", r"^\s*providers:\s+(.+)")):  # the last line
            match = re.search(pattern, line)
            if match:
                found[key] = match.group(1)
        if len(found) == 4:
            return Banner(master=found["master"], commander=found["commander"],
                          password=found["password"])
    code = server.wait()
    log.join(5)
    print("".join(log.tail), end="", file=sys.stderr)
    if any("Address already in use" in line for line in log.tail):
        print("another server holds these ports: stop it, or run the demo on free ports with "
              "--master-port 0 --commander-port 0", file=sys.stderr)
    raise SystemExit(f"scrapoxy-server exited early (code {code})")


def _instances(api: str, auth: tuple[str, str]) -> list[dict]:
    session = requests.Session()
    session.trust_env = False  # a loopback API call must not go through an http_proxy
    return session.get(f"{api}/instances", auth=auth, timeout=5).json()


def _wait_alive(api: str, auth: tuple[str, str], *, want: int, timeout: float,
                server: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"scrapoxy-server exited (code {server.returncode})")
        try:
            if sum(1 for i in _instances(api, auth) if i["alive"]) >= want:
                return
        except (requests.RequestException, ValueError):
            pass
        print(".", end="", flush=True)
        time.sleep(0.5)
    raise SystemExit(f"\nfewer than {want} instances alive after {timeout:g}s")


class _Relay(threading.Thread):
    """Drains one of the server's streams, keeping its last lines; prints it after ``show``."""

    def __init__(self, stream: Any) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.tail: collections.deque[str] = collections.deque(maxlen=30)
        self.live = False

    def show(self) -> None:
        self.live = True

    def run(self) -> None:
        for line in self.stream:
            self.tail.append(line)
            if self.live:
                try:
                    print(line, end="", flush=True)
                except (BrokenPipeError, ValueError):
                    self.live = False


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:
        # The reader went away (``| head``): the server was stopped on the way out; say no more.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
