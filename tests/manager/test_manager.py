"""The manager's loops on a task.Clock with a fake provider and a fake health checker."""
from __future__ import annotations

import random

import pytest
from twisted.internet import defer, task

from scrapoxy_server.config import AutorestartConfig, ConfigError, ManagerConfig
from scrapoxy_server.manager import Manager
from scrapoxy_server.models import Address, Scaling, Status
from scrapoxy_server.pool import InstancePool
from scrapoxy_server.stats import Stats
from tests.manager.fakes import FakeHealth, FakeProvider, provider_error

CONFIG = ManagerConfig(check_interval=2.0, alive_check_interval=2.0, dead_after_failures=3,
                       dead_after=30.0, start_timeout=60.0, drain_grace=30.0)


def new_clock() -> task.Clock:
    clock = task.Clock()
    clock.advance(1_700_000_000)
    return clock


class Lab:
    def __init__(self, *, providers=None, scaling=Scaling(min=3, required=3, max=3),
                 config=CONFIG, downscale_delay=600.0, clock=None):
        # Pass ``clock`` when a provider needs the same clock as the manager.
        self.clock = clock if clock is not None else new_clock()
        self.providers = providers if providers is not None else [FakeProvider("fake")]
        self.provider = self.providers[0]
        self.pool = InstancePool()
        self.stats = Stats()
        self.health = FakeHealth()
        self.changes: list[str] = []
        self.manager = Manager(
            reactor=self.clock, providers=self.providers, pool=self.pool, stats=self.stats,
            health=self.health, manager_config=config, scaling=scaling,
            downscale_delay=downscale_delay, rng=random.Random(7),
        )
        self.manager.on_change(self.changes.append)

    def run(self, seconds: float, *, step: float = 1.0, each=None) -> None:
        for _ in range(int(seconds / step)):
            self.clock.advance(step)
            if each is not None:
                each()

    def routable(self) -> list[str]:
        return [e.name for e in self.pool.alive()]


@pytest.fixture
def lab():
    return Lab()


def test_scales_to_required_and_publishes_alive_instances(lab):
    lab.manager.start()
    lab.run(4)
    assert len(lab.provider.instances) == 3
    assert sorted(lab.routable()) == lab.provider.names()
    assert all(i["fingerprint"].startswith("127.0.0.") for i in lab.manager.list_instances())
    assert lab.manager.alive_count() == 3


def test_start_does_nothing_until_called(lab):
    lab.clock.advance(100)
    assert lab.provider.calls == []


def test_one_failed_check_does_not_flap_an_instance(lab):
    lab.manager.start()
    lab.run(4)
    victim = lab.provider.names()[0]
    lab.health.failing.add(victim)
    lab.run(2)
    assert victim in lab.routable()
    lab.health.failing.discard(victim)
    lab.run(2)
    assert victim in lab.routable()
    assert [i for i in lab.manager.list_instances() if i["name"] == victim][0]["error"] is None


def test_dead_instance_is_unpublished_terminated_and_replaced(lab):
    lab.manager.start()
    lab.run(4)
    victim = lab.provider.names()[0]
    lab.health.failing.add(victim)
    lab.run(6)  # three failed rounds
    assert victim not in lab.routable()
    lab.run(4)
    assert victim in lab.provider.terminated
    assert len(lab.provider.instances) == 3
    assert len(lab.routable()) == 3


def test_master_failures_count_like_failed_checks(lab):
    lab.manager.start()
    lab.run(4)
    victim = lab.provider.names()[0]
    lab.health.failing.add(victim)
    for _ in range(3):
        lab.pool.report_failure(victim)
    assert victim not in lab.routable()


def test_h14_pending_dead_and_healthy(lab):
    """i-1 pending with no address for 10 minutes, i-2 running with its port closed, i-3
    healthy: i-3 serves throughout, i-1 and i-2 are replaced after the start timeout."""
    lab.provider.add("i-1", status=Status.STARTING, address=None)
    lab.provider.add("i-2", address=Address("127.0.0.1", 1))
    lab.provider.add("i-3", address=Address("127.0.0.1", 3))
    lab.health.failing.add("i-2")
    lab.manager.start()
    seen: list[list[str]] = []
    lab.run(58, each=lambda: seen.append(lab.routable()))
    assert all(r == ["i-3"] for r in seen)
    assert {"i-1", "i-2"} <= set(lab.provider.instances)
    i2 = [i for i in lab.manager.list_instances() if i["name"] == "i-2"][0]
    assert i2["alive"] is False and "refused" in i2["error"]
    lab.run(600, each=lambda: seen.append(lab.routable()))
    assert "i-3" in lab.routable()
    assert {"i-1", "i-2"} <= set(lab.provider.terminated)
    assert len(lab.provider.instances) == 3 and len(lab.routable()) == 3


def test_h14_alive_instance_whose_port_closes_is_dead_after_failures(lab):
    lab.provider.add("i-2", address=Address("127.0.0.1", 1))
    lab.provider.add("i-3", address=Address("127.0.0.1", 3))
    lab.manager.start()
    lab.run(2)
    lab.health.failing.add("i-2")
    lab.run(4)
    assert "i-2" in lab.routable()  # two failures: not yet
    lab.run(2)
    assert lab.routable() == sorted(n for n in lab.provider.names() if n != "i-2")
    lab.run(2)
    assert "i-2" in lab.provider.terminated
    lab.run(4)
    assert len(lab.routable()) == 3


def test_failing_provider_is_backed_off_and_retried_with_the_loop_alive(lab):
    lab.provider.fail_list = provider_error("DescribeInstances throttled")
    lab.manager.start()
    lab.run(60)
    lists = lab.provider.count("list")
    # 2, 4, 8, 16, 32 s apart instead of every 2 s.
    assert 3 <= lists <= 7
    assert lab.provider.count("create") == 0  # never create blind
    assert "throttled" in lab.manager.provider_errors()["fake"]
    lab.provider.fail_list = None
    lab.run(70)
    assert len(lab.provider.instances) == 3
    assert lab.manager.provider_errors() == {}


def test_failing_provider_keeps_its_previous_observation(lab):
    lab.manager.start()
    lab.run(4)
    before = lab.routable()
    lab.provider.fail_list = provider_error()
    lab.run(20)
    assert lab.routable() == before
    assert lab.provider.count("create") == 1


def test_provider_raising_synchronously_does_not_stop_the_loop(lab):
    def broken():
        raise RuntimeError("bug in provider")

    lab.provider.list_instances = broken
    lab.manager.start()
    lab.run(10)
    del lab.provider.list_instances  # back to the class method
    lab.run(70)
    assert len(lab.provider.instances) == 3


def test_capacity_error_on_create_is_tried_once_per_backoff_window(lab):
    lab.provider.fail_create = provider_error("VcpuLimitExceeded", retryable=False)
    lab.manager.start()
    lab.run(59)
    assert lab.provider.count("create") == 1
    assert "VcpuLimitExceeded" in lab.manager.provider_errors()["fake"]
    lab.run(2)
    assert lab.provider.count("create") == 2
    assert lab.provider.terminated == []


def test_creation_spreads_over_providers():
    a, b = FakeProvider("a"), FakeProvider("b")
    lab = Lab(providers=[a, b], scaling=Scaling(min=4, required=4, max=4))
    lab.manager.start()
    lab.run(2)
    assert len(a.instances) == 2 and len(b.instances) == 2


def test_one_failing_provider_does_not_stop_the_other():
    a, b = FakeProvider("a"), FakeProvider("b")
    a.fail_list = provider_error("down")
    lab = Lab(providers=[a, b], scaling=Scaling(min=2, required=2, max=2))
    lab.manager.start()
    lab.run(4)
    assert len(b.instances) == 2 and len(a.instances) == 0
    assert len(lab.routable()) == 2


def test_wakes_on_activity_and_sleeps_after_downscale_delay():
    lab = Lab(scaling=Scaling(min=1, required=1, max=4), downscale_delay=60)
    lab.manager.start()
    lab.run(4)
    assert len(lab.provider.instances) == 1
    lab.pool.activity()
    assert lab.manager.get_scaling() == Scaling(min=1, required=4, max=4)
    lab.run(4)
    assert len(lab.provider.instances) == 4
    for _ in range(5):  # keeps being used: stays awake
        lab.run(20)
        lab.pool.activity()
    assert len(lab.provider.instances) == 4
    lab.run(62)
    assert lab.manager.get_scaling().required == 1
    assert len(lab.provider.instances) == 1
    assert "scaling" in lab.changes


def test_configured_required_above_min_sleeps_after_delay_without_requests():
    lab = Lab(scaling=Scaling(min=0, required=2, max=2), downscale_delay=30)
    lab.manager.start()
    lab.run(4)
    assert len(lab.provider.instances) == 2
    lab.run(30)
    assert lab.manager.get_scaling().required == 0
    assert lab.provider.instances == {}


def test_autorestart_drains_and_never_drops_alive_to_zero():
    config = ManagerConfig(check_interval=2, alive_check_interval=2, drain_grace=30,
                           autorestart=AutorestartConfig(min=100, max=120))
    lab = Lab(scaling=Scaling(min=2, required=2, max=2), config=config)
    lab.manager.start()
    lab.run(4)
    first = set(lab.provider.names())
    # Keep a request in flight on every instance: retiring ones must wait for it.
    for name in first:
        lab.pool.acquire(name)
    counts = []
    lab.run(130, each=lambda: counts.append(len(lab.routable())))
    assert min(counts) >= 1
    assert first <= set(lab.provider.names())  # still draining
    retiring = [i["name"] for i in lab.manager.list_instances() if i["retiring"]]
    assert retiring and set(retiring) <= first
    assert not set(retiring) & set(lab.routable())
    for name in first:
        lab.pool.release(name)
    lab.run(4, each=lambda: counts.append(len(lab.routable())))
    assert not first & set(lab.provider.names())
    assert len(lab.provider.instances) == 2
    assert min(counts) >= 1


def test_autorestart_of_a_single_instance_keeps_it_until_the_replacement_is_alive():
    config = ManagerConfig(check_interval=2, alive_check_interval=2,
                           autorestart=AutorestartConfig(min=50, max=50))
    lab = Lab(scaling=Scaling(min=1, required=1, max=1), config=config)
    lab.manager.start()
    lab.run(4)
    (first,) = lab.provider.names()
    counts = []
    lab.run(70, each=lambda: counts.append(len(lab.routable())))
    assert first in lab.provider.terminated
    assert min(counts) >= 1
    assert len(lab.provider.instances) == 1


def test_drain_grace_bounds_a_stuck_request():
    config = ManagerConfig(check_interval=2, alive_check_interval=2, drain_grace=10,
                           autorestart=AutorestartConfig(min=20, max=20))
    lab = Lab(scaling=Scaling(min=2, required=2, max=2), config=config)
    lab.manager.start()
    lab.run(2)
    first = set(lab.provider.names())
    for name in first:
        lab.pool.acquire(name)  # never released
    lab.run(60)
    assert first <= set(lab.provider.terminated)


def test_stop_instance_terminates_now_and_is_replaced(lab):
    lab.manager.start()
    lab.run(4)
    victim = lab.provider.names()[0]
    assert lab.manager.stop_instance(victim) == 2
    assert victim in lab.provider.terminated
    assert victim not in lab.routable()
    lab.run(4)
    assert len(lab.routable()) == 3


def test_an_instance_on_its_way_out_is_not_reported_dead(lab, caplog):
    """Stopped through the API, its port closes before the provider says it is gone: the
    master's failures to reach it are expected, not a death worth a warning."""
    lab.manager.start()
    lab.run(4)
    victim = lab.provider.names()[0]
    lab.provider.hold_terminations = True  # the provider takes a while, as EC2 does
    lab.manager.stop_instance(victim)
    for _ in range(5):
        lab.pool.report_failure(victim)
    assert not [r for r in caplog.records if "is dead after" in r.getMessage()]


def test_stop_instance_unknown_name_raises_key_error(lab):
    lab.manager.start()
    with pytest.raises(KeyError):
        lab.manager.stop_instance("nosuch")


def test_update_scaling_validates_merges_and_reports_no_change():
    lab = Lab(scaling=Scaling(min=1, required=2, max=3))
    with pytest.raises(ConfigError) as err:
        lab.manager.update_scaling({"min": 5, "required": 2, "max": 3})
    assert err.value.path in ("min", "required")
    with pytest.raises(ConfigError) as err:
        lab.manager.update_scaling({"min": -1})
    assert err.value.path == "min"
    with pytest.raises(ConfigError) as err:
        lab.manager.update_scaling({"max": "ten"})
    assert err.value.path == "max"
    with pytest.raises(ConfigError) as err:
        lab.manager.update_scaling({"bogus": 1})
    assert err.value.path == "bogus"
    assert lab.manager.get_scaling() == Scaling(min=1, required=2, max=3)
    assert lab.manager.update_scaling({"min": 1, "required": 2, "max": 2}) == Scaling(1, 2, 2)
    assert lab.manager.update_scaling({"min": 1, "required": 2, "max": 2}) is None
    # required follows min/max when not given
    assert lab.manager.update_scaling({"max": 1}) == Scaling(min=1, required=1, max=1)
    assert lab.manager.update_scaling({"min": 4, "max": 6}) == Scaling(min=4, required=4, max=6)
    assert lab.changes.count("scaling") == 3


def test_list_instances_has_the_api_shape(lab):
    lab.stats.record(instance="fake-1", status=200, error=None, bytes_in=1, bytes_out=1,
                     duration=0.1)
    lab.manager.start()
    lab.run(2)
    item = [i for i in lab.manager.list_instances() if i["name"] == "fake-1"][0]
    assert item["provider"] == "fake" and item["status"] == "started" and item["alive"] is True
    assert item["address"] == {"hostname": "127.0.0.1", "port": 10001}
    assert item["requests"] == 1
    assert item["started_at"] == pytest.approx(1_700_000_000, abs=5)
    assert {"fingerprint", "region", "error"} <= set(item)


def test_instance_without_address_lists_with_null_address(lab):
    lab.provider.add("pending", status=Status.STARTING, address=None)
    lab.manager.start()
    item = [i for i in lab.manager.list_instances() if i["name"] == "pending"][0]
    assert item["address"] is None and item["alive"] is False and item["status"] == "starting"


def test_stop_terminates_everything_and_stops_the_loops(lab):
    lab.manager.start()
    lab.run(4)
    names = lab.provider.names()
    result = []
    lab.manager.stop(True).addCallback(result.append)
    assert sorted(result[0].terminated) == names
    assert result[0].summary() == f"terminated 3 instance(s): {', '.join(result[0].terminated)}"
    assert lab.provider.instances == {}
    calls = len(lab.provider.calls)
    lab.run(20)
    assert len(lab.provider.calls) == calls
    assert lab.routable() == []


def test_stop_without_terminate_leaves_instances(lab):
    lab.manager.start()
    lab.run(2)
    result = []
    lab.manager.stop(False).addCallback(result.append)
    assert result[0].terminated == () and len(lab.provider.instances) == 3


def test_slow_provider_call_times_out_and_the_loop_continues(lab):
    lab.provider.list_instances = lambda: defer.Deferred()  # never answers
    lab.manager.start()
    lab.run(130)
    assert "TimeoutError" in lab.manager.provider_errors()["fake"] or \
        "Cancelled" in lab.manager.provider_errors()["fake"]
    del lab.provider.list_instances
    lab.run(130)
    assert len(lab.provider.instances) == 3


def test_instance_changes_are_announced(lab):
    lab.manager.start()
    lab.run(4)
    assert "instances" in lab.changes


def test_instances_that_served_traffic_are_not_probed_but_stay_alive(lab):
    lab.manager.start()
    lab.run(4)
    busy, *quiet = lab.provider.names()
    lab.health.checked.clear()
    for _ in range(60):
        lab.pool.served(busy)
        lab.run(1)
    assert busy not in lab.health.checked
    assert set(quiet) <= set(lab.health.checked)
    assert busy in lab.routable()
    record = [i for i in lab.manager.list_instances() if i["name"] == busy][0]
    assert record["alive"] is True


def test_an_instance_with_reported_faults_is_probed_even_if_it_also_served(lab):
    lab.manager.start()
    lab.run(4)
    flaky = lab.provider.names()[0]
    lab.health.failing.add(flaky)
    lab.health.checked.clear()
    for _ in range(10):
        lab.pool.served(flaky)
        lab.pool.report_failure(flaky)
        lab.run(1)
    assert flaky in lab.health.checked
    assert flaky not in lab.routable()


def test_serving_does_not_make_a_never_checked_instance_alive(lab):
    lab.provider.add("i-new", address=Address("127.0.0.1", 7))
    lab.health.failing.add("i-new")
    lab.manager.start()
    for _ in range(10):
        lab.pool.served("i-new")
        lab.run(1)
    assert "i-new" in lab.health.checked
    assert "i-new" not in lab.routable()


def test_a_large_pool_is_probed_in_small_bursts_not_all_in_one_turn():
    lab = Lab(scaling=Scaling(min=100, required=100, max=100))
    for i in range(100):
        lab.provider.add(f"i-{i:03}", address=Address("127.0.0.1", 20000 + i))
    lab.manager.start()  # the first tick lists them, the first health round starts
    assert len(lab.health.checked) == 25
    lab.clock.advance(0.011)
    assert len(lab.health.checked) == 50
    lab.clock.advance(0.02)
    assert sorted(lab.health.checked) == sorted(lab.provider.names())
