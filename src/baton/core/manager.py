"""The UserManager: the single entry point for every call-control operation on a user.

It is the *user_man* of docs/design.md (Vocabulary; invariants 2–8): it keeps the ownership
ledger, runs the claim and preemption protocol, issues every switch command on behalf of an owner
after checking that the owner holds the user (fencing), turns switch events into leg state and
notices, supervises every task it starts, and collects legs that nobody owns.

Theory of operation
-------------------
*Operations.* Every command a flow issues goes through :meth:`UserManager._run`, which (1) checks
synchronously that the owner holds each named user under its current epoch, (2) registers the
operation on those users, and (3) awaits the switch in the caller's own task. When the owner loses
one of those users, the manager *interrupts* the operation: it cancels the awaiting task at that
await point, waits until the operation has unwound, and only then lets the protocol go on. The
cancellation is converted back into a :class:`~baton.core.errors.Preempted` (or
:class:`~baton.core.errors.UserHungUp`) at the operation boundary, the way ``asyncio.timeout``
converts its cancellation into ``TimeoutError`` — so the flow's task is never cancelled as a
whole, and a flow that loses one user can go on with the rest.

*Calls.* A dial issues the origination under the caller's fence, then hands the ringing leg to
the manager's *makecall*: the leg, its future and its ring deadline belong to the manager, not to
the flow that dialled, so a new owner inherits a ringing call and may move its deadline
(invariant 4). The makecall is a timer rather than a task: it has nothing to await.

*Media bookkeeping.* The manager records, as each command is issued, which user is bridged to
whom, who is in which meeting, and what is being played or recorded, and marks the user *dirty*.
Clearing a dirty user returns it to connected-idle. The records let the invariant checker compare
the core's belief with the switch's truth.
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
import heapq
import itertools
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar, assert_never

from baton.core.errors import (
    CallFailed,
    ClaimDenied,
    FlowInterrupted,
    FlowUsageError,
    NotOwner,
    Preempted,
    Superseded,
    SwitchFailed,
    UnknownMeeting,
    UnknownUser,
    UserHungUp,
)
from baton.core.events import (
    ClaimQueued,
    ClaimRefused,
    DtmfDigit,
    EventBus,
    LegCollected,
    LegStateChanged,
    MediaChanged,
    NoticeKind,
    OpInterrupted,
    PreemptionCompleted,
    PreemptionStarted,
    PreemptionSuperseded,
    Problem,
)
from baton.core.ledger import Ledger, Notice, Owner, Preemption, UserRecord
from baton.core.model import (
    Direction,
    Leg,
    LegState,
    Meeting,
    MemberState,
    Playback,
    Recording,
    User,
)
from baton.core.port import (
    Cause,
    DtmfReceived,
    EndReason,
    InboundCall,
    LegAnswered,
    LegEnded,
    LegFailed,
    LegRinging,
    MeetingMode,
    Member,
    PlaybackFinished,
    Prompt,
    RecordingFinished,
    Switch,
    SwitchError,
    SwitchEvent,
    Target,
    Tone,
)

if TYPE_CHECKING:
    from baton.core.callinfo import CallInfo
    from baton.core.flow import Flow, FlowSpec

__all__ = ["MANAGER", "UserManager"]

T = TypeVar("T")

#: The operation on whose behalf the current task is issuing switch commands (read by the sim
#: switch's auditor to check invariant 2 at the switch itself).
_CURRENT_OP: contextvars.ContextVar[_Op | None] = contextvars.ContextVar(
    "baton_current_op", default=None
)


class _ManagerOwner(Owner):
    """The manager acting for the ledger itself (clearing a preempted user, collecting legs)."""

    kind = "manager"


#: The issuer of commands the manager sends on its own account.
MANAGER = _ManagerOwner("manager", 1 << 30)


class _Op:
    """An operation in flight: an owner's command or wait naming some users."""

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


class _Taking:
    """One user being taken from its owner by a preemption in progress."""

    __slots__ = ("notice", "ops", "p", "rec")

    def __init__(self, rec: UserRecord, p: Preemption, notice: Notice, ops: list[_Op]) -> None:
        self.rec = rec
        self.p = p
        self.notice = notice
        self.ops = ops


def notice_error(owner: Owner, notice: Notice) -> FlowInterrupted:
    """The exception a notice raises in the owner that receives it (a released notice raises
    :class:`NotOwner` at the operation boundary instead, never through here)."""
    if notice.kind is NoticeKind.PREEMPTED:
        return Preempted(
            notice.user, owner.name, notice.by or "?", notice.priority, notice.reason, notice.also
        )
    cause = notice.cause if isinstance(notice.cause, Cause) else Cause.NORMAL
    return UserHungUp(notice.user, owner.name, cause)


class Decision(enum.Enum):
    """What a claim can do about one user now (:meth:`UserManager._decide`)."""

    OWN = "own"  # the claimer holds the user already
    GRANT = "grant"  # nobody holds the user: take it
    PREEMPT = "preempt"  # held at a strictly lower priority: take it by preemption
    SUPERSEDE = "supersede"  # a preemption is in progress for a claim no more urgent: take it over
    JOIN = "join"  # a preemption is in progress for this very claimer: wait for the same grant
    WAIT = "wait"  # held (or being taken) at an equal or higher priority: queue or be denied


_Router = Callable[["UserManager", User, Leg, InboundCall], None]


class UserManager:
    """Users, their ownership, and every call-control operation on them.

    ``grace`` is how long a live leg may stay ownerless before it is hung up (per user:
    ``User.grace``; ``User.keep`` users are never collected). ``unwind_timeout`` bounds how long a
    preemption waits for the loser's in-flight operation to unwind; ``compensation_timeout``
    bounds each compensation step; ``command_timeout`` bounds each command the manager sends on
    its own account (a preemption's media clear, a collector's hang-up), so that a switch that
    never answers cannot hold a claim forever; ``end_timeout`` bounds how long a flow asked to
    end takes to end (invariant 10).
    """

    def __init__(
        self,
        switch: Switch,
        *,
        grace: float = 5.0,
        unwind_timeout: float = 2.0,
        compensation_timeout: float = 5.0,
        command_timeout: float = 5.0,
        end_timeout: float = 15.0,
        history: int = 10_000,
    ) -> None:
        self.switch = switch
        self.grace = grace
        self.unwind_timeout = unwind_timeout
        self.compensation_timeout = compensation_timeout
        self.command_timeout = command_timeout
        self.end_timeout = end_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self.events = EventBus(self._now, history=history)
        self.ledger = Ledger(self.events, self._owner_changed)
        self._users: dict[str, User] = {}
        self._by_number: dict[str, User] = {}
        self._legs: dict[str, Leg] = {}
        self._meetings: dict[str, Meeting] = {}
        self._playbacks: dict[str, Playback] = {}
        self._recordings: dict[str, Recording] = {}
        self.flows: dict[str, Flow] = {}
        self.callinfos: dict[str, CallInfo] = {}
        # dicts used as ordered sets: iterating a set of objects follows their addresses, and a
        # run must replay exactly (a seeded exploration, a shrunk failing example)
        self._tasks: dict[asyncio.Task[Any], None] = {}
        self.preempting: dict[UserRecord, None] = {}  # users with a preemption in progress
        #: claims not yet resolved: a token -> (claimer, users, when it must have resolved by);
        #: read by the liveness check (invariant 10)
        self.claims: dict[int, tuple[Owner, tuple[User, ...], float]] = {}
        self._ids = itertools.count(1)
        self._claim_ids = itertools.count(1)
        self._names: dict[str, itertools.count[int]] = {}
        self._closing = False
        self.router: _Router | None = None
        #: Called with every operation as it starts (``baton check`` lands events there).
        self.on_op: Callable[[_Op], None] | None = None
        #: Fencing violations seen by an auditing switch (the sim): must stay empty.
        self.violations: list[str] = []
        switch.set_listener(self._on_switch_event)

    # ------------------------------------------------------------------ basics

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def _now(self) -> float:
        return self._loop.time() if self._loop is not None else 0.0

    def now(self) -> float:
        """The loop's clock (virtual on the sim)."""
        return self.loop.time()

    def new_name(self, prefix: str) -> str:
        """``"call#1"``, ``"call#2"``, … — readable, unique owner and object names."""
        counter = self._names.get(prefix)
        if counter is None:
            counter = self._names[prefix] = itertools.count(1)
        n: int = next(counter)
        return f"{prefix}#{n}"

    def add_user(self, user: User) -> User:
        """Register a user. Ids and numbers must be unique."""
        if user.id in self._users:
            raise ValueError(f"a user with id {user.id!r} exists already")
        for number in user.numbers:
            if number in self._by_number:
                raise ValueError(f"number {number!r} belongs to {self._by_number[number].id!r}")
        self._users[user.id] = user
        for number in user.numbers:
            self._by_number[number] = user
        self.ledger.records[user.id] = UserRecord(user)
        return user

    def remove_user(self, user: User) -> None:
        """Forget a user (the service's provisioning removed it). Only an idle user can go: one
        with no live leg and no owner — :class:`ValueError` says what still holds it otherwise,
        and nothing changes."""
        rec = self.rec(user)
        if rec.live_leg is not None:
            raise ValueError(f"{user.id} is on a call ({self.state_of(user)})")
        if rec.owner is not None or rec.waiters or rec in self.preempting:
            holder = rec.owner.name if rec.owner is not None else "a claim"
            raise ValueError(f"{user.id} is held by {holder}")
        del self._users[user.id]
        for number in user.numbers:
            if self._by_number.get(number) is user:
                del self._by_number[number]
        del self.ledger.records[user.id]

    def set_numbers(self, user: User, numbers: tuple[str, ...]) -> None:
        """Give ``user`` new numbers (unique, like :meth:`add_user`'s); calls already placed
        are not affected."""
        self.rec(user)
        for number in numbers:
            other = self._by_number.get(number)
            if other is not None and other is not user:
                raise ValueError(f"number {number!r} belongs to {other.id!r}")
        for number in user.numbers:
            if self._by_number.get(number) is user:
                del self._by_number[number]
        user.numbers = tuple(numbers)
        for number in user.numbers:
            self._by_number[number] = user

    def user(self, user_id: str) -> User:
        """The user with this id; :class:`UnknownUser` otherwise."""
        try:
            return self._users[user_id]
        except KeyError:
            raise UnknownUser(user_id) from None

    def users(self) -> list[User]:
        """Every registered user."""
        return list(self._users.values())

    def by_number(self, number: str) -> User | None:
        """The user who owns a number, if any."""
        return self._by_number.get(number)

    def meeting(self, meeting_id: str) -> Meeting:
        """The live meeting with this id; :class:`UnknownMeeting` otherwise."""
        m = self._meetings.get(meeting_id)
        if m is None:
            raise UnknownMeeting(meeting_id)
        return m

    def meetings(self) -> list[Meeting]:
        """Every live meeting."""
        return list(self._meetings.values())

    def rec(self, user: User) -> UserRecord:
        rec = self.ledger.records.get(user.id)
        if rec is None or rec.user is not user:
            raise UnknownUser(user.id)
        return rec

    def owner_of(self, user: User) -> Owner | None:
        """Who holds ``user`` now: a Flow, a CallInfo, or None."""
        return self.rec(user).owner

    def leg_of(self, user: User) -> Leg | None:
        """The user's live leg, if any."""
        return self.rec(user).live_leg

    def callinfo_of(self, user: User) -> CallInfo | None:
        """The CallInfo holding ``user``, if one does."""
        from baton.core.callinfo import CallInfo

        owner = self.rec(user).owner
        return owner if isinstance(owner, CallInfo) else None

    def state_of(self, user: User) -> str:
        """A one-word summary for consoles: idle, dialling, ringing, talking, meeting, connected."""
        rec = self.rec(user)
        leg = rec.live_leg
        if leg is None:
            return "idle"
        if leg.state is not LegState.CONNECTED:
            state: str = leg.state.value
            return state
        if rec.meeting is not None:
            return "meeting"
        if rec.bridge is not None:
            return "talking"
        return "connected"

    # ------------------------------------------------------------------ supervision

    def spawn(self, coro: Awaitable[T], name: str) -> asyncio.Task[T]:
        """Start a task owned by the manager's supervisor; its crash is reported, never
        propagated to other tasks."""
        task: asyncio.Task[T] = self.loop.create_task(coro, name=name)  # type: ignore[arg-type]
        self._tasks[task] = None
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.pop(task, None)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.events.publish(Problem(source=task.get_name(), message=repr(exc)))

    @property
    def tasks(self) -> frozenset[asyncio.Task[Any]]:
        return frozenset(self._tasks)

    async def close(self) -> None:
        """Stop every flow (running its compensations), then every supervised task."""
        self._closing = True
        for flow in list(self.flows.values()):
            flow.cancel("manager closing")
        while self.flows:
            await asyncio.gather(*(f.wait() for f in list(self.flows.values())))
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for rec in self.ledger.records.values():
            if rec.gc is not None:
                rec.gc.cancel()
                rec.gc = None

    # ------------------------------------------------------------------ flows

    def start(
        self, spec: FlowSpec[Any], /, *args: Any, priority: int | None = None, **kwargs: Any
    ) -> Flow:
        """Start a flow as its own supervised task and return its handle."""
        from baton.core.flow import Flow

        if self._closing:
            raise FlowUsageError("the manager is closing; no new flows")
        flow = Flow(self, spec, args, kwargs, priority)
        self.flows[flow.name] = flow
        flow._start()
        return flow

    # ------------------------------------------------------------------ operations

    async def _run(
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
        current = _CURRENT_OP.get()
        task = asyncio.current_task()
        assert task is not None
        if current is not None and current.task is task:
            # Nested inside an operation of the same task: the outer one covers it.
            for rec in recs:
                self.ledger.fence(owner, rec)
            return await fn()
        owner._enter_op()
        for rec in recs:
            p = rec.preemption
            if p is not None and p.victim is owner and p.notice is not None:
                await self._losing(owner, p)
            self.ledger.fence(owner, rec, owner._lost_how(rec.user))
        op = _Op(owner, name, recs, task, wait, ends_on_hangup)
        for rec in recs:
            rec.ops.append(op)
        owner._op_started(op)
        if self.on_op is not None:
            self.on_op(op)
        token = _CURRENT_OP.set(op)
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
            _CURRENT_OP.reset(token)
            for rec in recs:
                rec.ops.remove(op)
            owner._op_ended(op)
            if op.unwound is not None and not op.unwound.done():
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
        owner._forget_pending(notice.user)
        raise notice_error(owner, notice)

    def interrupt(self, op: _Op, notice: Notice, *, hold: bool) -> bool:
        """Stop ``op`` at its await point; it will raise the notice. With ``hold``, it raises
        only once :meth:`_release_op` is called (after the media is cleared). Returns False if
        the op was already interrupted."""
        if op.notice is not None:
            return False
        op.notice = notice
        op.unwound = self.loop.create_future()
        if hold:
            op.released = self.loop.create_future()
        op.task.cancel(f"baton: {notice.kind} {notice.user.id}")
        return True

    @staticmethod
    def _release_op(op: _Op) -> None:
        if op.released is not None and not op.released.done():
            op.released.set_result(None)

    async def _command(self, name: str, coro: Awaitable[T]) -> T:
        """Await a switch command, turning a :class:`SwitchError` into :class:`SwitchFailed`."""
        try:
            return await coro
        except SwitchError as exc:
            raise SwitchFailed(name, str(exc)) from exc

    def _media(
        self,
        command: str,
        owner: Owner,
        users: Iterable[User] = (),
        meeting: Meeting | None = None,
        detail: str | None = None,
    ) -> None:
        self.events.publish(
            MediaChanged(
                command=command,
                users=tuple(u.id for u in users),
                meeting=meeting.id if meeting is not None else None,
                detail=detail,
                by=owner.name,
            )
        )

    # ------------------------------------------------------------------ claims

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
            self.ledger.hand_over(rec, claimer, "claimed")
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
        recs = sorted({self.rec(u) for u in users}, key=lambda r: r.user.id)
        decisions = [self._decide(claimer, rec) for rec in recs]
        taken: list[UserRecord] = []
        token = next(self._claim_ids)
        self.claims[token] = (claimer, tuple(r.user for r in recs), self._claim_bound(recs, wait))
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
                deadline = self.loop.time() + wait
                for rec in recs:
                    await self._claim_one(claimer, rec, deadline, wait, reason, taken)
        except BaseException:
            for rec in taken:
                self._abandon(claimer, rec)
            raise
        finally:
            del self.claims[token]
        for rec in taken:  # a user released without clearing comes to us clean
            if rec.dirty and rec.live_leg is not None:
                await self.clear(claimer, rec.user)

    def _claim_bound(self, recs: list[UserRecord], wait: float | None) -> float:
        """When a claim must have resolved by (invariant 10): its own patience, plus for each
        user one preemption — the loser's unwinding and one media clear — and a second."""
        per_user = self.unwind_timeout + self.command_timeout
        return self.loop.time() + (wait or 0.0) + len(recs) * per_user + 1.0

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
        remaining = deadline - self.loop.time()
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
        self.events.publish(
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
        fut: asyncio.Future[None] = self.loop.create_future()
        entry = (-claimer.priority, next(self._ids), claimer, fut)
        heapq.heappush(rec.waiters, entry)
        holder = rec.preemption.claimer if rec.preemption is not None else rec.owner
        self.events.publish(
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

        handle = self.loop.call_later(remaining, expire)

        def cleanup(_: asyncio.Future[None]) -> None:
            handle.cancel()
            if entry in rec.waiters:
                rec.waiters.remove(entry)
                heapq.heapify(rec.waiters)

        fut.add_done_callback(cleanup)
        return fut

    def _serve_waiters(self, rec: UserRecord) -> None:
        """Hand the user to the best queued claim if it can have it now."""
        while rec.waiters and rec.preemption is None:
            _, _, claimer, fut = rec.waiters[0]
            if fut.done() or not claimer.alive:
                heapq.heappop(rec.waiters)
                continue
            owner = rec.owner
            if owner is None:
                heapq.heappop(rec.waiters)
                self.ledger.hand_over(rec, claimer, "claimed")
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
            fut = self.loop.create_future()
        p = Preemption(claimer, fut, victim, reason, self.loop.time())
        rec.preemption = p
        self.preempting[rec] = None
        user = rec.user
        self.events.publish(
            PreemptionStarted(
                user=user.id,
                victim=victim.name,
                claimer=claimer.name,
                priority=claimer.priority,
                reason=reason,
            )
        )
        self.ledger.hand_over(rec, claimer, "preempted")  # step 3
        notice = Notice(
            NoticeKind.PREEMPTED, user, by=claimer.name, priority=claimer.priority, reason=reason
        )
        p.notice = notice
        ops = [op for op in rec.ops if op.owner is victim]
        for op in ops:  # step 4 begins: stop the loser's coroutines
            self.interrupt(op, notice, hold=True)
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
            self.spawn(self._complete_preemption(items), f"preempt:{names}")

    def _supersede(self, rec: UserRecord, claimer: Owner) -> asyncio.Future[None]:
        p = rec.preemption
        assert p is not None
        old, old_fut = p.claimer, p.fut
        p.claimer = claimer
        p.priority = claimer.priority
        p.fut = self.loop.create_future()
        if p.notice is not None:  # the victim is told who took the user in the end
            p.notice.by = claimer.name
            p.notice.priority = claimer.priority
        self.events.publish(
            PreemptionSuperseded(
                user=rec.user.id,
                old_claimer=old.name if old else "nobody",
                new_claimer=claimer.name,
            )
        )
        self.ledger.hand_over(rec, claimer, "superseded")
        if old is not None and not old_fut.done():
            self.events.publish(
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
                _, pending = await asyncio.wait(unwound, timeout=self.unwind_timeout)
                if pending:
                    victim = items[0].p.victim.name
                    self.events.publish(
                        Problem(
                            source="preempt",
                            message=f"{len(pending)} operation(s) of {victim} did not unwind "
                            f"within {self.unwind_timeout} s; clearing anyway",
                        )
                    )
                for op in ops:
                    if op.announced:
                        continue
                    op.announced = True
                    self.events.publish(
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
                        async with asyncio.timeout(self.command_timeout):
                            await self.clear(MANAGER, rec.user)
                    except (SwitchFailed, TimeoutError) as exc:
                        self.events.publish(
                            Problem(
                                source=f"preempt:{rec.user.id}",
                                message=str(exc) or f"clear took over {self.command_timeout} s",
                            )
                        )
                else:
                    rec.digits.clear()
            for op in ops:  # step 6, all at once
                self._release_op(op)
            for t in items:
                t.p.victim._lost(t.rec.user, t.notice, told=bool(t.ops))
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
        self.events.publish(
            PreemptionCompleted(
                user=rec.user.id,
                victim=p.victim.name,
                claimer=claimer.name if granted and claimer else None,
                seconds=self.loop.time() - p.started,
            )
        )
        self._owner_changed(rec)

    def _abandon(self, claimer: Owner, rec: UserRecord) -> None:
        """Give back a user this claim took (or was taking)."""
        p = rec.preemption
        if p is not None and p.claimer is claimer:
            p.claimer = None
        if rec.owner is claimer:
            self.ledger.hand_over(rec, None, "released")

    def release(self, owner: Owner, user: User, reason: str = "released") -> None:
        """Give a user back to nobody (or to the best queued claim). Media is left as it is:
        the next claimer clears it; the leak collector hangs up a leg nobody takes."""
        rec = self.rec(user)
        if rec.owner is owner:
            p = rec.preemption
            if p is not None and p.claimer is owner and not p.fut.done():
                # the owner's own claim, still preempting in another of its tasks: it resolves
                # now (invariant 10) rather than waiting for a grant that will never come
                lost = f"{reason} by {owner.name} itself"
                p.fut.set_exception(NotOwner(user, owner.name, None, lost))
            if p is not None and p.claimer is owner:
                p.claimer = None
            self.ledger.hand_over(rec, None, reason)
            self._stop_ops(rec, owner, reason)

    def transfer(self, owner: Owner, user: User, new: Owner, reason: str) -> None:
        """Hand a user from one owner to another without a claim (settling into a CallInfo)."""
        rec = self.rec(user)
        self.ledger.fence(owner, rec)
        self.ledger.hand_over(rec, new, reason)
        self._stop_ops(rec, owner, reason)

    def _stop_ops(self, rec: UserRecord, owner: Owner, reason: str) -> None:
        """An owner gave a user away (released, settled) while another of its tasks was still
        waiting on it (a dial, a digit collection, a wait for the hang-up): that wait must not
        outlive the hand-over (invariant 12) — it would read the next owner's digits or answer.
        It is stopped and raises :class:`NotOwner`. A command already issued is left to finish:
        the switch carries it out anyway."""
        current = asyncio.current_task() if self._loop is not None else None
        for op in list(rec.ops):
            if op.owner is owner and op.wait and op.notice is None and op.task is not current:
                notice = Notice(NoticeKind.RELEASED, rec.user, reason=reason)
                self.interrupt(op, notice, hold=False)

    def _owner_changed(self, rec: UserRecord) -> None:
        """Called by the ledger after every hand-over: serve queued claims, arm the collector."""
        if rec.preemption is None and rec.waiters:
            self._serve_waiters(rec)
        self._arm_collector(rec)

    # ------------------------------------------------------------------ leak collector

    def _arm_collector(self, rec: UserRecord) -> None:
        want = rec.owner is None and rec.live_leg is not None and not rec.user.keep
        if want and rec.gc is None and not self._closing:
            grace = rec.user.grace if rec.user.grace is not None else self.grace
            rec.gc = self.loop.call_later(grace, self._collect, rec)
        elif not want and rec.gc is not None:
            rec.gc.cancel()
            rec.gc = None

    def _collect(self, rec: UserRecord) -> None:
        rec.gc = None
        leg = rec.live_leg
        if rec.owner is not None or leg is None or rec.user.keep:
            return
        self.events.publish(LegCollected(user=rec.user.id, leg=leg.id))
        self._end_leg(rec, leg, Cause.COLLECTED)
        self.spawn(self._hangup_command(leg, Cause.COLLECTED, None), f"collect:{leg.id}")

    async def _hangup_command(
        self, leg: Leg, cause: Cause, reason: EndReason | None, tries: int = 2
    ) -> None:
        """Hang up a leg the core has already ended, on the manager's account. A switch that
        fails is asked again (``tries`` in all, a second apart): otherwise the phone would stay
        in a call nobody knows of."""
        token = _CURRENT_OP.set(None)
        try:
            for attempt in range(tries):
                try:
                    async with asyncio.timeout(self.command_timeout):
                        await self.switch.hangup(leg.id, cause, reason)
                    return
                except (SwitchError, TimeoutError) as exc:
                    message = str(exc) or f"no answer within {self.command_timeout} s"
                    self.events.publish(Problem(source=f"hangup:{leg.id}", message=message))
                if attempt + 1 < tries:
                    await asyncio.sleep(1.0)
        finally:
            _CURRENT_OP.reset(token)

    # ------------------------------------------------------------------ legs

    def _new_leg(self, rec: UserRecord, leg_id: str, direction: Direction, state: LegState) -> Leg:
        leg = Leg(leg_id, rec.user, direction, state)
        self._legs[leg_id] = leg
        rec.leg = leg
        self._leg_event(leg)
        self._arm_collector(rec)
        return leg

    def _leg_event(self, leg: Leg) -> None:
        # (``_value_``: Enum.value is a slow descriptor in 3.11, and this runs ~8 times a call)
        cause = leg.cause
        self.events.publish(
            LegStateChanged(
                user=leg.user.id,
                leg=leg.id,
                state=leg.state._value_,
                direction=leg.direction._value_,
                cause=cause._value_ if cause is not None else None,
            )
        )

    def _end_leg(self, rec: UserRecord, leg: Leg, cause: Cause) -> None:
        """Mark a leg ended and forget its media (synchronously)."""
        if leg.state is LegState.ENDED:
            return
        leg.state = LegState.ENDED
        leg.cause = cause
        self._legs.pop(leg.id, None)
        if rec.leg is leg:
            rec.leg = None
            self._forget_media(rec)
        leg._resolve()
        self._leg_event(leg)
        self._arm_collector(rec)

    async def dial(
        self,
        owner: Owner,
        user: User,
        *,
        timeout: float = 30.0,
        caller: User | None = None,
    ) -> Leg:
        """Call ``user`` (or join the call already ringing there) and wait for the answer.

        A ringing call belongs to the manager, not to the flow: if ``owner`` loses the user, the
        leg keeps ringing for the new owner (invariant 4). Raises :class:`CallFailed` subclasses.
        """
        rec = self.rec(user)

        async def run() -> Leg:
            leg = rec.live_leg
            if leg is None:
                leg = self._new_leg(
                    rec, f"L{next(self._ids)}", Direction.OUTBOUND, LegState.DIALLING
                )
                leg.caller = caller
                try:
                    await self._command(
                        "originate",
                        self.switch.originate(
                            leg.id,
                            user.id,
                            caller=caller.id if caller else None,
                            priority=owner.priority,
                        ),
                    )
                except SwitchFailed:
                    self._end_leg(rec, leg, Cause.FAILURE)
                    raise
                except BaseException:
                    # Interrupted (the user was taken) or cancelled while the switch places the
                    # call: a command once issued is carried out, so the call is not dropped —
                    # the makecall's deadline goes on for whoever holds the user next (inv. 4).
                    if leg.live and not leg.connected and leg._timer is None:
                        self._ring_until(rec, leg, self.loop.time() + timeout)
                    raise
                if not leg.connected:
                    self._ring_until(rec, leg, self.loop.time() + timeout)
            elif leg.direction is Direction.INBOUND and not leg.connected:
                raise FlowUsageError(f"user {user.id!r} is calling in: answer the leg instead")
            elif not leg.connected:
                self._ring_until(rec, leg, self.loop.time() + timeout)  # the new owner's patience
            if not leg.connected:
                await leg.outcome()
            if leg.connected:
                return leg
            raise CallFailed.for_cause(user, leg.cause or Cause.FAILURE)

        return await self._run(owner, "dial", (rec,), run, wait=True)

    def _ring_until(self, rec: UserRecord, leg: Leg, deadline: float) -> None:
        """The makecall: the ringing leg's deadline belongs to the manager, not to the flow that
        dialled, so a new owner inherits the call and may move the deadline (invariant 4)."""
        leg.deadline = deadline
        if leg._timer is not None:
            leg._timer.cancel()
        leg._timer = self.loop.call_at(deadline, self._ring_timeout, rec, leg)

    def _ring_timeout(self, rec: UserRecord, leg: Leg) -> None:
        leg._timer = None
        if leg.live and not leg.connected:
            self._end_leg(rec, leg, Cause.NO_ANSWER)
            self.spawn(self._hangup_command(leg, Cause.NO_ANSWER, None), f"no-answer:{leg.id}")

    async def answer(self, owner: Owner, user: User) -> Leg:
        """Answer the user's inbound leg."""
        rec = self.rec(user)

        async def run() -> Leg:
            leg = rec.live_leg
            if leg is None:
                raise FlowUsageError(f"user {user.id!r} has no call to answer")
            if leg.connected:
                return leg
            if leg.direction is not Direction.INBOUND:
                raise FlowUsageError(f"user {user.id!r}'s leg is outbound: dial waits for it")
            await self._command("answer", self.switch.answer(leg.id))
            if leg.live and not leg.connected:
                leg.state = LegState.CONNECTED
                leg._resolve()
                self._leg_event(leg)
            return leg

        return await self._run(owner, "answer", (rec,), run)

    async def hangup(
        self, owner: Owner, user: User, cause: Cause = Cause.NORMAL, reason: EndReason | None = None
    ) -> None:
        """End the user's leg. The user stays owned (idle) by ``owner``."""
        rec = self.rec(user)

        async def run() -> None:
            leg = rec.live_leg
            if leg is None:
                return
            self._end_leg(rec, leg, cause)
            try:
                await self._command("hangup", self.switch.hangup(leg.id, cause, reason))
            except SwitchFailed:
                # The core has ended the leg: the switch must too, or the phone stays in a call
                # nobody knows of. One more try, supervised and bounded, on the manager's account.
                retry = self._hangup_command(leg, cause, reason, tries=1)
                self.spawn(retry, f"hangup-retry:{leg.id}")
                raise

        await self._run(owner, "hangup", (rec,), run)

    async def wait_hangup(self, owner: Owner, user: User) -> Cause:
        """Wait until the user's leg ends; return the cause."""
        rec = self.rec(user)

        async def run() -> Cause:
            leg = rec.live_leg
            if leg is None:
                return Cause.NORMAL
            return await leg.ended()

        return await self._run(owner, "wait_hangup", (rec,), run, wait=True, ends_on_hangup=True)

    # ------------------------------------------------------------------ media

    def _connected_leg(self, rec: UserRecord) -> Leg:
        leg = rec.live_leg
        if leg is None or not leg.connected:
            raise FlowUsageError(f"user {rec.user.id!r} has no connected call")
        return leg

    def _unbridge(self, rec: UserRecord) -> None:
        peer = rec.bridge
        if peer is not None:
            rec.bridge = None
            peer_rec = self.ledger.records[peer.id]
            if peer_rec.bridge is rec.user:
                peer_rec.bridge = None

    def _unmeet(self, rec: UserRecord) -> None:
        m = rec.meeting
        if m is not None:
            rec.meeting = None
            m.members.pop(rec.user, None)
            for other, state in list(m.members.items()):
                if state.whisper_to is rec.user:  # whispering to nobody is silence
                    m.members[other] = MemberState(MeetingMode.MUTED)

    def _forget_media(self, rec: UserRecord) -> None:
        """The leg is gone or cleared: drop every media relation it had."""
        self._unbridge(rec)
        self._unmeet(rec)
        for pb in list(rec.playbacks):
            self._playback_done(pb, completed=False)
        for r in list(rec.recordings):
            self._recording_done(r, r.seconds)
        rec.digits.clear()

    async def connect(self, owner: Owner, a: User, b: User) -> None:
        """Bridge two users' connected legs (each leaves the room it was in)."""
        if a is b:
            raise FlowUsageError("cannot bridge a user to itself")
        ra, rb = self.rec(a), self.rec(b)

        async def run() -> None:
            la, lb = self._connected_leg(ra), self._connected_leg(rb)
            for rec in (ra, rb):
                self._unbridge(rec)
                self._unmeet(rec)
                rec.dirty = True
            ra.bridge, rb.bridge = b, a
            self._media("bridge", owner, (a, b))
            await self._command("bridge", self.switch.bridge(la.id, lb.id))

        await self._run(owner, "connect", (ra, rb), run)

    async def create_meeting(
        self, owner: Owner, meeting_id: str | None = None, *, permanent: bool = False
    ) -> Meeting:
        """Create an empty meeting held by ``owner``."""
        mid = meeting_id or self.new_name("meeting")
        if mid in self._meetings:
            raise FlowUsageError(f"a meeting with id {mid!r} exists already")
        meeting = Meeting(mid, owner, permanent=permanent)
        self._meetings[mid] = meeting
        owner._hold_meeting(meeting)
        self._media("meeting.create", owner, meeting=meeting)
        try:
            await self._command("create_meeting", self.switch.create_meeting(mid))
        except BaseException:
            self._drop_meeting(meeting)
            raise
        return meeting

    async def open_meeting(
        self,
        owner: Owner,
        members: Iterable[User],
        mode: MeetingMode = MeetingMode.SPEAK,
        meeting_id: str | None = None,
    ) -> Meeting:
        """Create a meeting held by ``owner`` with ``members`` in it, as one operation: every
        member is fenced and must have a connected call *before* anything is sent, so a refused
        meeting sends nothing (invariant 2)."""
        users = list(dict.fromkeys(members))
        recs = tuple(self.rec(u) for u in users)

        async def run() -> Meeting:
            for rec in recs:
                self._connected_leg(rec)
            m = await self.create_meeting(owner, meeting_id)
            for user in users:
                await self.join(owner, m, user, mode)
            return m

        return await self._run(owner, "meeting", recs, run)

    def _live_meeting(self, meeting: Meeting) -> Meeting:
        if meeting.ended or self._meetings.get(meeting.id) is not meeting:
            raise UnknownMeeting(meeting.id)
        return meeting

    async def join(
        self,
        owner: Owner,
        meeting: Meeting,
        user: User,
        mode: MeetingMode = MeetingMode.SPEAK,
        whisper_to: User | None = None,
    ) -> None:
        """Put ``user`` in ``meeting`` with ``mode`` (or change its mode there)."""
        rec = self.rec(user)

        async def run() -> None:
            self._live_meeting(meeting)
            leg = self._connected_leg(rec)
            target_leg: str | None = None
            if mode is MeetingMode.WHISPER:
                if whisper_to is None or whisper_to not in meeting.members:
                    raise FlowUsageError("whisper_to must name a member of the meeting")
                target = self.rec(whisper_to).live_leg
                if target is None:
                    raise FlowUsageError(f"user {whisper_to.id!r} has no call")
                target_leg = target.id
            elif whisper_to is not None:
                raise FlowUsageError("whisper_to is only for MeetingMode.WHISPER")
            if rec.meeting is not meeting:
                self._unbridge(rec)
                self._unmeet(rec)
            rec.meeting = meeting
            rec.dirty = True
            meeting.members[user] = MemberState(mode, whisper_to)
            detail = mode.value if whisper_to is None else f"whisper->{whisper_to.id}"
            self._media("join", owner, (user,), meeting, detail)
            await self._command(
                "join", self.switch.join(meeting.id, Member(leg.id, mode, target_leg))
            )

        await self._run(owner, "join", (rec,), run)

    async def leave(self, owner: Owner, meeting: Meeting, user: User) -> None:
        rec = self.rec(user)

        async def run() -> None:
            if rec.meeting is not meeting:
                return
            leg = rec.live_leg
            self._unmeet(rec)
            self._media("leave", owner, (user,), meeting)
            if leg is not None:
                await self._command("leave", self.switch.leave(meeting.id, leg.id))

        await self._run(owner, "leave", (rec,), run)

    async def destroy_meeting(self, owner: Owner, meeting: Meeting) -> None:
        """End a meeting held by ``owner``; its members stay up, connected-idle."""
        if meeting.ended:
            return
        if meeting.holder is not owner and owner is not MANAGER:
            holder = meeting.holder.name if meeting.holder else "nobody"
            raise FlowUsageError(f"{owner.name} does not hold meeting {meeting.id!r} ({holder})")
        self._drop_meeting(meeting)
        self._media("meeting.destroy", owner, meeting=meeting)
        await self._hangup_safe(self.switch.destroy_meeting(meeting.id), "destroy_meeting")

    async def _hangup_safe(self, coro: Awaitable[None], name: str) -> None:
        try:
            await coro
        except SwitchError as exc:
            self.events.publish(Problem(source=name, message=str(exc)))

    def _drop_meeting(self, meeting: Meeting) -> None:
        meeting.ended = True
        self._meetings.pop(meeting.id, None)
        for user in list(meeting.members):
            rec = self.ledger.records[user.id]
            if rec.meeting is meeting:
                rec.meeting = None
        meeting.members.clear()
        for pb in [pb for pb in self._playbacks.values() if pb.target is meeting]:
            self._playback_done(pb, completed=False)
        for r in [r for r in self._recordings.values() if r.target is meeting]:
            self._recording_done(r, r.seconds)
        if meeting.holder is not None:
            meeting.holder._drop_meeting(meeting)

    def hand_meeting(self, owner: Owner, meeting: Meeting, new: Owner) -> None:
        """Make ``new`` answer for the meeting's lifetime (a flow settling a MeetingCall)."""
        if meeting.holder is not owner:
            raise FlowUsageError(f"{owner.name} does not hold meeting {meeting.id!r}")
        owner._drop_meeting(meeting)
        meeting.holder = new
        new._hold_meeting(meeting)

    def _media_target(self, owner: Owner, target: User | Meeting) -> tuple[UserRecord, ...]:
        """The records a media command on ``target`` is fenced on (none for a meeting, which
        ``owner`` must hold instead)."""
        if isinstance(target, Meeting):
            self._live_meeting(target)
            if target.holder is not owner:
                raise FlowUsageError(f"{owner.name} does not hold meeting {target.id!r}")
            return ()
        return (self.rec(target),)

    def _resolve_target(self, target: User | Meeting, recs: tuple[UserRecord, ...]) -> Target:
        """Called inside the fenced operation: the switch target, marking the user dirty."""
        if not recs:
            assert isinstance(target, Meeting)
            return Target(meeting=self._live_meeting(target).id)
        leg = self._connected_leg(recs[0])
        recs[0].dirty = True
        return Target(leg=leg.id)

    async def play(
        self,
        owner: Owner,
        target: User | Meeting,
        media: Tone | Prompt,
        *,
        loop: bool = False,
        wait: bool = True,
    ) -> Playback:
        """Play a tone or prompt to a user or a meeting. With ``wait`` (not for ``loop``),
        return when it has finished."""
        if loop and wait:
            wait = False
        recs = self._media_target(owner, target)

        async def run() -> Playback:
            where_ = self._resolve_target(target, recs)
            self._media(
                "play",
                owner,
                [r.user for r in recs],
                target if isinstance(target, Meeting) else None,
                _describe(media),
            )
            pb_id = await self._command("play", self.switch.play(where_, media, loop=loop))
            pb = Playback(pb_id, target, media, loop)
            self._playbacks[pb_id] = pb
            if recs:
                recs[0].playbacks[pb] = None
            if wait:
                await asyncio.shield(pb.done)
            return pb

        return await self._run(owner, "play", recs, run, wait=wait)

    async def stop_play(self, owner: Owner, playback: Playback) -> None:
        recs = () if isinstance(playback.target, Meeting) else (self.rec(playback.target),)

        async def run() -> None:
            if playback.done.done():
                return
            self._playback_done(playback, completed=False)
            self._media("play.stop", owner, [r.user for r in recs])
            await self._command("stop_play", self.switch.stop_play(playback.id))

        await self._run(owner, "stop_play", recs, run)

    def _playback_done(self, pb: Playback, completed: bool) -> None:
        """A playback ended (finished, stopped, or cut by a clear): resolve it once."""
        self._playbacks.pop(pb.id, None)
        if pb.done.done():
            return
        target = pb.target
        if isinstance(target, User):
            self.ledger.records[target.id].playbacks.pop(pb, None)
        pb.completed = completed
        pb.done.set_result(completed)
        self._media(
            "play.done",
            MANAGER,
            (target,) if isinstance(target, User) else (),
            target if isinstance(target, Meeting) else None,
            "completed" if completed else "stopped",
        )

    async def record(self, owner: Owner, target: User | Meeting, path: str) -> Recording:
        """Start recording a user or a meeting to ``path`` (WAV)."""
        recs = self._media_target(owner, target)

        async def run() -> Recording:
            where_ = self._resolve_target(target, recs)
            self._media(
                "record",
                owner,
                [r.user for r in recs],
                target if isinstance(target, Meeting) else None,
                path,
            )
            rid = await self._command("record", self.switch.record(where_, path))
            recording = Recording(rid, target, path)
            self._recordings[rid] = recording
            if recs:
                recs[0].recordings[recording] = None
            return recording

        return await self._run(owner, "record", recs, run)

    async def stop_record(self, owner: Owner, recording: Recording) -> None:
        recs = () if isinstance(recording.target, Meeting) else (self.rec(recording.target),)

        async def run() -> None:
            if recording.done.done():
                return
            self._media("record.stop", owner, [r.user for r in recs], detail=recording.path)
            await self._command("stop_record", self.switch.stop_record(recording.id))
            self._recording_done(recording, recording.seconds)

        await self._run(owner, "stop_record", recs, run)

    def _recording_done(self, recording: Recording, seconds: float) -> None:
        self._recordings.pop(recording.id, None)
        if isinstance(recording.target, User):
            self.ledger.records[recording.target.id].recordings.pop(recording, None)
        if not recording.done.done():
            recording.seconds = seconds
            recording.done.set_result(seconds)

    async def clear(self, owner: Owner, user: User) -> None:
        """Return the user's leg to connected-idle (docs/design.md, invariant 3, step 5)."""
        rec = self.rec(user)

        async def run() -> None:
            leg = rec.live_leg
            if leg is not None:
                self._media("clear", owner, (user,))
            self._forget_media(rec)
            rec.dirty = False
            if leg is not None:
                await self._command("clear", self.switch.clear(leg.id))

        if owner is MANAGER:
            token = _CURRENT_OP.set(None)
            try:
                await run()
            finally:
                _CURRENT_OP.reset(token)
            return
        await self._run(owner, "clear", (rec,), run)

    async def collect(
        self,
        owner: Owner,
        user: User,
        *,
        max_digits: int = 1,
        timeout: float = 10.0,
        terminators: str = "#",
    ) -> str:
        """Collect up to ``max_digits`` DTMF digits (a terminator ends early; it is not
        returned) within ``timeout`` seconds. Digits pressed before the call are kept."""
        rec = self.rec(user)

        async def run() -> str:
            self._connected_leg(rec)
            digits = ""
            deadline = self.loop.time() + timeout
            while len(digits) < max_digits:
                if rec.digits:
                    d = rec.digits.popleft()
                    if d in terminators:
                        break
                    digits += d
                    continue
                remaining = deadline - self.loop.time()
                if remaining <= 0:
                    break
                fut: asyncio.Future[None] = self.loop.create_future()
                rec.digit_waiter = fut
                try:
                    await asyncio.wait((fut,), timeout=remaining)
                finally:
                    if rec.digit_waiter is fut:
                        rec.digit_waiter = None
            return digits

        return await self._run(owner, "collect", (rec,), run, wait=True)

    async def wait_for(
        self, owner: Owner, fut: asyncio.Future[T], timeout: float | None = None
    ) -> T | None:
        """Wait for ``fut`` as an interruptible wait (``None`` after ``timeout``)."""

        async def run() -> T | None:
            if timeout is None:
                return await asyncio.shield(fut)
            done, _ = await asyncio.wait((fut,), timeout=timeout)
            return fut.result() if done else None

        return await self._run(owner, "wait", (), run, wait=True)

    async def sleep(self, owner: Owner, seconds: float) -> None:
        """Sleep as an interruptible wait (notices about any user are delivered here)."""
        await self._run(owner, "sleep", (), lambda: asyncio.sleep(seconds), wait=True)

    # ------------------------------------------------------------------ switch events

    def _on_switch_event(self, ev: SwitchEvent) -> None:
        if isinstance(ev, DtmfReceived):
            self._on_dtmf(ev)
        elif isinstance(ev, (LegAnswered, LegRinging, LegFailed, LegEnded)):
            leg = self._legs.get(ev.leg)
            if leg is None:
                return  # a late event for a leg the core already ended
            rec = self.ledger.records[leg.user.id]
            if isinstance(ev, LegRinging):
                if leg.state is LegState.DIALLING:
                    leg.state = LegState.RINGING
                    self._leg_event(leg)
            elif isinstance(ev, LegAnswered):
                if leg.state in (LegState.DIALLING, LegState.RINGING):
                    leg.state = LegState.CONNECTED
                    leg._resolve()
                    self._leg_event(leg)
                    self._arm_collector(rec)
            elif isinstance(ev, LegFailed):
                self._end_leg(rec, leg, ev.cause)
            else:
                self._end_leg(rec, leg, ev.cause)
                self._user_gone(rec, ev.cause)
        elif isinstance(ev, PlaybackFinished):
            pb = self._playbacks.get(ev.playback)
            if pb is not None:
                self._playback_done(pb, ev.completed)
        elif isinstance(ev, RecordingFinished):
            r = self._recordings.get(ev.recording)
            if r is not None:
                self._recording_done(r, ev.seconds)
        elif isinstance(ev, InboundCall):
            self._on_inbound(ev)

    def _on_dtmf(self, ev: DtmfReceived) -> None:
        leg = self._legs.get(ev.leg)
        if leg is None:
            return
        rec = self.ledger.records[leg.user.id]
        self.events.publish(DtmfDigit(user=leg.user.id, digit=ev.digit))
        owner = rec.owner
        if owner is not None and owner._digit(rec.user, ev.digit):
            return  # the owner's digit handler took it
        rec.digits.append(ev.digit)
        waiter = rec.digit_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _on_inbound(self, ev: InboundCall) -> None:
        user = self._users.get(ev.user) if ev.user else None
        if user is None:
            self.events.publish(
                Problem(
                    source="inbound",
                    message=f"call from unknown user {ev.user!r} to {ev.to!r} rejected",
                )
            )
            self.spawn(self._reject(ev.leg, Cause.REJECTED), f"reject:{ev.leg}")
            return
        rec = self.ledger.records[user.id]
        if rec.live_leg is not None:
            self.spawn(self._reject(ev.leg, Cause.BUSY), f"reject:{ev.leg}")
            return
        leg = self._new_leg(rec, ev.leg, Direction.INBOUND, LegState.RINGING)
        if self.router is not None:
            try:
                self.router(self, user, leg, ev)
            except Exception as exc:  # a broken router must not lose the call silently
                self.events.publish(Problem(source="router", message=repr(exc)))

    async def _reject(self, leg_id: str, cause: Cause) -> None:
        await self._hangup_safe(self.switch.hangup(leg_id, cause, None), f"reject:{leg_id}")

    def _user_gone(self, rec: UserRecord, cause: Cause) -> None:
        """The user's leg ended from their side: tell the owner, release the user (inv. 7)."""
        owner = rec.owner
        if owner is None:
            return
        user = rec.user
        notice = Notice(NoticeKind.HUNG_UP, user, cause=cause)
        ops = [op for op in rec.ops if op.owner is owner]
        p = rec.preemption
        told = False
        if p is not None and p.claimer is owner:
            # The user hung up while being taken for ``owner``: its claim resolves now, told
            # the user hung up (invariant 10), rather than waiting for a grant that cannot come.
            p.claimer = None
            if not p.fut.done():
                p.fut.set_exception(notice_error(owner, notice))
                told = True
        self.ledger.hand_over(rec, None, "hung_up")
        for op in ops:
            if op.ends_on_hangup:
                told = True
            elif self.interrupt(op, notice, hold=False):
                told = True
                self.events.publish(
                    OpInterrupted(
                        flow=owner.name,
                        op=op.name,
                        users=tuple(r.user.id for r in op.recs),
                        notice=NoticeKind.HUNG_UP,
                    )
                )
        owner._lost(user, notice, told)

    # ------------------------------------------------------------------ auditing

    def audit_command(self, command: str, legs: tuple[str, ...]) -> None:
        """Check invariant 2 at the switch: the issuing operation's owner must hold every user
        whose leg the command names. An auditing switch calls this for every command."""
        op = _CURRENT_OP.get()
        if op is None:
            return  # the manager's own commands (clearing, collecting)
        for leg_id in legs:
            leg = self._legs.get(leg_id)
            if leg is None:
                continue
            rec = self.ledger.records[leg.user.id]
            if rec.owner is not op.owner or op.notice is not None:
                holder = rec.owner.name if rec.owner else None
                self.violations.append(
                    f"{command} on {leg.user.id}'s leg issued by {op.owner.name} "
                    f"while the user is owned by {holder}"
                )


def _retrieve(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled():
        fut.exception()


def _describe(media: Tone | Prompt) -> str:
    return f"tone:{media.name}" if isinstance(media, Tone) else f"prompt:{media.path}"
