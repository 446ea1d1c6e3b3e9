"""``scrapoxy-server start`` refuses a bad configuration before any cloud call (H12's last
part), and a corrupt state file likewise, naming what to fix. Real commands."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.server import REPO_ROOT, to_toml


class ConnectionRecorder:
    """A loopback port posing as the EC2 endpoint: it only counts who connects."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.socket.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self.socket.accept()
            except OSError:
                continue
            self.connections += 1
            connection.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.socket.close()


@pytest.fixture
def ec2_endpoint() -> Iterator[ConnectionRecorder]:
    recorder = ConnectionRecorder()
    yield recorder
    recorder.close()


def aws_config(endpoint: str, **scaling: int) -> dict:
    return {
        "commander": {"host": "127.0.0.1", "port": 0, "password": "pw"},
        "master": {"host": "127.0.0.1", "port": 0},
        "scaling": scaling,
        "manager": {"check_url": "http://203.0.113.1/ip"},
        "providers": [{"type": "awsec2", "name": "aws", "image_id": "ami-12345678",
                       "allowed_cidr": "198.51.100.7/32",
                       "access_key_id": "AKIDEXAMPLE", "secret_access_key": "AwsSecretKey123",
                       "endpoint_url": endpoint}],
    }


def start(config_path: Path) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items()
           if key.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "scrapoxy_server.cli", "start", str(config_path)],
                          capture_output=True, text=True, timeout=60, env=env,
                          cwd=config_path.parent)


def test_min_above_max_in_the_file_stops_the_start_naming_the_key_before_any_cloud_call(
        tmp_path, ec2_endpoint):
    config_path = tmp_path / "scrapoxy.toml"
    config_path.write_text(to_toml(aws_config(ec2_endpoint.url, min=5, required=3, max=3)))
    result = start(config_path)
    assert result.returncode != 0
    assert "scaling.min" in result.stderr and "max (3)" in result.stderr
    assert ec2_endpoint.connections == 0
    assert "master:" not in result.stdout  # it never got as far as listening


def test_a_corrupt_state_file_stops_the_start_naming_the_file(tmp_path, ec2_endpoint):
    config_path = tmp_path / "scrapoxy.toml"
    config_path.write_text(to_toml(aws_config(ec2_endpoint.url, min=0, required=0, max=1)))
    state_path = tmp_path / "scrapoxy.state.json"
    state_path.write_text('{"format": 1, "changes": {"scaling": {"max": 4')  # cut short
    result = start(config_path)
    assert result.returncode == 2
    assert str(state_path) in result.stderr and "not valid JSON" in result.stderr
    assert "delete it" in result.stderr
    assert ec2_endpoint.connections == 0
    assert "AwsSecretKey123" not in result.stderr + result.stdout
