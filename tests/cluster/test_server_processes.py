"""``master.processes = 2``: a real server and its master worker on one port, one pool view."""
from __future__ import annotations

import os

import requests

from tests.support import wait_until


def _children_running(pid: int, marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                command = cmdline.read().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid and marker in command:
            found.append(int(entry))
    return found


def test_two_master_processes_serve_one_port_report_to_one_commander_and_stop_together(
        server_factory, origin):
    server = server_factory(overrides={"master": {"processes": 2}}, instances=2)
    server.api.wait_alive(2, timeout=45)
    (worker,) = wait_until(lambda: _children_running(server.process.pid,
                                                     "scrapoxy_server.cluster.worker"),
                           timeout=20, message="the master worker")
    statuses = []
    for _ in range(40):  # a new connection each time: the kernel spreads connections
        with requests.Session() as session:
            session.trust_env = False
            response = session.get(f"{origin.url}/headers", proxies=server.proxies(), timeout=10)
            statuses.append(response.status_code)
    assert statuses == [200] * 40
    # Both processes' requests are counted by the one commander.
    wait_until(lambda: server.api.get("/api/stats").json()["totals"]["global"]["requests"] >= 40,
               timeout=10, message="40 requests in the stats")
    # A live config change reaches the worker too: every new connection is refused now.
    changed = server.api.patch("/api/config", json={"master": {"deny": ["127.0.0.1"]}})
    assert changed.status_code == 200, changed.text
    refused = []
    for _ in range(20):
        with requests.Session() as session:
            session.trust_env = False
            refused.append(session.get(f"{origin.url}/headers", proxies=server.proxies(),
                                       timeout=10).status_code)
    assert refused == [403] * 20
    assert server.stop() == 0
    assert not server.orphans_killed
    assert _children_running(server.process.pid, "scrapoxy_server.cluster.worker") == []
    output = server.output()
    assert f"1 master worker(s) serve on port {server.master_port}: pids {worker}" in output
    # The worker served its share, before and after the change (its access log lines).
    served = [line for line in output.splitlines() if f"worker {worker} scrapoxy.access" in line]
    assert any("status=200" in line for line in served), output[-3000:]
    assert any("status=403" in line for line in served), output[-3000:]
