"""The manager's decision: what must change in the pool, as a pure function.

``plan(...)`` takes what the manager observed (one ``InstanceState`` per instance), the wanted
size and the limits, and returns the commands: how many instances to create, which to terminate
(with the reason) and which to start retiring. No I/O and no clock: ``now`` is a parameter, so
every rule is tested from tables.

Rules (DESIGN, "Manager: the lifecycle contract"):

- Instances the provider reports ``stopping``/``stopped`` are already on their way out: they
  are neither counted nor acted on.
- Terminated at once: status ``error``; *dead* ones (were alive once, then failed
  ``dead_after_failures`` checks in a row, or have not passed a check for ``dead_after``
  seconds); ones never alive ``start_timeout`` seconds after first sight. An instance with no
  address yet is simply not alive: it falls under the start timeout and nothing else (H14).
- A retiring instance is terminated once its in-flight count reaches 0 or ``drain_grace``
  seconds have passed since it started retiring.
- Expired ones (living limit reached) start retiring, oldest deadline first, and a replacement is
  created at once; but never so many that no alive, non-retiring instance would be left. An
  expired instance held back by that rule is kept *in addition to* ``required`` so that its
  replacement is still created; it retires on a later tick, once the replacement is alive.
  (Without this a pool of one could never rotate.)
- Too many: the surplus is terminated, not-alive ones first, then the youngest.
- ``create = required - (active, non-retiring, non-held instances)``, never below 0.
"""
from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from .models import Status


class Reason(enum.Enum):
    """Why an instance is terminated."""

    ERROR = "error"
    DEAD = "dead"
    START_TIMEOUT = "start_timeout"
    DRAINED = "drained"
    DRAIN_TIMEOUT = "drain_timeout"
    SURPLUS = "surplus"


@dataclass(frozen=True)
class InstanceState:
    """What the manager knows about one instance at one moment.

    Times are reactor seconds. ``last_alive_at`` is None if no check ever passed;
    ``expires_at`` is None when there is no living limit; ``retiring_since`` is set while the
    instance drains.
    """

    name: str
    provider: str
    status: Status
    has_address: bool
    alive: bool
    first_seen_at: float
    last_alive_at: float | None = None
    failures: int = 0
    expires_at: float | None = None
    retiring: bool = False
    retiring_since: float | None = None
    inflight: int = 0


@dataclass(frozen=True)
class Limits:
    """Seconds, except ``dead_after_failures`` (consecutive failed checks)."""

    start_timeout: float
    dead_after: float
    dead_after_failures: int
    drain_grace: float


@dataclass(frozen=True)
class Plan:
    create: int = 0
    terminate: tuple[tuple[str, Reason], ...] = ()
    retire: tuple[str, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not (self.create or self.terminate or self.retire)


_GONE = frozenset({Status.STOPPING, Status.STOPPED})


def plan(*, instances: Sequence[InstanceState], required: int, now: float,
         limits: Limits) -> Plan:
    """Compute the commands that bring ``instances`` to ``required`` (see module docstring)."""
    terminate: list[tuple[str, Reason]] = []
    survivors: list[InstanceState] = []
    for instance in instances:
        if instance.status in _GONE:
            continue
        reason = _termination_reason(instance, now=now, limits=limits)
        if reason is not None:
            terminate.append((instance.name, reason))
        elif not instance.retiring:
            survivors.append(instance)

    retire, held = _retirements(survivors, now=now)
    retired = set(retire)
    held_names = {i.name for i in held}
    fresh = [i for i in survivors if i.name not in retired and i.name not in held_names]

    if required <= 0:
        # Asleep at zero: nothing is worth keeping, held ones included.
        surplus = sorted(fresh + held, key=_surplus_order)
    else:
        surplus = sorted(fresh, key=_surplus_order)[: max(0, len(fresh) - required)]
    for instance in surplus:
        terminate.append((instance.name, Reason.SURPLUS))

    create = max(0, required - len(fresh))
    return Plan(create=create, terminate=tuple(terminate), retire=tuple(retire))


def is_dead(instance: InstanceState, *, now: float, limits: Limits) -> bool:
    """Was alive once, and has since failed too many checks or too long."""
    if instance.last_alive_at is None:
        return False
    if instance.failures >= limits.dead_after_failures:
        return True
    # A record whose last check passed is healthy whatever the clock says; the check loop
    # may simply be slower than dead_after.
    healthy_now = instance.alive and instance.failures == 0
    return not healthy_now and now - instance.last_alive_at >= limits.dead_after


def _termination_reason(instance: InstanceState, *, now: float, limits: Limits) -> Reason | None:
    if instance.status is Status.ERROR:
        return Reason.ERROR
    if is_dead(instance, now=now, limits=limits):
        return Reason.DEAD
    if instance.last_alive_at is None and now - instance.first_seen_at >= limits.start_timeout:
        return Reason.START_TIMEOUT
    if instance.retiring:
        if instance.inflight <= 0:
            return Reason.DRAINED
        since = instance.retiring_since if instance.retiring_since is not None else now
        if now - since >= limits.drain_grace:
            return Reason.DRAIN_TIMEOUT
    return None


def _retirements(survivors: Sequence[InstanceState], *, now: float
                 ) -> tuple[list[str], list[InstanceState]]:
    """Expired survivors split into those that retire now and those held back."""
    expired = sorted(
        (i for i in survivors if i.expires_at is not None and i.expires_at <= now),
        key=lambda i: (i.expires_at, i.name),
    )
    alive_left = sum(1 for i in survivors if i.alive)
    retire: list[str] = []
    held: list[InstanceState] = []
    for instance in expired:
        if not instance.alive:
            retire.append(instance.name)
        elif alive_left > 1:
            retire.append(instance.name)
            alive_left -= 1
        else:
            held.append(instance)
    return retire, held


def _surplus_order(instance: InstanceState) -> tuple[bool, float, str]:
    # Not-alive first (False sorts first), then youngest (latest first sight).
    return (instance.alive, -instance.first_seen_at, instance.name)
