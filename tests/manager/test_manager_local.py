"""The manager, the local provider and the health checker together on the real reactor."""
from __future__ import annotations

import sys

from scrapoxy_server.config import LocalProviderConfig, ManagerConfig
from scrapoxy_server.health import HealthChecker
from scrapoxy_server.manager import Manager
from scrapoxy_server.models import Scaling
from scrapoxy_server.pool import InstancePool
from scrapoxy_server.providers.local import LocalProvider
from scrapoxy_server.stats import Stats
from tests.manager.test_local_provider import STUB
from tests.support import wait_until


def test_local_pool_comes_up_alive_with_distinct_fingerprints_and_stops(reactor_thread):
    providers = []

    reactor = reactor_thread.reactor
    config = ManagerConfig(check_interval=0.2, alive_check_interval=0.2, check_timeout=2)
    pool = InstancePool()

    def build():
        provider = LocalProvider(reactor=reactor, config=LocalProviderConfig(
            name="loc", command=(sys.executable, STUB)), kill_after=2)
        providers.append(provider)
        manager = Manager(
            reactor=reactor, providers=[provider], pool=pool, stats=Stats(),
            health=HealthChecker(reactor=reactor, url="http://127.0.0.1:9/ip", timeout=2),
            manager_config=config, scaling=Scaling(min=2, required=2, max=2),
            downscale_delay=600)
        manager.start()
        return manager

    manager = reactor_thread.call(build)
    try:
        wait_until(lambda: len(pool.alive()) == 2, timeout=20, message="two alive instances")
        listed = reactor_thread.call(manager.list_instances)
        assert sorted(i["fingerprint"] for i in listed) == ["127.0.0.2", "127.0.0.3"]
        victim = listed[0]["name"]
        assert reactor_thread.call(manager.stop_instance, victim) == 1
        wait_until(lambda: len(pool.alive()) == 2 and victim not in [e.name for e in pool.alive()],
                   timeout=20, message="a replacement")
    finally:
        names = reactor_thread.call(manager.stop, True).terminated
        reactor_thread.call(providers[0].shutdown)
    assert len(names) == 2
    assert pool.alive() == ()
