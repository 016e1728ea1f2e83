"""Floor control: one talker at a time, by priority (after 3GPP TS 24.380 and OMA PoC).

The floor is arbitrated like user ownership in miniature: one holder; a request of *strictly*
higher priority revokes the holder (with a reason) and is granted; others queue by priority,
first-come within a priority, and are told their position; a talk burst longer than
``max_burst`` is taken back. In emergency state every request counts at emergency priority.

This module is sans-IO: :class:`FloorControl` takes inputs (``request``, ``release``,
``leave``, ``burst_expired``, ``set_emergency``) with the current time and returns the actions
to carry out (grant, deny, revoke, queue positions, idle, start/stop the burst timer). The PTT
flow executes them (mode changes, tones, events); tests drive the machine directly.

Races are decided by arrival order, and made harmless by identity and tokens: a release from
someone who no longer holds the floor is ignored (a release crossing a preempting request cannot
release the new talker's floor), and a burst timer carries the token of the burst it belongs to
(a timer firing after a revoke is ignored).

State × input → next state (the table the code keeps):

    IDLE   request                      → TAKEN (grant)
    TAKEN  request, higher priority     → TAKEN (revoke holder, grant requester)
    TAKEN  request, not higher, queue   → TAKEN (requester queued, positions reported)
    TAKEN  request, not higher, no queue→ TAKEN (deny)
    TAKEN  release/leave by holder      → TAKEN (grant the head of the queue) | IDLE
    TAKEN  burst expired (its token)    → TAKEN (revoke, grant the head) | IDLE
    any    emergency raised by M        → TAKEN (revoke holder, grant M at emergency priority)
    any    release/leave by a queued    → same (withdrawn, positions reported)
"""

from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass, field

from baton.core import Priority

__all__ = [
    "Action",
    "BurstTimer",
    "Denied",
    "FloorControl",
    "FloorState",
    "Granted",
    "Idle",
    "Positions",
    "Released",
    "Revoked",
]


class FloorState(enum.Enum):
    IDLE = "idle"
    TAKEN = "taken"


@dataclass(frozen=True)
class Granted:
    member: str
    priority: int
    burst: int  # the burst's token


@dataclass(frozen=True)
class Denied:
    member: str
    reason: str


@dataclass(frozen=True)
class Revoked:
    member: str
    reason: str
    by: str | None = None


@dataclass(frozen=True)
class Released:
    member: str


@dataclass(frozen=True)
class Positions:
    """Queue positions now (1 = next): every waiting member and where it stands."""

    queue: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class Idle:
    pass


@dataclass(frozen=True)
class BurstTimer:
    """Start (``seconds`` not None) or stop the burst timer for ``burst``."""

    burst: int
    seconds: float | None


Action = Granted | Denied | Revoked | Released | Positions | Idle | BurstTimer


@dataclass(order=True)
class _Waiting:
    key: tuple[int, int]  # (-effective priority, arrival)
    member: str = field(compare=False)
    priority: int = field(compare=False)  # effective
    base: int = field(compare=False)  # as requested (what it falls back to)


class FloorControl:
    """One group's floor."""

    def __init__(
        self,
        *,
        max_burst: float = 30.0,
        queueing: bool = True,
        emergency_priority: int = Priority.EMERGENCY,
    ) -> None:
        self.max_burst = max_burst
        self.queueing = queueing
        self.emergency_priority = emergency_priority
        self.emergency = False
        self.holder: str | None = None
        self.holder_priority = 0
        self.holder_base = 0
        self.burst = 0  # token of the current burst
        self._queue: list[_Waiting] = []
        self._seq = itertools.count()

    @property
    def state(self) -> FloorState:
        return FloorState.IDLE if self.holder is None else FloorState.TAKEN

    def queue(self) -> list[str]:
        """Waiting members, next first."""
        return [w.member for w in sorted(self._queue)]

    def position(self, member: str) -> int | None:
        q = self.queue()
        return q.index(member) + 1 if member in q else None

    # ---- inputs

    def request(self, member: str, priority: int) -> list[Action]:
        base = priority
        priority = self._effective(priority)
        if self.holder == member:
            return []  # already talking
        if self.holder is None:
            return self._grant(member, priority, base)
        if priority > self.holder_priority:
            loser = self.holder
            actions: list[Action] = [
                BurstTimer(self.burst, None),
                Revoked(loser, "preempted by a higher-priority talker", by=member),
            ]
            self._withdraw(member)
            return actions + self._grant(member, priority, base)
        if not self.queueing:
            return [Denied(member, "floor taken")]
        existing = [w for w in self._queue if w.member == member]
        if existing and existing[0].priority >= priority:
            return [self._positions()]
        self._withdraw(member)
        self._queue.append(_Waiting((-priority, next(self._seq)), member, priority, base))
        return [self._positions()]

    def release(self, member: str) -> list[Action]:
        if member == self.holder:
            return [BurstTimer(self.burst, None), Released(member), *self._next()]
        if self._withdraw(member):
            return [self._positions()]
        return []  # not holding, not waiting: e.g. a release crossing its own revoke

    def leave(self, member: str) -> list[Action]:
        """The member left the group (hung up, taken by another flow)."""
        if member == self.holder:
            return [BurstTimer(self.burst, None), Released(member), *self._next()]
        if self._withdraw(member):
            return [self._positions()]
        return []

    def burst_expired(self, burst: int) -> list[Action]:
        if self.holder is None or burst != self.burst:
            return []  # a stale timer: that burst already ended
        loser = self.holder
        return [
            BurstTimer(burst, None),
            Revoked(loser, "maximum talk-burst time reached"),
            *self._next(),
        ]

    def set_emergency(self, on: bool) -> list[Action]:
        """Emergency state: every burst counts at emergency priority — the running one and the
        queued ones too — until it is cleared, when each falls back to what it asked for."""
        self.emergency = on
        if self.holder is not None:
            self.holder_priority = self._effective(self.holder_base)
        for w in self._queue:
            w.priority = self._effective(w.base)
            w.key = (-w.priority, w.key[1])
        return []

    def _effective(self, priority: int) -> int:
        return max(priority, self.emergency_priority) if self.emergency else priority

    def raise_emergency(self, member: str) -> list[Action]:
        """``member`` raises an emergency: the group enters emergency state and ``member`` is
        given the floor (whoever held it is revoked)."""
        self.set_emergency(True)
        if self.holder == member:
            return []
        self._withdraw(member)
        actions: list[Action] = []
        if self.holder is not None:
            actions += [
                BurstTimer(self.burst, None),
                Revoked(self.holder, f"emergency raised by {member}", by=member),
            ]
        return actions + self._grant(member, self.emergency_priority, self.emergency_priority)

    # ---- internals

    def _grant(self, member: str, priority: int, base: int) -> list[Action]:
        self.holder = member
        self.holder_priority = priority
        self.holder_base = base
        self.burst += 1
        return [Granted(member, priority, self.burst), BurstTimer(self.burst, self.max_burst)]

    def _next(self) -> list[Action]:
        self.holder = None
        self.holder_priority = 0
        if self._queue:
            head = min(self._queue)
            self._queue.remove(head)
            return [*self._grant(head.member, head.priority, head.base), self._positions()]
        return [Idle()]

    def _withdraw(self, member: str) -> bool:
        before = len(self._queue)
        self._queue = [w for w in self._queue if w.member != member]
        return len(self._queue) != before

    def _positions(self) -> Positions:
        return Positions(tuple((m, i) for i, m in enumerate(self.queue(), 1)))
