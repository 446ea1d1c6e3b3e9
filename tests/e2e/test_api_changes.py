"""Changes made through the API, on real ``scrapoxy-server`` processes: applied live,
kept in the state file, still in force after a restart, and never showing a secret."""
from __future__ import annotations

import os
import stat

import requests

from tests.commander.sse_client import EventStream
from tests.support import wait_until

STATIC_SECRET = "TopSecretStatic"


def test_scaling_set_through_the_api_survives_a_restart(server_factory, tmp_path):
    state_file = tmp_path / "kept" / "state.json"
    first = server_factory(instances=1, overrides={
        "state_file": str(state_file),
        "scaling": {"min": 1, "required": 1, "max": 1, "downscale_delay": 600.0}})
    response = first.api.patch("/api/scaling", json={"min": 0, "required": 2, "max": 2})
    assert response.status_code == 200
    assert first.api.scaling() == {"min": 0, "required": 2, "max": 2}
    assert first.stop() == 0
    assert stat.S_IMODE(os.stat(state_file).st_mode) == 0o600

    # The same config file as before, except a key never changed through the API: the file
    # decides that one, the state file the scaling.
    second = server_factory(instances=1, overrides={
        "state_file": str(state_file),
        "scaling": {"min": 1, "required": 1, "max": 1, "downscale_delay": 300.0}})
    assert second.api.scaling() == {"min": 0, "required": 2, "max": 2}
    config = second.api.get("/api/config").json()
    assert config["scaling"]["downscale_delay"] == 300.0
    assert len(second.api.wait_alive(2, timeout=45)) == 2
    output = second.output()
    assert "restored" in output and "scaling.max" in output and str(state_file) in output


def test_sleep_wake_then_stop_spending_through_the_api_restarts_at_zero(server_factory,
                                                                         tmp_path):
    """What the GUI's buttons send, then the README's way to stop spending: a required
    recorded by an earlier request must follow bounds a later one moved."""
    state_file = tmp_path / "state.json"
    overrides = {"state_file": str(state_file),
                 "scaling": {"min": 1, "required": 1, "max": 3, "downscale_delay": 600.0}}
    first = server_factory(instances=1, overrides=overrides)
    for body in ({"min": 0}, {"required": 0}, {"required": 3}, {"min": 0, "max": 0}):
        assert first.api.patch("/api/scaling", json=body).status_code == 200, body
    assert first.api.scaling() == {"min": 0, "required": 0, "max": 0}
    assert first.stop() == 0

    second = server_factory(instances=1, overrides=overrides)
    assert second.api.scaling() == {"min": 0, "required": 0, "max": 0}


def test_static_proxies_edited_through_the_api_serve_at_once_and_after_a_restart(
        server_factory, stock_proxies, origin, tmp_path):
    proxy = stock_proxies("tinyproxy", source="127.0.0.231", username="bob",
                          password=STATIC_SECRET)
    url = f"http://bob:{STATIC_SECRET}@127.0.0.1:{proxy.port}"
    name = f"mine-127.0.0.1:{proxy.port}"
    state_file = tmp_path / "state.json"
    overrides = {"state_file": str(state_file),
                 "commander": {"stats_window": 30.0},
                 "scaling": {"min": 1, "required": 1, "max": 1},
                 "providers": [{"type": "static", "name": "mine", "proxies": []}]}
    server = server_factory(overrides=overrides)
    assert server.api.instances() == []
    assert server.api.get("/api/stats").json()["window"] == 30.0

    response = server.api.patch("/api/config",
                                json={"providers": {"mine": {"proxies": [url]}},
                                      "commander": {"stats_window": 120.0}})
    assert response.status_code == 200
    assert server.api.get("/api/stats").json()["window"] == 120.0
    assert response.json()["providers"][0]["proxies"] == [f"http://bob:***@127.0.0.1:{proxy.port}"]
    server.api.wait_alive(1, timeout=30)
    assert [i["name"] for i in server.api.instances()] == [name]
    with requests.Session() as session:
        session.trust_env = False
        answer = session.get(origin.url + "/ip", proxies=server.proxies(), timeout=10)
    assert answer.status_code == 200 and answer.headers["x-cache-proxyname"] == name
    assert answer.text == "127.0.0.231"

    # A key that cannot change live is refused by name, and nothing changes.
    refused = server.api.patch("/api/config", json={"master": {"port": 1},
                                                    "manager": {"check_interval": 1.0}})
    assert refused.status_code == 400 and refused.json()["field"] == "master.port"
    assert "restart" in refused.json()["message"]
    assert server.api.get("/api/config").json()["manager"]["check_interval"] == 0.5

    # The password shows nowhere: answers, the event stream, the log.
    shown = [server.api.get(path).text for path in ("/api/config", "/api/instances",
                                                    "/api/providers")]
    stream = EventStream(server.api.session, server.commander_url + "/api/events")
    try:
        shown.append(repr(stream.until("config").data))
    finally:
        stream.close()
    server.stop()
    shown.append(server.output())
    for text in shown:
        assert STATIC_SECRET not in text

    again = server_factory(overrides=overrides)
    again.api.wait_alive(1, timeout=30)
    assert [i["name"] for i in again.api.instances()] == [name]
    assert again.api.get("/api/stats").json()["window"] == 120.0
    assert STATIC_SECRET not in again.output()


def test_a_failing_provider_shows_its_error_through_the_api(server_factory, tmp_path):
    import socket

    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there: every EC2 call fails to connect
    # The provider retries each call for about 10 s before the manager hears of the error;
    # at shutdown there is nothing to terminate, so skip a second round of retries.
    server = server_factory(overrides={
        "scaling": {"min": 1, "required": 1, "max": 1},
        "manager": {"terminate_on_shutdown": False, "check_url": "http://203.0.113.1/ip"},
        "providers": [{"type": "awsec2", "name": "aws", "region": "eu-west-1",
                       "allowed_cidr": "198.51.100.7/32",
                       "image_id": "ami-12345678", "access_key_id": "AKIDEXAMPLE",
                       "secret_access_key": "AwsSecretKey123",
                       "endpoint_url": f"http://127.0.0.1:{port}"}]})

    def failing():
        providers = server.api.get("/api/providers").json()
        return providers[0]["error"] is not None and providers

    [aws] = wait_until(failing, timeout=30, interval=0.2, message="the provider error")
    assert aws["name"] == "aws" and aws["type"] == "awsec2" and aws["instances"] == 0
    assert aws["error"]["action"] == "list"
    assert str(port) in aws["error"]["message"]
    assert aws["error"]["since"] > 1_600_000_000
    assert server.api.instances() == []
    metrics = server.api.get("/metrics").text
    assert 'scrapoxy_provider_up{provider="aws",type="awsec2"} 0.0' in metrics
    server.stop()
    assert "AwsSecretKey123" not in server.output()
