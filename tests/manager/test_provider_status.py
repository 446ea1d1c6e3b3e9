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


def test_a_failing_terminate_is_shown_backed_off_and_clears_once_it_works():
    lab = Lab()
    lab.manager.start()
    lab.run(4)
    lab.provider.fail_terminate = provider_error("RequestLimitExceeded")
    failed_at = lab.clock.seconds()
    lab.manager.update_scaling({"min": 1, "required": 1, "max": 1})
    lab.run(3)
    [status] = lab.manager.provider_status()
    error = status["error"]
    assert error["action"] == "terminate" and "RequestLimitExceeded" in error["message"]
    assert error["retry_at"] > failed_at
    asked = lab.provider.count("terminate")
    # The planner still wants 2 fewer, but the next try waits for the backoff, not every tick.
    lab.run(error["retry_at"] - lab.clock.seconds() - 1)
    assert lab.provider.count("terminate") == asked
    lab.provider.fail_terminate = None
    lab.run(120)
    [status] = lab.manager.provider_status()
    assert status["error"] is None
    assert len(lab.provider.instances) == 1
