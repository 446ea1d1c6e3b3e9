"""``Manager.provider_status``: what the API shows of each provider, errors included."""
from __future__ import annotations

from tests.manager.fakes import FakeProvider, provider_error
from tests.manager.test_manager import Lab


def test_a_capacity_error_is_shown_with_its_action_start_and_next_try():
    lab = Lab()
    lab.provider.fail_create = provider_error("VcpuLimitExceeded", retryable=False)
    started = lab.clock.seconds()
    lab.manager.start()
    lab.run(10)
    [status] = lab.manager.provider_status()
    assert status["name"] == "fake" and status["instances"] == 0 and status["alive"] == 0
    error = status["error"]
    assert error["action"] == "create"
    assert "VcpuLimitExceeded" in error["message"]
    assert error["since"] == started and error["failures"] == 1
    assert error["retry_at"] == started + 60.0


def test_the_error_clears_and_counts_show_once_the_provider_works_again():
    lab = Lab()
    lab.provider.fail_create = provider_error("VcpuLimitExceeded", retryable=False)
    lab.manager.start()
    lab.run(5)
    lab.provider.fail_create = None
    lab.run(70)
    [status] = lab.manager.provider_status()
    assert status["error"] is None
    assert status["instances"] == 3 and status["alive"] == 3


def test_a_failing_listing_is_reported_per_provider():
    good, bad = FakeProvider("good"), FakeProvider("bad")
    bad.fail_list = provider_error("AuthFailure")
    lab = Lab(providers=[good, bad])
    lab.manager.start()
    lab.run(4)
    by_name = {s["name"]: s for s in lab.manager.provider_status()}
    assert by_name["good"]["error"] is None and by_name["good"]["instances"] == 3
    assert by_name["bad"]["error"]["action"] == "list"
    assert "AuthFailure" in by_name["bad"]["error"]["message"]
