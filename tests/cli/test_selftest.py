"""``scrapoxy-server test [CONFIG] [URL] [--count N]`` against a real server on non-default ports."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from scrapoxy_server.config import Config, MasterConfig, from_dict
from scrapoxy_server.selftest import targets_from_config
from tests.cli.running import server_env


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scrapoxy_server.cli", *args],
                          capture_output=True, text=True, timeout=timeout, env=server_env())


def summary(stdout: str) -> dict[str, int]:
    """The ``N distinct egress address(es):`` table as {address: count}."""
    table = stdout.split("distinct egress address(es):", 1)[1]
    rows = [line.split() for line in table.splitlines() if line.strip()]
    return {row[0]: int(row[1]) for row in rows if len(row) == 2 and row[1].isdigit()}


def test_counts_each_egress_address_of_the_server_named_by_its_config(server_factory):
    server = server_factory(instances=3)
    server.api.wait_alive(3)
    result = run_cli("test", str(server.config_path), "--count", "6")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert f"through http://127.0.0.1:{server.master_port}" in out
    assert f"http://127.0.0.1:{server.commander_port}/ip" in out
    progress = re.findall(r"\[(\d)/6\] (\S+) via (\S+)", out)
    assert [int(i) for i, _, _ in progress] == [1, 2, 3, 4, 5, 6]
    # The commander's /ip seen through each local instance: its own 127.0.0.N.
    per_line: dict[str, int] = {}
    for _, address, name in progress:
        assert re.fullmatch(r"127\.0\.0\.\d+", address) and name.startswith("local-")
        per_line[address] = per_line.get(address, 0) + 1
    assert summary(out) == per_line
    assert len(per_line) == 3 and sum(per_line.values()) == 6
    assert "3 distinct egress address(es)" in out


def test_an_explicit_url_is_fetched_instead(server_factory, origin):
    server = server_factory(instances=2)
    server.api.wait_alive(2)
    mark = origin.mark()
    result = run_cli("test", str(server.config_path), f"{origin.url}/ip", "--count", "4")
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(origin.since(mark)) == 4
    assert sum(summary(result.stdout).values()) == 4


def test_failures_are_counted_and_the_exit_status_says_so(server_factory):
    server = server_factory(instances=1)
    server.api.wait_alive(1)
    # Port 9 on loopback: nothing listens, the instance itself answers 502 (upstream).
    result = run_cli("test", str(server.config_path), "http://127.0.0.1:9/", "--count", "2")
    assert result.returncode == 1
    for i in (1, 2):
        assert re.search(rf"^  \[{i}/2\] upstream via local-1: .*127\.0\.0\.1:9.*refused",
                         result.stdout, re.M | re.I), result.stdout
    assert "0 distinct egress address(es)" in result.stdout
    assert re.search(r"failures:\n  upstream +2", result.stdout)


def test_a_url_that_does_not_answer_an_address_is_a_failure_that_says_why(server_factory,
                                                                          origin):
    server = server_factory(instances=1)
    server.api.wait_alive(1)
    result = run_cli("test", str(server.config_path), f"{origin.url}/page/1", "--count", "2")
    assert result.returncode == 1
    assert "0 distinct egress address(es)" in result.stdout
    assert re.search(r"\[1/2\] via local-1: the answer is not an IP address", result.stdout)
    assert "must answer with the caller's IP address" in result.stdout


def test_help_is_plain_text_and_explains_count():
    result = run_cli("test", "--help")
    assert result.returncode == 0
    assert "``" not in result.stdout
    assert re.search(r"--count N\s+how many requests", result.stdout)
    assert "``" not in run_cli("--help").stdout


def test_targets_follow_the_config_addresses_and_scraper_auth():
    config = from_dict({"master": {"host": "0.0.0.0", "port": 18888,
                                   "auth": {"username": "u;x", "password": "p@ss:w"}},
                        "commander": {"port": 18889, "password": "pw"}})
    targets = targets_from_config(config)
    assert targets.master == "http://u%3Bx:p%40ss%3Aw@127.0.0.1:18888"
    assert targets.url == "http://127.0.0.1:18889/ip"
    checked = from_dict({"manager": {"check_url": "http://checkip.example/"}})
    assert targets_from_config(checked).url == "http://checkip.example/"
    assert targets_from_config(Config(), url="http://x/", master="http://m:1").master == "http://m:1"


def test_a_port_chosen_at_start_cannot_be_guessed():
    with pytest.raises(ValueError, match="master.port is 0"):
        targets_from_config(Config(master=MasterConfig(port=0)))


def test_a_missing_config_file_is_named():
    result = run_cli("test", "/nonexistent/scrapoxy.toml")
    assert result.returncode == 2
    assert "/nonexistent/scrapoxy.toml" in result.stderr


def test_with_no_server_running_it_says_so_once_instead_of_failing_each_request():
    from tests.support import free_port

    port = free_port()
    result = run_cli("test", "--master", f"http://127.0.0.1:{port}", "http://127.0.0.1:9/",
                     "--count", "5")
    assert result.returncode == 1
    assert f"cannot connect to the master at 127.0.0.1:{port}" in result.stderr
    assert "is the server running?" in result.stderr
    assert "[1/5]" not in result.stdout


def test_a_log_level_from_the_environment_is_checked_like_the_option():
    result = subprocess.run([sys.executable, "-m", "scrapoxy_server.cli", "start"],
                            capture_output=True, text=True, timeout=60,
                            env={**server_env(), "SCRAPOXY_LOG_LEVEL": "loud"})
    assert result.returncode == 2
    assert "SCRAPOXY_LOG_LEVEL='LOUD': must be one of DEBUG, INFO, WARNING, ERROR" in result.stderr


class _CannedProxy:
    """A loopback "proxy" answering every request 200 with a bare IP body and no
    Content-Type; with ``name``, also the ``x-cache-proxyname`` a master adds."""

    def __init__(self, name: str | None) -> None:
        import http.server
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - stdlib name
                body = b"127.0.0.7\n"
                self.send_response_only(200)
                self.send_header("Content-Length", str(len(body)))
                if name is not None:
                    self.send_header("x-cache-proxyname", name)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("name, code, shown", [
    ("local-1", 0, "127.0.0.7 via local-1"),
    (None, 1, "not from a scrapoxy master"),
], ids=["master", "not-a-master"])
def test_an_address_counts_only_from_a_master_and_is_read_from_the_bytes(capsys, name, code,
                                                                         shown):
    """No Content-Type: requests would guess a charset and mangle "127.0.0.7"; and a 200
    without x-cache-proxyname (the commander's port, say) proves nothing about the pool."""
    from scrapoxy_server.selftest import Targets, run_test

    proxy = _CannedProxy(name)
    try:
        result = run_test(targets=Targets(master=proxy.url, url="http://127.0.0.1:9/ip"),
                          count=2)
    finally:
        proxy.close()
    out = capsys.readouterr().out
    assert result == code, out
    assert shown in out


@pytest.mark.parametrize("master", ["notaurl", "127.0.0.1:18888", "https://127.0.0.1:18888",
                                    "socks5://127.0.0.1:1080", "http://127.0.0.1:notaport",
                                    "http://127.0.0.1:99999"])
def test_a_master_that_is_no_http_url_is_refused_before_any_request(master):
    result = run_cli("test", "--master", master, "http://127.0.0.1:9/", "--count", "1")
    assert result.returncode == 2
    assert "is not a master URL (http://[user:password@]host:port)" in result.stderr
