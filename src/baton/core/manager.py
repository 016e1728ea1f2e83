"""The UserManager: the single entry point for every call-control operation on a user.

It is the *user_man* of docs/design.md (Vocabulary; invariants 2–8), and a façade: it owns the
registry of users, legs and meetings and the supervisor of every task it starts, offers every
call-control operation, and hands each concern that has a life of its own to a part with its own
module (docs/core.md draws the map):

=====================  ==========================================================  ============
part                   what it does                                                module
=====================  ==========================================================  ============
``ledger``             who owns each user under which epoch; the one hand-over     ledger.py
``operations``         fenced, interruptible operations; interrupting them         ops.py
``claims``             the claim and preemption protocol                           claims.py
``collector``          hangs up legs nobody holds; the manager's own hang-ups      collector.py
``media``              who is bridged to whom, in which meeting, played, recorded  media.py
``switch_events``      switch events → leg state, hang-ups, digits, inbound calls  translate.py
=====================  ==========================================================  ============

The parts call back only through the manager's public methods, and reach owners only through
the owner hooks (:class:`~baton.core.owner.OwnerHooks`).

Theory of operation
-------------------
*Operations.* Every command a flow issues runs as an operation
(:meth:`~baton.core.ops.Operations.run`): fenced first — nothing reaches the switch for an owner
that does not hold every named user — then awaited in the caller's own task, interruptible when
the owner loses a user. The operation methods here (``dial``, ``connect``, ``play``…) say what
each command does; ``ops.py`` says how every one of them is fenced and stopped.

*Calls.* A dial issues the origination under the caller's fence, then hands the ringing leg to
the manager's *makecall*: the leg, its future and its ring deadline belong to the manager, not to
the flow that dialled, so a new owner inherits a ringing call and may move its deadline
(invariant 4). The makecall is a timer rather than a task: it has nothing to await.

*Media.* As each media command is issued the manager records it in the media book and marks the
user *dirty*; clearing a dirty user returns it to connected-idle (step 5 of a preemption).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, TypeVar

from baton.core.callinfo import CallInfo
from baton.core.claims import ClaimProtocol
from baton.core.collector import Collector
from baton.core.errors import (
    CallFailed,
    FlowUsageError,
    SwitchFailed,
    UnknownMeeting,
    UnknownUser,
)
from baton.core.events import EventBus, LegStateChanged, Problem
from baton.core.flow import Flow, FlowSpec
from baton.core.ledger import Ledger, UserRecord
from baton.core.media import MediaBook
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
from baton.core.ops import CURRENT_OP, MANAGER, Op, Operations
from baton.core.owner import Owner
from baton.core.port import (
    Cause,
    EndReason,
    InboundCall,
    LegGone,
    MeetingMode,
    Member,
    Prompt,
    Switch,
    SwitchError,
    Target,
    Tone,
)
from baton.core.translate import SwitchEvents

__all__ = ["MANAGER", "UserManager"]

T = TypeVar("T")

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
        self.ledger = Ledger(self.events, self.owner_changed)
        self._users: dict[str, User] = {}
        self._by_number: dict[str, User] = {}
        self._legs: dict[str, Leg] = {}
        #: The live leg with a switch id, or None (ended, or never the core's). (The dict's own
        #: lookup, bound: the switch-event translation calls it for every event.)
        self.find_leg: Callable[[str], Leg | None] = self._legs.get
        self.flows: dict[str, Flow] = {}
        self.callinfos: dict[str, CallInfo] = {}
        # dicts used as ordered sets: iterating a set of objects follows their addresses, and a
        # run must replay exactly (a seeded exploration, a shrunk failing example)
        self._tasks: dict[asyncio.Task[Any], None] = {}
        self._ids = itertools.count(1)
        self._names: dict[str, itertools.count[int]] = {}
        self._closing = False
        self.router: _Router | None = None
        #: Called with every operation as it starts (``baton check`` lands events there).
        self.on_op: Callable[[Op], None] | None = None
        #: Fencing violations seen by an auditing switch (the sim): must stay empty.
        self.violations: list[str] = []
        # the parts (the module doc's table)
        self.operations = Operations(self)
        self.media = MediaBook(self.ledger, self.events)
        self.claims = ClaimProtocol(self, self._ids)
        self.collector = Collector(self)
        self.switch_events = SwitchEvents(self)
        switch.set_listener(self.switch_events.on_event)

    # ------------------------------------------------------------------ basics

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            # What _now gives from here on, without its call per event (about 19 a call)
            self.events.set_clock(self._loop.time)
        return self._loop

    def _now(self) -> float:
        return self._loop.time() if self._loop is not None else 0.0

    @property
    def has_loop(self) -> bool:
        """Whether the manager has met its event loop yet (its first use inside one)."""
        return self._loop is not None

    @property
    def closing(self) -> bool:
        """:meth:`close` has begun: no new flows, no new collection timers."""
        return self._closing

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
        if rec.owner is not None or rec.waiters or rec in self.claims.preempting:
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

    def find_user(self, user_id: str) -> User | None:
        """The user with this id, or None."""
        return self._users.get(user_id)

    def users(self) -> list[User]:
        """Every registered user."""
        return list(self._users.values())

    def by_number(self, number: str) -> User | None:
        """The user who owns a number, if any."""
        return self._by_number.get(number)

    def meeting(self, meeting_id: str) -> Meeting:
        """The live meeting with this id; :class:`UnknownMeeting` otherwise."""
        m = self.media.meetings.get(meeting_id)
        if m is None:
            raise UnknownMeeting(meeting_id)
        return m

    def meetings(self) -> list[Meeting]:
        """Every live meeting."""
        return list(self.media.meetings.values())

    def rec(self, user: User) -> UserRecord:
        if not isinstance(user, User):  # an id where a User belongs: say so, and the fix
            hint = f"; look a user up by id with s.user({user!r})" if isinstance(user, str) else ""
            raise FlowUsageError(f"expected a User, got {type(user).__name__} {user!r}{hint}")
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
        if self._closing:
            raise FlowUsageError("the manager is closing; no new flows")
        flow = Flow(self, spec, args, kwargs, priority)
        self.flows[flow.name] = flow
        try:
            flow.launch()
        except FlowUsageError:  # bad arguments: the flow never ran, so it is not running
            del self.flows[flow.name]
            raise
        return flow

    # ------------------------------------------------------------------ operations

    async def _command(self, name: str, coro: Awaitable[T]) -> T:
        """Await a switch command, turning a :class:`SwitchError` into :class:`SwitchFailed`.

        A command refused because its leg already ended at the switch (:class:`LegGone`) raced
        a hang-up whose event is still on its way: wait for that event (bounded by
        ``command_timeout``). It interrupts the operation with the notice the flow must get —
        ``UserHungUp``, not a switch failure (invariant 7)."""
        try:
            return await coro
        except LegGone as exc:
            leg = self._legs.get(exc.leg)
            if leg is not None and leg.live:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.command_timeout):
                        await asyncio.shield(leg.ended())
            raise SwitchFailed(name, str(exc)) from exc
        except SwitchError as exc:
            raise SwitchFailed(name, str(exc)) from exc

    # ------------------------------------------------------------------ claims (core/claims.py)

    def claim(
        self,
        claimer: Owner,
        users: Iterable[User],
        *,
        wait: float | None = None,
        reason: str | None = None,
    ) -> Coroutine[Any, Any, None]:
        """Take ``users`` for ``claimer`` by the preemption protocol (:meth:`ClaimProtocol.claim`)."""
        return self.claims.claim(claimer, users, wait=wait, reason=reason)

    def release(self, owner: Owner, user: User, reason: str = "released") -> None:
        """Give a user back to nobody (or to the best queued claim). Media is left as it is:
        the next claimer clears it; the leak collector hangs up a leg nobody takes."""
        self.claims.release(owner, user, reason)

    def transfer(self, owner: Owner, user: User, new: Owner, reason: str) -> None:
        """Hand a user from one owner to another without a claim (settling into a CallInfo)."""
        self.claims.transfer(owner, user, new, reason)

    def owner_changed(self, rec: UserRecord) -> None:
        """Called by the ledger after every hand-over: serve queued claims, arm the collector."""
        if rec.preemption is None and rec.waiters:
            self.claims.serve_waiters(rec)
        self.collector.arm(rec)

    # ------------------------------------------------------------------ legs

    def new_leg(self, rec: UserRecord, leg_id: str, direction: Direction, state: LegState) -> Leg:
        """Register a new leg of the user's (outbound: being placed; inbound: ringing)."""
        leg = Leg(leg_id, rec.user, direction, state)
        self._legs[leg_id] = leg
        rec.leg = leg
        self.publish_leg(leg)
        self.collector.arm(rec)
        return leg

    def publish_leg(self, leg: Leg) -> None:
        """Publish the leg's state as it is now."""
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

    def end_leg(self, rec: UserRecord, leg: Leg, cause: Cause) -> None:
        """Mark a leg ended and forget its media (synchronously)."""
        if leg.state is LegState.ENDED:
            return
        leg.state = LegState.ENDED
        leg.cause = cause
        self._legs.pop(leg.id, None)
        if rec.leg is leg:
            rec.leg = None
            self.media.forget(rec)
        leg.resolve()
        self.publish_leg(leg)
        self.collector.arm(rec)

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
        run = self._dialling(owner, rec, timeout, caller, None)
        leg = await self.operations.run(owner, "dial", (rec,), run, wait=True)
        assert leg is not None  # nothing to stop the wait but the answer
        return leg

    async def dial_until(
        self,
        owner: Owner,
        user: User,
        until: asyncio.Future[None],
        *,
        timeout: float = 30.0,
        caller: User | None = None,
    ) -> Leg | None:
        """:meth:`dial`, but stop waiting for the answer once ``until`` is done: ``None`` then,
        the phone ringing on (its deadline is the manager's, as for any dial) for the owner to
        hang up or dial again. ``until`` done in the same instant as the answer or the failure
        wins: the owner reads the leg's state. One operation, interrupted like a dial."""
        rec = self.rec(user)
        run = self._dialling(owner, rec, timeout, caller, until)
        return await self.operations.run(owner, "dial", (rec,), run, wait=True)

    def _dialling(
        self,
        owner: Owner,
        rec: UserRecord,
        timeout: float,
        caller: User | None,
        until: asyncio.Future[None] | None,
    ) -> Callable[[], Awaitable[Leg | None]]:
        """The work of a dial: place the call (or join the one ringing), await the answer —
        or ``until``, once the call is placed (``None`` then; the phone rings on). All in the
        dialling task: the call is placed before anything can interrupt the wait."""
        user = rec.user

        async def run() -> Leg | None:
            leg = rec.live_leg
            if leg is None:
                leg = self.new_leg(
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
                    self.end_leg(rec, leg, Cause.FAILURE)
                    raise
                except BaseException:
                    # Interrupted (the user was taken) or cancelled while the switch places the
                    # call: a command once issued is carried out, so the call is not dropped —
                    # the makecall's deadline goes on for whoever holds the user next (inv. 4).
                    if leg.live and not leg.connected and leg.ring_timer is None:
                        self._ring_until(rec, leg, self.loop.time() + timeout)
                    raise
                if not leg.connected:
                    self._ring_until(rec, leg, self.loop.time() + timeout)
            elif leg.direction is Direction.INBOUND and not leg.connected:
                raise FlowUsageError(f"user {user.id!r} is calling in: answer the leg instead")
            elif not leg.connected:
                self._ring_until(rec, leg, self.loop.time() + timeout)  # the new owner's patience
            if not leg.connected:
                if until is None:
                    await leg.outcome()
                else:
                    await asyncio.wait((leg.outcome(), until), return_when=asyncio.FIRST_COMPLETED)
                    if until.done():
                        return None
            if leg.connected:
                return leg
            raise CallFailed.for_cause(user, leg.cause or Cause.FAILURE)

        return run

    def _ring_until(self, rec: UserRecord, leg: Leg, deadline: float) -> None:
        """The makecall: the ringing leg's deadline belongs to the manager, not to the flow that
        dialled, so a new owner inherits the call and may move the deadline (invariant 4)."""
        leg.deadline = deadline
        if leg.ring_timer is not None:
            leg.ring_timer.cancel()
        leg.ring_timer = self.loop.call_at(deadline, self._ring_timeout, rec, leg)

    def _ring_timeout(self, rec: UserRecord, leg: Leg) -> None:
        leg.ring_timer = None
        if leg.live and not leg.connected:
            self.end_leg(rec, leg, Cause.NO_ANSWER)
            self.spawn(self.collector.hang_up(leg, Cause.NO_ANSWER, None), f"no-answer:{leg.id}")

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
                leg.resolve()
                self.publish_leg(leg)
            return leg

        return await self.operations.run(owner, "answer", (rec,), run)

    async def hangup(
        self, owner: Owner, user: User, cause: Cause = Cause.NORMAL, reason: EndReason | None = None
    ) -> None:
        """End the user's leg. The user stays owned (idle) by ``owner``."""
        rec = self.rec(user)

        async def run() -> None:
            leg = rec.live_leg
            if leg is None:
                return
            self.end_leg(rec, leg, cause)
            # supervised: the issuer may stop waiting (cancelled) while the switch carries the
            # hang-up out, and a failure must be retried all the same
            await asyncio.shield(
                self.spawn(self._switch_hangup(leg, cause, reason), f"hangup:{leg.id}")
            )

        await self.operations.run(owner, "hangup", (rec,), run)

    async def _switch_hangup(self, leg: Leg, cause: Cause, reason: EndReason | None) -> None:
        """The switch's side of a hang-up the core has done (the leg is ended here already)."""
        try:
            await self._command("hangup", self.switch.hangup(leg.id, cause, reason))
        except SwitchFailed:
            # The switch must end the call too, or the phone stays in a call nobody knows of.
            # One more try, supervised and bounded, on the manager's account.
            retry = self.collector.hang_up(leg, cause, reason, tries=1)
            self.spawn(retry, f"hangup-retry:{leg.id}")
            raise

    async def wait_hangup(self, owner: Owner, user: User) -> Cause:
        """Wait until the user's leg ends; return the cause."""
        rec = self.rec(user)

        async def run() -> Cause:
            leg = rec.live_leg
            if leg is None:
                return Cause.NORMAL
            return await leg.ended()

        return await self.operations.run(
            owner, "wait_hangup", (rec,), run, wait=True, ends_on_hangup=True
        )

    # ------------------------------------------------------------------ media

    def _connected_leg(self, rec: UserRecord) -> Leg:
        leg = rec.live_leg
        if leg is None or not leg.connected:
            raise FlowUsageError(f"user {rec.user.id!r} has no connected call")
        return leg

    async def connect(self, owner: Owner, a: User, b: User) -> None:
        """Bridge two users' connected legs (each leaves the room it was in)."""
        if a is b:
            raise FlowUsageError("cannot bridge a user to itself")
        ra, rb = self.rec(a), self.rec(b)

        async def run() -> None:
            la, lb = self._connected_leg(ra), self._connected_leg(rb)
            for rec in (ra, rb):
                self.media.unbridge(rec)
                self.media.unmeet(rec)
                rec.dirty = True
            ra.bridge, rb.bridge = b, a
            self.media.publish("bridge", owner, (a, b))
            try:
                await self._command("bridge", self.switch.bridge(la.id, lb.id))
            except SwitchFailed:
                # The switch refused: the two are not talking, whatever the records said for
                # the instant the command was on its way — believed bridged, a flow would
                # settle them into a call in which nobody hears anybody (invariant 11)
                if ra.bridge is b and rb.bridge is a:
                    self.media.unbridge(ra)
                    self.media.publish("bridge.failed", owner, (a, b))
                raise

        await self.operations.run(owner, "connect", (ra, rb), run)

    async def create_meeting(
        self, owner: Owner, meeting_id: str | None = None, *, permanent: bool = False
    ) -> Meeting:
        """Create an empty meeting held by ``owner``."""
        mid = meeting_id or self.new_name("meeting")
        if mid in self.media.meetings:
            raise FlowUsageError(f"a meeting with id {mid!r} exists already")
        meeting = Meeting(mid, owner, permanent=permanent)
        self.media.meetings[mid] = meeting
        owner.meeting_held(meeting)
        self.media.publish("meeting.create", owner, meeting=meeting)
        try:
            await self._command("create_meeting", self.switch.create_meeting(mid))
        except BaseException:
            self.drop_meeting(meeting)
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

        return await self.operations.run(owner, "meeting", recs, run)

    def _live_meeting(self, meeting: Meeting) -> Meeting:
        if meeting.ended or self.media.meetings.get(meeting.id) is not meeting:
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
            before = meeting.members.get(user) if rec.meeting is meeting else None
            if rec.meeting is not meeting:
                self.media.unbridge(rec)
                self.media.unmeet(rec)
            rec.meeting = meeting
            rec.dirty = True
            state = meeting.members[user] = MemberState(mode, whisper_to)
            detail = mode.value if whisper_to is None else f"whisper->{whisper_to.id}"
            self.media.publish("join", owner, (user,), meeting, detail)
            try:
                await self._command(
                    "join", self.switch.join(meeting.id, Member(leg.id, mode, target_leg))
                )
            except SwitchFailed:
                # The switch refused: the user is not in the room as asked — back to what it
                # was there (a mode change refused), or out of it (a join refused), so nobody
                # counts on a member who is not there (invariant 11)
                if rec.meeting is meeting and meeting.members.get(user) is state:
                    if before is not None:
                        meeting.members[user] = before
                    else:
                        self.media.unmeet(rec)
                    self.media.publish("join.failed", owner, (user,), meeting, detail)
                raise

        await self.operations.run(owner, "join", (rec,), run)

    async def leave(self, owner: Owner, meeting: Meeting, user: User) -> None:
        rec = self.rec(user)

        async def run() -> None:
            if rec.meeting is not meeting:
                return
            leg = rec.live_leg
            self.media.unmeet(rec)
            self.media.publish("leave", owner, (user,), meeting)
            if leg is not None:
                await self._command("leave", self.switch.leave(meeting.id, leg.id))

        await self.operations.run(owner, "leave", (rec,), run)

    async def destroy_meeting(self, owner: Owner, meeting: Meeting) -> None:
        """End a meeting held by ``owner``; its members stay up, connected-idle."""
        if meeting.ended:
            return
        if meeting.holder is not owner and owner is not MANAGER:
            holder = meeting.holder.name if meeting.holder else "nobody"
            raise FlowUsageError(f"{owner.name} does not hold meeting {meeting.id!r} ({holder})")
        self.drop_meeting(meeting)
        self.media.publish("meeting.destroy", owner, meeting=meeting)
        await self._hangup_safe(self.switch.destroy_meeting(meeting.id), "destroy_meeting")

    async def _hangup_safe(self, coro: Awaitable[None], name: str) -> None:
        try:
            await coro
        except SwitchError as exc:
            self.events.publish(Problem(source=name, message=str(exc)))

    def drop_meeting(self, meeting: Meeting) -> None:
        """Forget a meeting without a switch command (its holder ended, or it was never made)."""
        self.media.drop_meeting(meeting)

    def hand_meeting(self, owner: Owner, meeting: Meeting, new: Owner) -> None:
        """Make ``new`` answer for the meeting's lifetime (a flow settling a MeetingCall)."""
        if meeting.holder is not owner:
            raise FlowUsageError(f"{owner.name} does not hold meeting {meeting.id!r}")
        owner.meeting_dropped(meeting)
        meeting.holder = new
        new.meeting_held(meeting)

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
            self.media.publish(
                "play",
                owner,
                [r.user for r in recs],
                target if isinstance(target, Meeting) else None,
                _describe(media),
            )
            pb_id = await self._command("play", self.switch.play(where_, media, loop=loop))
            pb = Playback(pb_id, target, media, loop)
            self.media.playbacks[pb_id] = pb
            if recs:
                recs[0].playbacks[pb] = None
            if wait:
                await asyncio.shield(pb.done)
            return pb

        return await self.operations.run(owner, "play", recs, run, wait=wait)

    async def stop_play(self, owner: Owner, playback: Playback) -> None:
        recs = () if isinstance(playback.target, Meeting) else (self.rec(playback.target),)

        async def run() -> None:
            if playback.done.done():
                return
            self.media.playback_done(playback, completed=False)
            self.media.publish("play.stop", owner, [r.user for r in recs])
            await self._command("stop_play", self.switch.stop_play(playback.id))

        await self.operations.run(owner, "stop_play", recs, run)

    async def record(self, owner: Owner, target: User | Meeting, path: str) -> Recording:
        """Start recording a user or a meeting to ``path`` (WAV)."""
        recs = self._media_target(owner, target)

        async def run() -> Recording:
            where_ = self._resolve_target(target, recs)
            self.media.publish(
                "record",
                owner,
                [r.user for r in recs],
                target if isinstance(target, Meeting) else None,
                path,
            )
            try:
                rid = await self._command("record", self.switch.record(where_, path))
            except SwitchFailed:
                # refused: no file will come, and nothing else will say this recording is over
                users = [r.user for r in recs]
                meeting = target if isinstance(target, Meeting) else None
                self.media.publish("record.done", owner, users, meeting, path)
                raise
            recording = Recording(rid, target, path)
            self.media.recordings[rid] = recording
            if recs:
                recs[0].recordings[recording] = None
            return recording

        return await self.operations.run(owner, "record", recs, run)

    async def stop_record(self, owner: Owner, recording: Recording) -> None:
        recs = () if isinstance(recording.target, Meeting) else (self.rec(recording.target),)

        async def run() -> None:
            if recording.done.done():
                return
            self.media.publish("record.stop", owner, [r.user for r in recs], detail=recording.path)
            await self._command("stop_record", self.switch.stop_record(recording.id))
            self.media.recording_done(recording, recording.seconds)

        await self.operations.run(owner, "stop_record", recs, run)

    async def clear(self, owner: Owner, user: User) -> None:
        """Return the user's leg to connected-idle (docs/design.md, invariant 3, step 5)."""
        rec = self.rec(user)

        async def run() -> None:
            leg = rec.live_leg
            if leg is not None:
                self.media.publish("clear", owner, (user,))
            self.media.forget(rec)
            rec.dirty = False
            if leg is not None:
                await self._command("clear", self.switch.clear(leg.id))

        if owner is MANAGER:
            token = CURRENT_OP.set(None)
            try:
                await run()
            finally:
                CURRENT_OP.reset(token)
            return
        await self.operations.run(owner, "clear", (rec,), run)

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

        return await self.operations.run(owner, "collect", (rec,), run, wait=True)

    async def wait_for(
        self, owner: Owner, fut: asyncio.Future[T], timeout: float | None = None
    ) -> T | None:
        """Wait for ``fut`` as an interruptible wait (``None`` after ``timeout``)."""

        async def run() -> T | None:
            if timeout is None:
                return await asyncio.shield(fut)
            done, _ = await asyncio.wait((fut,), timeout=timeout)
            return fut.result() if done else None

        return await self.operations.run(owner, "wait", (), run, wait=True)

    async def sleep(self, owner: Owner, seconds: float) -> None:
        """Sleep as an interruptible wait (notices about any user are delivered here)."""
        await self.operations.run(owner, "sleep", (), lambda: asyncio.sleep(seconds), wait=True)

    # ------------------------------------------------------------------ auditing

    def audit_command(self, command: str, legs: tuple[str, ...]) -> None:
        """Check invariant 2 at the switch: the issuing operation's owner must hold every user
        whose leg the command names. An auditing switch calls this for every command."""
        op = CURRENT_OP.get()
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


def _describe(media: Tone | Prompt) -> str:
    return f"tone:{media.name}" if isinstance(media, Tone) else f"prompt:{media.path}"
