"""``Manager.reconfigure``: new intervals and limits from ``PATCH /api/config``, at once."""
from __future__ import annotations

from dataclasses import replace

from tests.manager.test_manager import CONFIG, Lab


def lists(lab) -> int:
    return lab.provider.count("list")


def test_a_shorter_check_interval_pulls_the_next_tick_in():
    lab = Lab(config=replace(CONFIG, check_interval=60.0))
    lab.manager.start()
    lab.run(1)
    before = lists(lab)
    lab.manager.reconfigure(manager_config=replace(CONFIG, check_interval=1.0),
                            downscale_delay=600.0)
    lab.run(10)
    # Without the change the next tick would come at 60 s.
    assert lists(lab) - before >= 9


def test_a_longer_check_interval_slows_the_ticks_down():
    lab = Lab(config=replace(CONFIG, check_interval=1.0))
    lab.manager.start()
    lab.run(2)
    lab.manager.reconfigure(manager_config=replace(CONFIG, check_interval=30.0),
                            downscale_delay=600.0)
    lab.run(2)
    before = lists(lab)
    lab.run(25)
    assert lists(lab) - before <= 1


def test_a_shorter_downscale_delay_puts_the_pool_to_sleep_sooner():
    from scrapoxy_server.models import Scaling

    lab = Lab(scaling=Scaling(min=1, required=3, max=3), downscale_delay=600.0)
    lab.manager.start()
    lab.run(4)
    lab.manager.reconfigure(manager_config=CONFIG, downscale_delay=5.0)
    lab.run(8)
    assert lab.manager.get_scaling().required == 1
