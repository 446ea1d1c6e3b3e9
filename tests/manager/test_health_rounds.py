"""Health rounds on a task.Clock: a hung instance delays nobody, a dead one is not shown alive."""
from __future__ import annotations

from twisted.internet import defer

from scrapoxy_server.config import ManagerConfig
from scrapoxy_server.models import Scaling
from tests.manager.test_manager import Lab

CONFIG = ManagerConfig(check_interval=2.0, alive_check_interval=2.0, check_timeout=5.0,
                       dead_after_failures=3, dead_after=30.0, start_timeout=60.0)


def test_a_hung_instance_does_not_delay_the_other_instances_checks():
    lab = Lab(config=CONFIG)
    lab.manager.start()
    lab.run(4)
    hung, *others = lab.provider.names()
    lab.health.hanging.add(hung)
    before = list(lab.health.checked)
    lab.run(20)
    checked = lab.health.checked[len(before):]
    # Every round (each 2 s) checks the healthy ones on time...
    for name in others:
        assert checked.count(name) == 10
    # ...while the hung one is probed again only once its previous check gave up
    # (check_timeout + 1 s of slack), not piled up every round.
    assert 2 <= checked.count(hung) <= 4
    assert sorted(lab.routable()) == sorted(others)  # dead after 3 failures, replaced


def test_rounds_start_on_time_while_a_check_hangs():
    lab = Lab(config=CONFIG)
    lab.manager.start()
    lab.run(4)
    lab.health.hanging.update(lab.provider.names()[:1])
    rounds = []
    original = lab.manager._check_health

    def counting() -> None:
        rounds.append(lab.clock.seconds())
        original()

    lab.manager._check_health = counting
    lab.run(10)
    assert len(rounds) == 5


def test_instance_terminated_as_dead_by_time_is_not_shown_alive_while_it_stops():
    # Many failures allowed, so only dead_after (time since the last passing check) kills it.
    config = ManagerConfig(check_interval=2.0, alive_check_interval=2.0, dead_after_failures=100,
                           dead_after=10.0, start_timeout=60.0)
    lab = Lab(config=config, scaling=Scaling(min=1, required=1, max=1))
    lab.manager.start()
    lab.run(4)
    (victim,) = lab.provider.names()
    lab.provider.terminate_instances = lambda ids: defer.Deferred()  # stopping takes a while
    lab.health.failing.add(victim)
    lab.run(12)
    (shown,) = [i for i in lab.manager.list_instances() if i["name"] == victim]
    assert shown["status"] == "stopping"
    assert shown["alive"] is False
    assert victim not in lab.routable()
