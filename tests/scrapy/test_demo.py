"""The README's first command, ``python example_project/demo.py``, as a new user runs it (on free
ports, and stopping at the end): a real server, the rotation crawl and the banning-shop crawl."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


DEMO = [sys.executable, str(ROOT / "example_project" / "demo.py")]


def demo_env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "TLDEXTRACT_CACHE": str(tmp_path / "tldextract"),
           "HOME": str(tmp_path / "home"), "TMPDIR": str(tmp_path),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "XDG_STATE_HOME"):
        env.pop(name, None)
    return env


def test_demo_crawls_the_site_over_three_addresses_and_the_banning_shop_page_by_page(tmp_path):
    result = subprocess.run(
        [*DEMO, "--exit", "--master-port", "0", "--commander-port", "0"],
        cwd=tmp_path, env=demo_env(tmp_path), capture_output=True, text=True, timeout=150)
    output = result.stdout + result.stderr

    assert result.returncode == 0, output[-5000:]
    assert "1. scraped 9 pages through scrapoxy" in output
    assert "the site saw 3 client addresses" in output
    shop_lines = re.findall(r"account (\d)  (\d{3})  \S+/shop/", output)
    assert len(shop_lines) == 3 * 5 and {status for _, status in shop_lines} == {"200"}, output
    bans = re.search(r"the crawl saw (\d+) ban answers .* and stopped (\d+) instances", output)
    assert bans and int(bans.group(1)) >= 1 and int(bans.group(2)) >= 1, output[-3000:]
    # The demo keeps its state file to itself: nothing lands in the user's.
    assert not (tmp_path / "home" / ".local" / "state" / "scrapoxy").exists()
    assert "Traceback" not in output


def test_demo_piped_into_head_stops_quietly_and_takes_the_server_with_it(tmp_path):
    result = subprocess.run(
        ["bash", "-c", f"{' '.join(DEMO)} --master-port 0 --commander-port 0 | head -3; "
                       "echo status=${PIPESTATUS[0]}"],
        cwd=tmp_path, env=demo_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stdout.splitlines()[0].startswith("demo site:")
    assert "status=1" in result.stdout
    # The server runs in its own session; its command line names the demo's temporary config
    # (under TMPDIR): none may be left running.
    leftover = subprocess.run(["pgrep", "-af", str(tmp_path)], capture_output=True, text=True)
    assert leftover.stdout == "", leftover.stdout


def test_demo_on_a_busy_port_says_how_to_run_on_free_ones(tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = subprocess.run(
            [*DEMO, "--exit", "--master-port", str(busy.getsockname()[1]),
             "--commander-port", "0"],
            cwd=tmp_path, env=demo_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "Address already in use" in result.stderr
    assert "--master-port 0 --commander-port 0" in result.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_demo_stopped_by_a_signal_takes_the_server_and_its_folder_with_it(tmp_path, signum):
    """The server runs in a session of its own, so only the demo's cleanup can stop it: a
    ``kill`` or a closed terminal must not leave it holding the ports."""
    demo = subprocess.Popen([*DEMO, "--master-port", "0", "--commander-port", "0"],
                            cwd=tmp_path, env={**demo_env(tmp_path), "PYTHONUNBUFFERED": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen = ""
        while "waiting for 3 alive instances" not in seen:
            line = demo.stdout.readline()
            assert line, f"demo ended early: {seen}{demo.stderr.read()}"
            seen += line
        demo.send_signal(signum)
        assert demo.wait(30) == 0
        stderr = demo.stderr.read()
    finally:
        if demo.poll() is None:
            demo.kill()
    assert "Traceback" not in stderr, stderr
    leftover = subprocess.run(["pgrep", "-af", str(tmp_path)], capture_output=True, text=True)
    if leftover.stdout:
        subprocess.run(["pkill", "-f", str(tmp_path)], check=False)  # do not leak it on failure
    assert leftover.stdout == "", leftover.stdout
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("tmp")]
