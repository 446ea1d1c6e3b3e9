"""The manager with ``static`` proxies, which it can use but never create or terminate."""
from __future__ import annotations

import logging

from scrapoxy_server.config import StaticProviderConfig
from scrapoxy_server.models import Scaling
from scrapoxy_server.providers.static import StaticProvider
from tests.manager.fakes import FakeProvider
from tests.manager.test_manager import Lab, new_clock


def static_lab(*, proxies: int, required: int, with_creator: bool = False) -> Lab:
    clock = new_clock()
    static = StaticProvider(reactor=clock, config=StaticProviderConfig(
        name="static", proxies=tuple(f"http://10.0.0.{i}:3128" for i in range(1, proxies + 1)),
        bench=600.0))
    providers = [static] + ([FakeProvider("cloud")] if with_creator else [])
    lab = Lab(providers=providers, scaling=Scaling(min=required, required=required, max=required),
              clock=clock)
    lab.static = static
    return lab


def test_a_shortfall_only_static_proxies_could_fill_is_logged_once_not_every_tick(caplog):
    lab = static_lab(proxies=2, required=3)
    caplog.set_level(logging.INFO, logger="scrapoxy_server.manager")
    lab.manager.start()
    lab.run(60)  # 30 ticks
    lines = [r.getMessage() for r in caplog.records]
    assert [m for m in lines if "wanted" in m] == [
        "1 instance(s) wanted but no provider can create them now "
        "(static proxies only: the pool is their list)"]
    assert not [m for m in lines if "creating" in m]
    # A benched proxy widens the shortfall: that change is logged, once.
    lab.manager.stop_instance(lab.static.proxies[0].id)
    lab.run(60)
    lines = [r.getMessage() for r in caplog.records]
    assert len([m for m in lines if m.startswith("2 instance(s) wanted")]) == 1


def test_creates_go_to_a_provider_that_creates_even_when_static_has_less_load():
    lab = static_lab(proxies=1, required=4, with_creator=True)
    lab.manager.start()
    lab.run(1)
    lab.manager.stop_instance(lab.static.proxies[0].id)  # benched: static's load is 0
    lab.run(10)
    cloud = lab.providers[1]
    assert len(cloud.instances) == 4
    assert sum(call[1] for call in cloud.calls if call[0] == "create") == 4


def test_shutdown_releases_static_proxies_and_says_so():
    lab = static_lab(proxies=2, required=3, with_creator=True)
    lab.manager.start()
    lab.run(4)
    cloud = lab.providers[1]
    created = cloud.names()
    assert len(created) == 1
    result = []
    lab.manager.stop(True).addCallback(result.append)
    report = result[0]
    assert report.terminated == tuple(created)
    assert report.released == ("static-10.0.0.1:3128", "static-10.0.0.2:3128")
    assert lab.static.benched() == {}  # releasing is not benching: nothing was called
    assert report.summary() == (
        f"terminated 1 instance(s): {created[0]}; released 2 proxy(ies) it did not create: "
        "static-10.0.0.1:3128, static-10.0.0.2:3128")


def test_shutdown_names_a_provider_whose_instances_could_not_be_terminated():
    lab = Lab()
    lab.manager.start()
    lab.run(4)
    lab.provider.terminate_instances = lambda ids: (_ for _ in ()).throw(RuntimeError("down"))
    result = []
    lab.manager.stop(True).addCallback(result.append)
    assert result[0].failed == ("fake",)
    assert "COULD NOT terminate the instances of fake" in result[0].summary()
