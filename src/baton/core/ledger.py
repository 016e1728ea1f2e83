"""The ownership ledger: who owns each user, under which epoch.

Invariants (docs/design.md; they hold at every instant and the tests check each one)
------------------------------------------------------------------------------------
1. **One owner.** Each user has at most one owner: a Flow or a stable CallInfo.
2. **Fenced operations.** A call-control operation on a user reaches the switch only if the
   calling owner holds that user at the moment it is issued. Ownership carries an *epoch* that
   increases on every hand-over; an operation issued under a stale epoch is refused
   (``NotOwner``) and nothing is sent. The ledger changes synchronously, before any ``await``, so
   a flow that is slow to die cannot touch a user it has lost.
3. **Preemption order.** When Y claims a user owned by X: (1) Y takes it only with a strictly
   higher priority, else waits in a priority queue or fails; (2) a newer preemption supersedes an
   older one still in progress unless the older claimer's priority is higher; (3) the ledger
   flips to Y (epoch + 1); (4) X's in-flight operation on the user is cancelled and has unwound;
   (5) the user's media is cleared to connected-idle; (6) X learns it lost the user; (7) Y's
   claim returns.
4. **Calls survive preemption.** A ringing call is not dropped when its user changes owner; the
   new owner inherits the pending leg.
5. **Compensation is owner-checked.** An undo step that touches a user runs only if the flow
   still owns that user under the epoch it had when it registered the step.
6. **Termination is race-free.** Cancelling is idempotent; no event is lost to a cancellation;
   every task belongs to a flow or to the manager's supervisor.
7. **User hang-up is an event.** The owner is told; ownership is released; the user is idle.
8. **No leaks.** A live leg with no owner is hung up after a grace period (``keep`` users
   excepted).
9. **Everything is observable.** Every hand-over is an :class:`~baton.core.events.OwnerChanged`
   event, published here.

Theory of operation
-------------------
The ledger is plain data plus one choke point, :meth:`Ledger.hand_over`. It knows nothing of
the switch or of tasks: the protocols run elsewhere — claim, preempt, settle and release in
``claims.py``, hang-up in ``translate.py`` — and call ``hand_over`` at the one synchronous
instant each protocol changes an owner.
``hand_over`` bumps the epoch, updates both owners' views, publishes the event, and tells the
manager (through ``on_change``) so it can start or stop the leak collector's timer and serve
queued claims.

A claimer in the middle of a preemption (steps 3–6) is already the ledger's owner but is not yet
*granted*: :meth:`Ledger.fence` refuses its operations until its claim returns.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from baton.core.errors import NotOwner
from baton.core.events import EventBus, OwnerChanged
from baton.core.model import LegState

if TYPE_CHECKING:
    from baton.core.model import Leg, Meeting, Playback, Recording, User
    from baton.core.ops import Op
    from baton.core.owner import Notice, Owner

__all__ = ["Ledger", "Preemption", "UserRecord"]


class Preemption:
    """A preemption of one user in progress (steps 3–6 of the protocol)."""

    __slots__ = (
        "claimer",
        "completed",
        "fut",
        "notice",
        "priority",
        "reason",
        "started",
        "told",
        "victim",
    )

    def __init__(
        self,
        claimer: Owner,
        fut: asyncio.Future[None],
        victim: Owner,
        reason: str | None,
        started: float,
    ) -> None:
        self.claimer: Owner | None = claimer  # None once the claimer gave up
        self.fut = fut
        self.priority = claimer.priority
        self.victim = victim
        self.reason = reason
        self.started = started
        self.notice: Notice | None = None  # what the victim is told
        #: the victim heard of it before step 6, from a synchronous call on the user (a
        #: settle, a compensate): step 6 tells it no twice
        self.told = False
        #: resolved at step 7, whoever the user went to (the victim's ops wait for it)
        self.completed: asyncio.Future[None] = fut.get_loop().create_future()


class UserRecord:
    """Everything the manager knows about one user's call state."""

    __slots__ = (
        "bridge",
        "digit_waiter",
        "digits",
        "dirty",
        "epoch",
        "gc",
        "leg",
        "meeting",
        "ops",
        "owner",
        "playbacks",
        "preemption",
        "quiet",
        "recordings",
        "user",
        "waiters",
    )

    def __init__(self, user: User) -> None:
        self.user = user
        self.owner: Owner | None = None
        self.epoch = 0
        self.leg: Leg | None = None
        self.bridge: User | None = None  # the user this one is bridged to
        self.meeting: Meeting | None = None  # the meeting this user's leg is in
        self.playbacks: dict[Playback, None] = {}  # ordered sets (replayable runs)
        self.recordings: dict[Recording, None] = {}
        self.dirty = False  # some media command touched the leg since it was last cleared
        self.digits: deque[str] = deque()
        self.digit_waiter: asyncio.Future[None] | None = None
        self.ops: list[Op] = []  # in-flight operations naming this user
        self.preemption: Preemption | None = None
        self.waiters: list[tuple[int, int, Owner, asyncio.Future[None]]] = []  # a heap
        self.gc: asyncio.TimerHandle | None = None
        #: a wait in silence the owner declared for this user (hold, an idle PTT floor): why
        self.quiet: str | None = None

    @property
    def live_leg(self) -> Leg | None:
        leg = self.leg
        # (Leg.live inlined: this runs about 19 times a call)
        return leg if leg is not None and leg.state is not LegState.ENDED else None


class Ledger:
    """Per-user owner and epoch, and the one choke point that changes them."""

    def __init__(self, bus: EventBus, on_change: Callable[[UserRecord], None]) -> None:
        self.records: dict[str, UserRecord] = {}
        self._bus = bus
        self._on_change = on_change

    def hand_over(self, rec: UserRecord, new: Owner | None, reason: str) -> int:
        """Make ``new`` the owner of ``rec.user`` (``None``: nobody); return the new epoch.

        The single place where ownership changes. Synchronous by design (invariant 2).
        """
        old = rec.owner
        user = rec.user
        if old is not None:
            old.users.pop(user, None)
            # Clean hand-over (invariant 12): digits pressed for the old owner and never read
            # are the old owner's; the new one starts from the user as the switch has it.
            rec.digits.clear()
            rec.quiet = None
            old.user_released(user, reason)
        rec.epoch += 1
        rec.owner = new
        if new is not None:
            new.users[user] = rec.epoch
        self._bus.publish(
            OwnerChanged(
                user=user.id,
                old=old.name if old is not None else None,
                new=new.name if new is not None else None,
                epoch=rec.epoch,
                reason=reason,
                priority=new.priority if new is not None else None,
            )
        )
        self._on_change(rec)
        return rec.epoch

    def fence(self, owner: Owner, rec: UserRecord, lost: str | None = None) -> int:
        """Return the epoch under which ``owner`` may operate on the user, or raise
        :class:`NotOwner`. A claimer whose preemption is still in progress is refused."""
        epoch = owner.users.get(rec.user)
        if (
            epoch is None
            or rec.owner is not owner
            or epoch != rec.epoch
            or (rec.preemption is not None and rec.preemption.claimer is owner)
        ):
            holder = rec.owner.name if rec.owner is not None else None
            raise NotOwner(rec.user, owner.name, holder, lost)
        return epoch
