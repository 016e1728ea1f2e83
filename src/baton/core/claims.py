"""The claim and preemption protocol: how a user changes hands (docs/design.md, §Preemption and
invariants 3, 4, 10).

Theory of operation
-------------------
A claim first *decides*, for each user and without side effects, what it can do now
(:class:`Decision`): the user is its already, free, held at a lower priority (preempt), being
taken for a claim no more urgent (supersede), being taken for this very claimer (join), or held
or being taken at an equal or higher priority (wait). Then it acts, synchronously — the ledger
changes before any ``await`` (invariant 2) — and awaits what is left:

1. **compare priorities** and 2. **supersede or wait** — :meth:`ClaimProtocol._decide`; a waiting
   claim queues in the user's priority heap (:meth:`ClaimProtocol._enqueue`) and is served by
   :meth:`ClaimProtocol.serve_waiters` whenever the ledger hands the user over;
3. **flip the ledger** to the claimer (epoch + 1) — :meth:`ClaimProtocol._start_preemption`;
4. **stop the loser's operation** on the user: interrupted there, awaited until unwound (bounded
   by ``unwind_timeout``);
5. **clear the media** to connected-idle, on the manager's own account (bounded by
   ``command_timeout``);
6. **tell the loser**: its held operations raise the notice, then its ``user_lost`` hook runs —
   users lost in one claim are told together;
7. **grant** — :meth:`ClaimProtocol._grant` resolves the claim for whoever claims the user now.

Steps 4–7 run in one supervised task per loser (:meth:`ClaimProtocol._complete_preemption`), so
that a superseding claim or a dying claimer cannot abandon a preemption half-way. Every claim
resolves within a bound (:meth:`ClaimProtocol._claim_bound`; invariant 10): ``pending`` records
each one until it does, for the watch's liveness check. A user who hangs up while being taken
resolves the claim with ``UserHungUp`` (:meth:`ClaimProtocol.user_hung_up`); an owner that lets
go of a user, or ends, resolves its own claims in progress (:meth:`ClaimProtocol.release`,
:meth:`ClaimProtocol.forget_claimer`).
"""

from __future__ import annotations

import asyncio
import enum
import heapq
import itertools
from collections.abc import Iterable
from typing import TYPE_CHECKING, assert_never

from baton.core.errors import ClaimDenied, NotOwner, Superseded, SwitchFailed
from baton.core.events import (
    ClaimQueued,
    ClaimRefused,
    NoticeKind,
    OpInterrupted,
    PreemptionCompleted,
    PreemptionStarted,
    PreemptionSuperseded,
    Problem,
)
from baton.core.ledger import Preemption, UserRecord
from baton.core.ops import MANAGER, Op, notice_error
from baton.core.owner import Notice, Owner

if TYPE_CHECKING:
    from baton.core.manager import UserManager
    from baton.core.model import User

__all__ = ["ClaimProtocol", "Decision"]


class Decision(enum.Enum):
    """What a claim can do about one user now (:meth:`ClaimProtocol._decide`)."""

    OWN = "own"  # the claimer holds the user already
    GRANT = "grant"  # nobody holds the user: take it
    PREEMPT = "preempt"  # held at a strictly lower priority: take it by preemption
    SUPERSEDE = "supersede"  # a preemption is in progress for a claim no more urgent: take it over
    JOIN = "join"  # a preemption is in progress for this very claimer: wait for the same grant
    WAIT = "wait"  # held (or being taken) at an equal or higher priority: queue or be denied


class _Taking:
    """One user being taken from its owner by a preemption in progress."""

    __slots__ = ("notice", "ops", "p", "rec")

    def __init__(self, rec: UserRecord, p: Preemption, notice: Notice, ops: list[Op]) -> None:
        self.rec = rec
        self.p = p
        self.notice = notice
        self.ops = ops


class ClaimProtocol:
    """The claims and preemptions of one manager, on its ledger (see the module doc).

    ``preempting`` holds the users with a preemption in progress; ``pending`` the claims not yet
    resolved: a token -> (claimer, users, when it must have resolved by), read by the liveness
    check (invariant 10).
    """

    def __init__(self, manager: UserManager, ids: itertools.count[int]) -> None:
        self._m = manager
        self._ledger = manager.ledger
        self._events = manager.events
        self._ops = manager.operations
        self._ids = ids  # shared with the manager's leg ids: one sequence, replayable runs
        self._claim_ids = itertools.count(1)
        # dicts used as ordered sets: iterating a set of objects follows their addresses, and a
        # run must replay exactly (a seeded exploration, a shrunk failing example)
        self.preempting: dict[UserRecord, None] = {}
        self.pending: dict[int, tuple[Owner, tuple[User, ...], float]] = {}

    def _decide(self, claimer: Owner, rec: UserRecord) -> Decision:
        """What a claim can do now, without side effects."""
        p = rec.preemption
        if p is not None:
            if p.claimer is claimer:
                return Decision.JOIN
            return Decision.SUPERSEDE if claimer.priority >= p.priority else Decision.WAIT
        owner = rec.owner
        if owner is claimer:
            return Decision.OWN
        if owner is None:
            return Decision.GRANT
        return Decision.PREEMPT if claimer.priority > owner.priority else Decision.WAIT

    def _take(
        self,
        claimer: Owner,
        rec: UserRecord,
        decision: Decision,
        reason: str | None,
        batch: list[_Taking] | None = None,
    ) -> asyncio.Future[None] | None:
        """Act on a decision synchronously (steps 1–3); return a future to await, if any.
        Preemptions started with a ``batch`` are completed together by the caller."""
        if decision is Decision.OWN:
            return None
        if decision is Decision.GRANT:
            self._ledger.hand_over(rec, claimer, "claimed")
            return None
        if decision is Decision.PREEMPT:
            return self._start_preemption(rec, claimer, None, reason, batch)
        if decision is Decision.SUPERSEDE:
            return self._supersede(rec, claimer)
        if decision is Decision.JOIN:
            assert rec.preemption is not None
            return rec.preemption.fut
        if decision is Decision.WAIT:
            raise AssertionError("a waiting claim is queued, never taken")
        assert_never(decision)

    async def claim(
        self,
        claimer: Owner,
        users: Iterable[User],
        *,
        wait: float | None = None,
        reason: str | None = None,
    ) -> None:
        """Take ``users`` for ``claimer`` by the preemption protocol (docs/design.md, invariant 3).

        All at once when every user can be taken now; otherwise, with ``wait``, one by one in id
        order (a stable order keeps two multi-user claims from deadlocking), each waiting in the
        user's priority queue. Raises :class:`ClaimDenied` (nothing is taken) or
        :class:`Superseded` (what this call took is released).
        """
        recs = sorted({self._m.rec(u) for u in users}, key=lambda r: r.user.id)
        decisions = [self._decide(claimer, rec) for rec in recs]
        taken: list[UserRecord] = []
        token = next(self._claim_ids)
        self.pending[token] = (claimer, tuple(r.user for r in recs), self._claim_bound(recs, wait))
        try:
            if Decision.WAIT not in decisions:
                futs = []
                batch: list[_Taking] = []
                for rec, decision in zip(recs, decisions, strict=True):
                    fut = self._take(claimer, rec, decision, reason, batch)
                    if decision is not Decision.OWN:
                        taken.append(rec)
                    if fut is not None:
                        futs.append(fut)
                self._complete_batch(batch)
                for fut in futs:
                    # the first failure fails the claim; the others must not be left to log
                    # "exception was never retrieved"
                    fut.add_done_callback(_retrieve)
                for fut in futs:
                    await fut
            elif wait is None:
                rec = recs[decisions.index(Decision.WAIT)]
                raise self._denied(claimer, rec, None)
            else:
                deadline = self._m.loop.time() + wait
                for rec in recs:
                    await self._claim_one(claimer, rec, deadline, wait, reason, taken)
        except BaseException:
            for rec in taken:
                self._abandon(claimer, rec)
            raise
        finally:
            del self.pending[token]
        for rec in taken:  # a user released without clearing comes to us clean
            if rec.dirty and rec.live_leg is not None:
                try:
                    await self._m.clear(claimer, rec.user)
                except SwitchFailed as exc:
                    # granted all the same, as when a preemption's clear fails (step 5): the
                    # claim is not a media command, and a claimer told "failed" while it holds
                    # the user would never serve it (dead air)
                    self._events.publish(Problem(source=f"claim:{rec.user.id}", message=str(exc)))

    def _claim_bound(self, recs: list[UserRecord], wait: float | None) -> float:
        """When a claim must have resolved by (invariant 10): its own patience, plus for each
        user one preemption — the loser's unwinding and one media clear — and a second."""
        per_user = self._m.unwind_timeout + self._m.command_timeout
        return self._m.loop.time() + (wait or 0.0) + len(recs) * per_user + 1.0

    async def _claim_one(
        self,
        claimer: Owner,
        rec: UserRecord,
        deadline: float,
        wait: float,
        reason: str | None,
        taken: list[UserRecord],
    ) -> None:
        decision = self._decide(claimer, rec)
        if decision is not Decision.WAIT:
            fut = self._take(claimer, rec, decision, reason)
            if decision is not Decision.OWN:
                taken.append(rec)
            if fut is not None:
                await fut
            return
        remaining = deadline - self._m.loop.time()
        if remaining <= 0:
            raise self._denied(claimer, rec, wait)
        fut = self._enqueue(claimer, rec, remaining, wait)
        try:
            await fut
        except asyncio.CancelledError:
            if not fut.done():
                fut.cancel()
            elif not fut.cancelled() and fut.exception() is None:
                taken.append(rec)  # granted in the same tick: abandon it properly
            raise
        taken.append(rec)

    def _denied(self, claimer: Owner, rec: UserRecord, waited: float | None) -> ClaimDenied:
        holder = rec.preemption.claimer if rec.preemption is not None else rec.owner
        holder_name = holder.name if holder is not None else "nobody"
        holder_prio = holder.priority if holder is not None else 0
        self._events.publish(
            ClaimRefused(
                user=rec.user.id,
                claimer=claimer.name,
                holder=holder_name,
                reason="timeout" if waited else "denied",
            )
        )
        return ClaimDenied(
            rec.user, claimer.name, holder_name, holder_prio, claimer.priority, waited
        )

    def _enqueue(
        self, claimer: Owner, rec: UserRecord, remaining: float, wait: float
    ) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = self._m.loop.create_future()
        entry = (-claimer.priority, next(self._ids), claimer, fut)
        heapq.heappush(rec.waiters, entry)
        holder = rec.preemption.claimer if rec.preemption is not None else rec.owner
        self._events.publish(
            ClaimQueued(
                user=rec.user.id,
                claimer=claimer.name,
                priority=claimer.priority,
                holder=holder.name if holder is not None else "nobody",
            )
        )

        def expire() -> None:
            if not fut.done():
                fut.set_exception(self._denied(claimer, rec, wait))

        handle = self._m.loop.call_later(remaining, expire)

        def cleanup(_: asyncio.Future[None]) -> None:
            handle.cancel()
            if entry in rec.waiters:
                rec.waiters.remove(entry)
                heapq.heapify(rec.waiters)

        fut.add_done_callback(cleanup)
        return fut

    def serve_waiters(self, rec: UserRecord) -> None:
        """Hand the user to the best queued claim if it can have it now."""
        while rec.waiters and rec.preemption is None:
            _, _, claimer, fut = rec.waiters[0]
            if fut.done() or not claimer.alive:
                heapq.heappop(rec.waiters)
                continue
            owner = rec.owner
            if owner is None:
                heapq.heappop(rec.waiters)
                self._ledger.hand_over(rec, claimer, "claimed")
                fut.set_result(None)
            elif claimer.priority > owner.priority:
                heapq.heappop(rec.waiters)
                self._start_preemption(rec, claimer, fut, None)
            return

    def _start_preemption(
        self,
        rec: UserRecord,
        claimer: Owner,
        fut: asyncio.Future[None] | None,
        reason: str | None,
        batch: list[_Taking] | None = None,
    ) -> asyncio.Future[None]:
        victim = rec.owner
        assert victim is not None
        if fut is None:
            fut = self._m.loop.create_future()
        p = Preemption(claimer, fut, victim, reason, self._m.loop.time())
        rec.preemption = p
        self.preempting[rec] = None
        user = rec.user
        self._events.publish(
            PreemptionStarted(
                user=user.id,
                victim=victim.name,
                claimer=claimer.name,
                priority=claimer.priority,
                reason=reason,
            )
        )
        self._ledger.hand_over(rec, claimer, "preempted")  # step 3
        notice = Notice(
            NoticeKind.PREEMPTED, user, by=claimer.name, priority=claimer.priority, reason=reason
        )
        p.notice = notice
        ops = [op for op in rec.ops if op.owner is victim]
        for op in ops:  # step 4 begins: stop the loser's coroutines
            if not self._ops.interrupt(op, notice, hold=True):
                # stopped already for another of its users (one claim taking both parties
                # of a bridge): it raises this loss too — step 6 counts this user as told
                # by it, and a flow not told would go on with the user (NotOwner)
                first = op.notice
                if first is not None and first.user is not user and user not in first.also:
                    first.also.append(user)
        taking = _Taking(rec, p, notice, ops)
        if batch is None:
            self._complete_batch([taking])
        else:
            batch.append(taking)
        return fut

    def _complete_batch(self, batch: list[_Taking]) -> None:
        """Complete preemptions, one task per loser: a flow that loses several users in one
        claim (a barge-in takes both parties) is told about all of them at once."""
        by_victim: dict[int, list[_Taking]] = {}
        for taking in batch:
            by_victim.setdefault(id(taking.p.victim), []).append(taking)
        for items in by_victim.values():
            names = ",".join(t.rec.user.id for t in items)
            self._m.spawn(self._complete_preemption(items), f"preempt:{names}")

    def _supersede(self, rec: UserRecord, claimer: Owner) -> asyncio.Future[None]:
        p = rec.preemption
        assert p is not None
        old, old_fut = p.claimer, p.fut
        p.claimer = claimer
        p.priority = claimer.priority
        p.fut = self._m.loop.create_future()
        if p.notice is not None:  # the victim is told who took the user in the end
            p.notice.by = claimer.name
            p.notice.priority = claimer.priority
        self._events.publish(
            PreemptionSuperseded(
                user=rec.user.id,
                old_claimer=old.name if old else "nobody",
                new_claimer=claimer.name,
            )
        )
        self._ledger.hand_over(rec, claimer, "superseded")
        if old is not None and not old_fut.done():
            self._events.publish(
                ClaimRefused(
                    user=rec.user.id, claimer=old.name, holder=claimer.name, reason="superseded"
                )
            )
            old_fut.set_exception(Superseded(rec.user, old.name, claimer.name))
        return p.fut

    async def _complete_preemption(self, items: list[_Taking]) -> None:
        """Steps 4 (wait for unwinding) to 7 (grant) for users taken from one loser, in a
        supervised task so that a superseding claim or a dying claimer cannot abandon it
        half-way."""
        try:
            ops = [op for t in items for op in t.ops]
            if ops:
                unwound = [op.unwound for op in ops if op.unwound is not None]
                _, pending = await asyncio.wait(unwound, timeout=self._m.unwind_timeout)
                if pending:
                    victim = items[0].p.victim.name
                    self._events.publish(
                        Problem(
                            source="preempt",
                            message=f"{len(pending)} operation(s) of {victim} did not unwind "
                            f"within {self._m.unwind_timeout} s; clearing anyway",
                        )
                    )
                for op in ops:
                    if op.announced:
                        continue
                    op.announced = True
                    self._events.publish(
                        OpInterrupted(
                            flow=op.owner.name,
                            op=op.name,
                            users=tuple(r.user.id for r in op.recs),
                            notice=NoticeKind.PREEMPTED,
                        )
                    )
            for t in items:  # step 5
                rec = t.rec
                if rec.live_leg is not None and rec.dirty:
                    try:
                        async with asyncio.timeout(self._m.command_timeout):
                            await self._m.clear(MANAGER, rec.user)
                    except (SwitchFailed, TimeoutError) as exc:
                        self._events.publish(
                            Problem(
                                source=f"preempt:{rec.user.id}",
                                message=str(exc) or f"clear took over {self._m.command_timeout} s",
                            )
                        )
                else:
                    rec.digits.clear()
            for op in ops:  # step 6, all at once
                self._ops.release(op)
            for t in items:
                t.p.victim.user_lost(t.rec.user, t.notice, told=bool(t.ops) or t.p.told)
        finally:
            for t in items:
                self._grant(t)

    def _grant(self, t: _Taking) -> None:
        """Step 7: the claim returns (to whoever claims the user now)."""
        rec, p = t.rec, t.p
        rec.preemption = None
        self.preempting.pop(rec, None)
        if not p.completed.done():
            p.completed.set_result(None)
        claimer = p.claimer
        granted = claimer is not None and rec.owner is claimer and not p.fut.done()
        if granted:
            p.fut.set_result(None)
        self._events.publish(
            PreemptionCompleted(
                user=rec.user.id,
                victim=p.victim.name,
                claimer=claimer.name if granted and claimer else None,
                seconds=self._m.loop.time() - p.started,
            )
        )
        self._m.owner_changed(rec)

    def _abandon(self, claimer: Owner, rec: UserRecord) -> None:
        """Give back a user this claim took (or was taking)."""
        p = rec.preemption
        if p is not None and p.claimer is claimer:
            p.claimer = None
        if rec.owner is claimer:
            self._ledger.hand_over(rec, None, "released")

    def release(self, owner: Owner, user: User, reason: str = "released") -> None:
        """Give a user back to nobody (or to the best queued claim). Media is left as it is:
        the next claimer clears it; the leak collector hangs up a leg nobody takes."""
        rec = self._m.rec(user)
        if rec.owner is owner:
            p = rec.preemption
            if p is not None and p.claimer is owner and not p.fut.done():
                # the owner's own claim, still preempting in another of its tasks: it resolves
                # now (invariant 10) rather than waiting for a grant that will never come
                lost = f"{reason} by {owner.name} itself"
                p.fut.set_exception(NotOwner(user, owner.name, None, lost))
            if p is not None and p.claimer is owner:
                p.claimer = None
            self._ledger.hand_over(rec, None, reason)
            self._ops.stop_waits(rec, owner, reason)

    def transfer(self, owner: Owner, user: User, new: Owner, reason: str) -> None:
        """Hand a user from one owner to another without a claim (settling into a CallInfo)."""
        rec = self._m.rec(user)
        self._ledger.fence(owner, rec)
        self._ledger.hand_over(rec, new, reason)
        self._ops.stop_waits(rec, owner, reason)

    def user_hung_up(self, rec: UserRecord, owner: Owner, notice: Notice) -> bool:
        """The user hung up while being taken for ``owner``: its claim resolves now, told the
        user hung up (invariant 10), rather than waiting for a grant that cannot come. True if
        that told ``owner``."""
        p = rec.preemption
        if p is not None and p.claimer is owner:
            p.claimer = None
            if not p.fut.done():
                p.fut.set_exception(notice_error(owner, notice))
                return True
        return False

    def forget_claimer(self, owner: Owner) -> None:
        """``owner`` has ended: a claim still preempting for it will find it gone and grant
        nobody."""
        for rec in list(self.preempting):
            p = rec.preemption
            if p is not None and p.claimer is owner:
                p.claimer = None
                if rec.owner is owner:
                    self._ledger.hand_over(rec, None, "released")


def _retrieve(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled():
        fut.exception()
