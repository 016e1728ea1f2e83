"""Operations: an owner's fenced, interruptible commands and waits (docs/design.md, invariant 2
and steps 4–6 of the preemption order).

Theory of operation
-------------------
Every command or wait an owner issues on users runs through :meth:`Operations.run`, which (1)
checks synchronously that the owner holds each named user under its current epoch (the ledger's
fence), (2) registers an :class:`Op` on those users, and (3) awaits the work in the caller's own
task. When the owner loses one of those users, the claim protocol or the switch-event
translation *interrupts* the operation (:meth:`Operations.interrupt`): it cancels the awaiting
task at that await point and the protocol waits until the operation has unwound. The
cancellation is converted back into a :class:`~baton.core.errors.Preempted` (or
:class:`~baton.core.errors.UserHungUp`) at the operation boundary, the way ``asyncio.timeout``
converts its cancellation into ``TimeoutError`` — so the flow's task is never cancelled as a
whole, and a flow that loses one user can go on with the rest. A preemption *holds* the
interrupted operation until the loser's media is cleared (:meth:`Operations.release`), so the
loser learns of it only at step 6.

:data:`CURRENT_OP` says on whose behalf the current task issues switch commands: the sim
switch's auditor and ``baton check`` read it.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from baton.core.errors import FlowInterrupted, NotOwner, Preempted, UserHungUp
from baton.core.events import NoticeKind, OpInterrupted
from baton.core.owner import Notice, Owner
from baton.core.port import Cause

if TYPE_CHECKING:
    from baton.core.ledger import Preemption, UserRecord
    from baton.core.manager import UserManager

__all__ = ["CURRENT_OP", "MANAGER", "Op", "Operations", "notice_error"]

T = TypeVar("T")

#: The operation on whose behalf the current task is issuing switch commands (read by the sim
#: switch's auditor to check invariant 2 at the switch itself, and by ``baton check``).
CURRENT_OP: contextvars.ContextVar[Op | None] = contextvars.ContextVar(
    "baton_current_op", default=None
)


class _ManagerOwner(Owner):
    """The manager acting for the ledger itself (clearing a preempted user, collecting legs)."""

    kind = "manager"


#: The issuer of commands the manager sends on its own account.
MANAGER = _ManagerOwner("manager", 1 << 30)


class Op:
    """An operation in flight: an owner's command or wait naming some users.

    ``wait`` marks a wait (a dial, a collect, a sleep), which may be interrupted to deliver news
    about *other* users; ``ends_on_hangup`` marks one that ends by itself when its user hangs up
    (``wait_hangup``). ``notice`` is set once the operation is interrupted; ``unwound``
    resolves when it has; ``released`` (a preemption's hold) when it may raise the notice.
    """

    __slots__ = (
        "announced",
        "ends_on_hangup",
        "name",
        "notice",
        "owner",
        "recs",
        "released",
        "task",
        "unwound",
        "wait",
    )

    def __init__(
        self,
        owner: Owner,
        name: str,
        recs: tuple[UserRecord, ...],
        task: asyncio.Task[Any],
        wait: bool,
        ends_on_hangup: bool,
    ) -> None:
        self.owner = owner
        self.name = name
        self.recs = recs
        self.task = task
        self.wait = wait  # a wait may be interrupted to deliver news about *other* users
        self.ends_on_hangup = ends_on_hangup
        self.notice: Notice | None = None
        self.unwound: asyncio.Future[None] | None = None
        self.released: asyncio.Future[None] | None = None
        # Told the world (OpInterrupted) once: two preemptions completing for one loser share
        # an operation that names users of both, and it unwound once (invariant 3).
        self.announced = False


def notice_error(owner: Owner, notice: Notice) -> FlowInterrupted:
    """The exception a notice raises in the owner that receives it (a released notice raises
    :class:`NotOwner` at the operation boundary instead, never through here)."""
    if notice.kind is NoticeKind.PREEMPTED:
        return Preempted(
            notice.user, owner.name, notice.by or "?", notice.priority, notice.reason, notice.also
        )
    cause = notice.cause if isinstance(notice.cause, Cause) else Cause.NORMAL
    return UserHungUp(notice.user, owner.name, cause, notice.also)  # (all hung up at once)


class Operations:
    """Runs and interrupts the operations of every owner of one manager."""

    __slots__ = ("_ledger", "_manager")

    def __init__(self, manager: UserManager) -> None:
        self._manager = manager
        self._ledger = manager.ledger

    async def run(
        self,
        owner: Owner,
        name: str,
        recs: tuple[UserRecord, ...],
        fn: Callable[[], Awaitable[T]],
        *,
        wait: bool = False,
        ends_on_hangup: bool = False,
    ) -> T:
        """Run one fenced, interruptible operation of ``owner`` on ``recs`` (see module doc)."""
        current = CURRENT_OP.get()
        task = asyncio.current_task()
        assert task is not None
        if current is not None and current.task is task:
            # Nested inside an operation of the same task: the outer one covers it.
            for rec in recs:
                self._ledger.fence(owner, rec)
            return await fn()
        owner.before_op()
        for rec in recs:
            p = rec.preemption
            if p is not None and p.victim is owner and p.notice is not None:
                await self._losing(owner, p)
            self._ledger.fence(owner, rec, owner.lost_how(rec.user))
        op = Op(owner, name, recs, task, wait, ends_on_hangup)
        for rec in recs:
            rec.ops.append(op)
        owner.op_started(op)
        on_op = self._manager.on_op
        if on_op is not None:
            on_op(op)
        token = CURRENT_OP.set(op)
        try:
            result = await fn()
        except asyncio.CancelledError:
            if op.notice is None or task.uncancel() > 0:
                raise
        else:
            if op.notice is None:
                return result
            task.uncancel()  # the operation swallowed our cancellation: take it back
        finally:
            CURRENT_OP.reset(token)
            for rec in recs:
                rec.ops.remove(op)
            owner.op_ended(op)
            if op.unwound is not None and not op.unwound.done():
                if op.released is not None and not op.announced and op.notice is not None:
                    # Stopped by a preemption (step 4): said now, as it has unwound — before
                    # any clear of its users. A second preemption of another of its users
                    # finds it gone from the records and clears at once; announced only by
                    # the first preemption's completion, it came after that clear (inv3).
                    op.announced = True
                    self._manager.events.publish(
                        OpInterrupted(
                            flow=owner.name,
                            op=op.name,
                            users=tuple(r.user.id for r in op.recs),
                            notice=op.notice.kind,
                        )
                    )
                op.unwound.set_result(None)
        # Interrupted. Wait until the protocol lets this owner learn of it (step 6).
        notice = op.notice
        if op.released is not None:
            await op.released
        if notice.kind is NoticeKind.RELEASED:  # given away by another task of the same owner
            raise NotOwner(notice.user, owner.name, None, notice.reason)
        raise notice_error(owner, notice)

    async def _losing(self, owner: Owner, p: Preemption) -> None:
        """``owner`` issued an operation on a user being taken from it (the ledger has flipped,
        the owner has not been told yet): wait for the protocol to finish (media cleared, the
        owner told), then raise the notice here — once — rather than a bare ``NotOwner``."""
        notice = p.notice
        assert notice is not None
        await asyncio.shield(p.completed)
        owner.notice_raised(notice.user)
        raise notice_error(owner, notice)

    def interrupt(self, op: Op, notice: Notice, *, hold: bool) -> bool:
        """Stop ``op`` at its await point; it will raise the notice. With ``hold``, it raises
        only once :meth:`release` is called (after the media is cleared). Returns False if
        the op was already interrupted."""
        if op.notice is not None:
            return False
        op.notice = notice
        loop = self._manager.loop
        op.unwound = loop.create_future()
        if hold:
            op.released = loop.create_future()
        op.task.cancel(f"baton: {notice.kind} {notice.user.id}")
        return True

    @staticmethod
    def release(op: Op) -> None:
        """Let a held, interrupted operation raise its notice (step 6)."""
        if op.released is not None and not op.released.done():
            op.released.set_result(None)

    def stop_waits(self, rec: UserRecord, owner: Owner, reason: str) -> None:
        """An owner gave a user away (released, settled) while another of its tasks was still
        waiting on it (a dial, a digit collection, a wait for the hang-up): that wait must not
        outlive the hand-over (invariant 12) — it would read the next owner's digits or answer.
        It is stopped and raises :class:`NotOwner`. A command already issued is left to finish:
        the switch carries it out anyway."""
        waits = [op for op in rec.ops if op.owner is owner and op.wait and op.notice is None]
        if not waits:
            return  # the common case: nothing waits (release runs several times a call)
        current = asyncio.current_task() if self._manager.has_loop else None
        for op in waits:
            if op.task is not current:
                notice = Notice(NoticeKind.RELEASED, rec.user, reason=reason)
                self.interrupt(op, notice, hold=False)
