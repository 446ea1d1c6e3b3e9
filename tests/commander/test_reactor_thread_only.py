"""Views change manager state only on the reactor thread, even under concurrent load.

A real ``Manager`` (fake provider and health checker) ticks every 50 ms on the session's
reactor while eight client threads hammer ``PATCH /api/scaling`` and
``POST /api/instances/stop`` through Twisted's WSGI container. Every facade call and every
state change is checked against the reactor thread's identity.
"""
from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from scrapoxy_server.config import ManagerConfig, validate_scaling
from scrapoxy_server.manager import Manager
from scrapoxy_server.models import Scaling
from scrapoxy_server.pool import InstancePool
from scrapoxy_server.stats import Stats
from tests.commander.served import serve_commander
from tests.manager.fakes import FakeHealth, FakeProvider

REQUESTS_PER_THREAD = 40


class ThreadCheckingManager(Manager):
    """Records every facade call and state change made off the reactor thread."""

    reactor_ident: int = 0
    off_reactor: list[str]

    def _check(self, what: str) -> None:
        if threading.get_ident() != self.reactor_ident:
            self.off_reactor.append(what)

    def list_instances(self):
        self._check("list_instances")
        return super().list_instances()

    def get_scaling(self):
        self._check("get_scaling")
        return super().get_scaling()

    def update_scaling(self, changes):
        self._check("update_scaling")
        return super().update_scaling(changes)

    def stop_instance(self, name):
        self._check("stop_instance")
        return super().stop_instance(name)

    def _set_scaling(self, scaling):
        self._check("_set_scaling")
        return super()._set_scaling(scaling)

    def _terminate(self, provider_name, names):
        self._check("_terminate")
        return super()._terminate(provider_name, names)

    def _publish(self):
        self._check("_publish")
        return super()._publish()


@pytest.fixture
def ticking_manager(reactor_thread):
    reactor = reactor_thread.reactor
    provider = FakeProvider("fake")
    config = ManagerConfig(check_interval=0.05, alive_check_interval=0.05)

    def build():
        manager = ThreadCheckingManager(
            reactor=reactor, providers=[provider], pool=InstancePool(), stats=Stats(),
            health=FakeHealth(), manager_config=config,
            scaling=Scaling(min=1, required=3, max=5), downscale_delay=600.0)
        manager.reactor_ident = threading.get_ident()
        manager.off_reactor = []
        manager.start()
        return manager

    manager = reactor_thread.call(build)
    yield manager, provider
    reactor_thread.call(manager.stop, False)


def test_hammering_scaling_and_stop_changes_state_only_on_the_reactor(reactor_thread,
                                                                       ticking_manager):
    from tests.support import wait_until

    manager, provider = ticking_manager
    wait_until(lambda: reactor_thread.call(manager.alive_count) >= 3, timeout=10,
               message="3 alive instances")
    with serve_commander(reactor_thread, manager, threads=4) as served:
        def patch_scaling(seed: int) -> list[int]:
            rng = random.Random(seed)
            session = served.session()
            statuses = []
            for _ in range(REQUESTS_PER_THREAD):
                low = rng.randint(0, 3)
                high = rng.randint(low, 6)
                body = rng.choice([
                    {"min": low, "required": rng.randint(low, high), "max": high},
                    {"required": rng.randint(0, 6)},  # often out of bounds: 400
                    {"max": -1},
                ])
                statuses.append(session.patch(f"{served.base}/api/scaling", json=body,
                                              timeout=10).status_code)
            return statuses

        def stop_instances(seed: int) -> list[int]:
            rng = random.Random(seed)
            session = served.session()
            statuses = []
            for _ in range(REQUESTS_PER_THREAD):
                names = [i["name"] for i in session.get(f"{served.base}/api/instances",
                                                        timeout=10).json()]
                name = rng.choice(names) if names and rng.random() < 0.8 else "nosuch"
                statuses.append(session.post(f"{served.base}/api/instances/stop",
                                             json={"name": name}, timeout=10).status_code)
            return statuses

        with ThreadPoolExecutor(max_workers=8) as executor:
            futures = [executor.submit(patch_scaling, seed) for seed in range(4)]
            futures += [executor.submit(stop_instances, seed) for seed in range(4, 8)]
            results = [f.result(timeout=60) for f in futures]

    scaling_statuses = {s for r in results[:4] for s in r}
    stop_statuses = {s for r in results[4:] for s in r}
    assert scaling_statuses <= {200, 204, 400}
    assert 200 in scaling_statuses and 400 in scaling_statuses
    assert stop_statuses <= {200, 404}
    assert 200 in stop_statuses
    assert manager.off_reactor == []
    final = reactor_thread.call(manager.get_scaling)
    validate_scaling(final.as_dict())
    # The manager kept ticking throughout: instances were stopped and replaced.
    assert provider.count("terminate") > 0 and provider.count("create") > 1
    assert manager.off_reactor == []
