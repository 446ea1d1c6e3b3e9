"""Real master worker processes sharing a port with the leader's master (SO_REUSEPORT)."""
from __future__ import annotations

import requests

from scrapoxy_server.cluster.leader import MasterWorkers
from scrapoxy_server.cluster.listen import listen_shared
from scrapoxy_server.cluster.messages import settings_to_wire
from scrapoxy_server.instance.proxy import InstanceSettings, listen
from scrapoxy_server.master.proxy import MasterFactory, MasterSettings
from scrapoxy_server.master.tls import TlsCreators
from scrapoxy_server.models import Address, Endpoint
from scrapoxy_server.pool import InstancePool
from scrapoxy_server.stats import Stats
from tests.support import wait_until

SETTINGS = MasterSettings(connect_timeout=3.0, idle_timeout=5.0, wait_for_instance=0.0)


def test_workers_share_the_port_and_report_every_request_to_the_leader(reactor_thread, origin):
    reactor = reactor_thread.reactor
    instance_port = reactor_thread.call(listen, reactor, host="127.0.0.1", port=0,
                                        settings=InstanceSettings(source="127.0.0.41"))
    pool, worker_stats, leader_stats = InstancePool(), Stats(), Stats()
    factory = MasterFactory(reactor=reactor, pool=pool, stats=leader_stats, settings=SETTINGS,
                            auth=None, tls=TlsCreators(verify=True, ca_file=None))
    port = reactor_thread.call(listen_shared, reactor, host="127.0.0.1", port=0,
                               factory=factory, backlog=128)
    master_port = port.getHost().port
    start = {"kind": "start", "host": "127.0.0.1", "port": master_port, "backlog": 128,
             "settings": settings_to_wire(SETTINGS), "auth": None,
             "tls": {"verify": True, "ca_file": None}, "log_level": "WARNING"}
    workers = MasterWorkers(reactor=reactor, count=2, start_message=start, pool=pool,
                            stats=worker_stats)
    woken = []
    reactor_thread.call(pool.on_activity, lambda: woken.append(1))
    try:
        reactor_thread.call(workers.start)
        endpoint = Endpoint("p1", Address("127.0.0.1", instance_port.getHost().port))
        reactor_thread.call(pool.publish, [endpoint])
        proxies = {"http": f"http://127.0.0.1:{master_port}"}

        def fetch_all() -> list[int]:
            statuses = []
            for _ in range(60):
                # A new connection each time: the kernel spreads connections, not requests.
                with requests.Session() as session:
                    response = session.get(f"{origin.url}/headers", proxies=proxies, timeout=10)
                statuses.append(response.status_code)
                assert response.headers["x-cache-proxyname"] == "p1"
            return statuses

        # A worker may get the pool a moment after the leader: retry until all answer 200.
        wait_until(lambda: set(fetch_all()) == {200}, timeout=20, message="all 200")
        served = wait_until(
            lambda: (worker_stats.total.requests + leader_stats.total.requests) % 60 == 0
            and worker_stats.total.requests, timeout=10, message="worker reports")
        assert served > 0 and leader_stats.total.requests > 0
        assert worker_stats.requests_of("p1") == worker_stats.total.requests
        assert woken, "worker activity should reach the leader's pool"
        pids = workers.pids()
        assert len(pids) == 2
    finally:
        reactor_thread.call(workers.stop)
        reactor_thread.call(port.stopListening)
        reactor_thread.call(instance_port.stopListening)
    assert workers.pids() == []
