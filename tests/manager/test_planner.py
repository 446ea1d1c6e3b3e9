"""The pure planner, from tables: observed instances + required + now -> commands."""
from __future__ import annotations

import pytest

from scrapoxy_server.models import Status
from scrapoxy_server.planner import InstanceState, Limits, Plan, Reason, plan

LIMITS = Limits(start_timeout=60, dead_after=30, dead_after_failures=3, drain_grace=20)
NOW = 1000.0


def inst(name: str, *, status: Status = Status.STARTED, alive: bool = True,
         has_address: bool = True, age: float = 100, last_alive: float | None = 0,
         failures: int = 0, expires_in: float | None = None, retiring_for: float | None = None,
         inflight: int = 0) -> InstanceState:
    """An instance first seen ``age`` s ago, last alive ``last_alive`` s ago (None: never)."""
    return InstanceState(
        name=name, provider="p", status=status, has_address=has_address, alive=alive,
        first_seen_at=NOW - age,
        last_alive_at=None if last_alive is None else NOW - last_alive,
        failures=failures,
        expires_at=None if expires_in is None else NOW + expires_in,
        retiring=retiring_for is not None,
        retiring_since=None if retiring_for is None else NOW - retiring_for,
        inflight=inflight,
    )


def pending(name: str, *, age: float) -> InstanceState:
    """A cloud VM still pending: no address, never alive."""
    return inst(name, status=Status.STARTING, alive=False, has_address=False, age=age,
                last_alive=None)


CASES = [
    # (id, instances, required, expected plan)
    ("empty pool creates required", [], 3, Plan(create=3)),
    ("full healthy pool does nothing", [inst("a"), inst("b")], 2, Plan()),
    ("starting ones count as active", [pending("a", age=5), inst("b")], 2, Plan()),
    ("stopping and stopped are not counted",
     [inst("a", status=Status.STOPPING), inst("b", status=Status.STOPPED), inst("c")], 2,
     Plan(create=1)),
    ("error status is terminated and replaced",
     [inst("a", status=Status.ERROR, alive=False), inst("b")], 2,
     Plan(create=1, terminate=(("a", Reason.ERROR),))),
    ("dead after consecutive failures",
     [inst("a", alive=False, failures=3, last_alive=6), inst("b")], 2,
     Plan(create=1, terminate=(("a", Reason.DEAD),))),
    ("two failures are not dead yet",
     [inst("a", alive=True, failures=2, last_alive=4), inst("b")], 2, Plan()),
    ("dead after dead_after seconds not alive",
     [inst("a", alive=False, failures=1, last_alive=31), inst("b")], 2,
     Plan(create=1, terminate=(("a", Reason.DEAD),))),
    ("passing last check is healthy however long ago",
     [inst("a", alive=True, failures=0, last_alive=120)], 1, Plan()),
    ("never alive is given start_timeout",
     [inst("a", alive=False, last_alive=None, age=59, failures=10)], 1, Plan()),
    ("never alive past start_timeout is replaced",
     [inst("a", alive=False, last_alive=None, age=60, failures=10)], 1,
     Plan(create=1, terminate=(("a", Reason.START_TIMEOUT),))),
    ("pending without address for 10 min is replaced (H14)",
     [pending("i-1", age=600), inst("i-3")], 2,
     Plan(create=1, terminate=(("i-1", Reason.START_TIMEOUT),))),
    ("surplus terminates not-alive first, then youngest",
     [inst("old", age=500), inst("young", age=10), inst("mid", age=100),
      pending("pend", age=5)], 2,
     Plan(terminate=(("pend", Reason.SURPLUS), ("young", Reason.SURPLUS)))),
    ("required zero terminates all",
     [inst("a"), inst("b")], 0,
     Plan(terminate=(("a", Reason.SURPLUS), ("b", Reason.SURPLUS)))),
    ("expired one retires and is replaced at once",
     [inst("a", expires_in=-1), inst("b", expires_in=100)], 2,
     Plan(create=1, retire=("a",))),
    ("all expired: one alive stays, replacements for all",
     [inst("a", expires_in=-3), inst("b", expires_in=-2), inst("c", expires_in=-1)], 3,
     Plan(create=3, retire=("a", "b"))),
    ("a lone expired instance is held but still replaced",
     [inst("a", expires_in=-1)], 1, Plan(create=1)),
    ("held one retires once its replacement is alive",
     [inst("a", expires_in=-10, age=500), inst("b", age=5)], 1, Plan(retire=("a",))),
    ("held one waits while its replacement starts",
     [inst("a", expires_in=-10, age=500), pending("b", age=5)], 1, Plan()),
    ("expired not-alive one retires without counting against alive",
     [inst("a", expires_in=-1, alive=False, failures=1, last_alive=2), inst("b")], 2,
     Plan(create=1, retire=("a",))),
    ("retiring with in-flight requests keeps draining",
     [inst("a", retiring_for=5, inflight=2), inst("b")], 1, Plan()),
    ("retiring with nothing in flight is terminated",
     [inst("a", retiring_for=5, inflight=0), inst("b")], 1,
     Plan(terminate=(("a", Reason.DRAINED),))),
    ("retiring past drain_grace is terminated",
     [inst("a", retiring_for=20, inflight=4), inst("b")], 1,
     Plan(terminate=(("a", Reason.DRAIN_TIMEOUT),))),
    ("retiring ones are not counted as active",
     [inst("a", retiring_for=1, inflight=1)], 1, Plan(create=1)),
]


@pytest.mark.parametrize("instances,required,expected", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_plan(instances, required, expected):
    assert plan(instances=instances, required=required, now=NOW, limits=LIMITS) == expected


def test_h14_pending_dead_and_healthy_together():
    """i-1 pending without IP, i-2 port closed after being alive, i-3 healthy: the tick plans
    replacements for 1 and 2 and keeps 3."""
    instances = [
        pending("i-1", age=600),
        inst("i-2", alive=False, failures=3, last_alive=6),
        inst("i-3"),
    ]
    result = plan(instances=instances, required=3, now=NOW, limits=LIMITS)
    assert dict(result.terminate) == {"i-1": Reason.START_TIMEOUT, "i-2": Reason.DEAD}
    assert result.create == 2
    assert "i-3" not in dict(result.terminate)


def test_retiring_never_drops_alive_to_zero_with_dead_neighbours():
    instances = [inst("a", expires_in=-1), inst("b", alive=False, failures=1, last_alive=2)]
    result = plan(instances=instances, required=2, now=NOW, limits=LIMITS)
    assert result.retire == ()
