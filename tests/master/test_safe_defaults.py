"""An open proxy on the internet is abused within hours: binding beyond loopback needs auth."""
from __future__ import annotations

import subprocess
import sys

import pytest

from scrapoxy_server.config import from_dict
from tests.support import free_port


def _start(tmp_path, toml: str) -> subprocess.CompletedProcess:
    config = tmp_path / "scrapoxy.toml"
    config.write_text(toml)
    return subprocess.run([sys.executable, "-m", "scrapoxy_server.cli", "start", str(config)],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_master_beyond_loopback_without_scraper_auth_refuses_to_start(tmp_path, host):
    done = _start(tmp_path, f'[master]\nhost = "{host}"\nport = {free_port()}\n'
                            f'[commander]\nport = {free_port()}\n')
    assert done.returncode == 2
    assert "master.host" in done.stderr and "master.auth" in done.stderr
    assert "listening" not in done.stdout


def test_commander_beyond_loopback_without_a_password_refuses_to_start(tmp_path):
    done = _start(tmp_path, f'[master]\nport = {free_port()}\n'
                            f'[commander]\nhost = "0.0.0.0"\nport = {free_port()}\n')
    assert done.returncode == 2
    assert "commander.host" in done.stderr and "commander.password" in done.stderr


def test_beyond_loopback_is_allowed_with_auth_or_when_explicitly_asked():
    from_dict({"master": {"host": "0.0.0.0", "auth": {"username": "u", "password": "p"}},
               "commander": {"host": "0.0.0.0", "password": "pw"}})
    from_dict({"master": {"host": "0.0.0.0", "allow_public": True},
               "commander": {"host": "0.0.0.0", "allow_public": True}})
