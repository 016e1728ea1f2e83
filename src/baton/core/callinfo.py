"""CallInfos: stable relationships that outlive the flow that built them (docs/design.md, Vocabulary).

There are exactly two kinds. A :class:`P2P` is two users talking; a :class:`MeetingCall` is
users in a meeting. A CallInfo owns its users *passively*: it runs no procedure, but it has its
own preemption and hang-up handling, by policy:

* P2P, one party preempted: the partner left alone hears the preemption tone and is hung up
  (``TONE_THEN_HANGUP``, the MLPP behaviour), is hung up at once (``HANGUP``), or is released to
  nobody (``RELEASE``: a flow may take them; the leak collector hangs up otherwise).
* P2P, one party hangs up: the other is hung up (normal call clearing).
* P2P, one party's *line fails* (its leg ended with a cause in :attr:`P2P.LINE_FAILURES`: the
  phone or its connection died, not a hang-up) and the P2P has an ``on_line_lost`` hook: the
  hook is asked first. If it takes the partner on (it has started the flow that claims them —
  the dispatcher queue puts its caller back in the queue), the P2P lets the partner go at once
  and ends; otherwise the call is cleared as for a hang-up.
* MeetingCall: a member that leaves (hung up or preempted) is just gone; when fewer than
  ``min_members`` remain, the meeting ends and the rest are hung up (a permanent meeting with
  ``min_members=0`` never ends by attrition). A member alone in a room that stays open (a
  dial-in room, ``min_members=1``) hears the hold tone until someone joins — never silence
  (invariant 11).

A flow creates a CallInfo and hands users to it with ``Session.settle``.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

from baton.core.errors import BatonError, FlowUsageError
from baton.core.events import CallInfoEnded, CallInfoStarted, NoticeKind, Problem
from baton.core.flow import Flow
from baton.core.model import Meeting, Playback, User
from baton.core.owner import Notice, Owner
from baton.core.port import Cause, EndReason, Tone

if TYPE_CHECKING:
    from baton.core.manager import UserManager

__all__ = ["P2P", "CallInfo", "MeetingCall", "PartnerPolicy"]


class PartnerPolicy(enum.Enum):
    """What a P2P does with the partner when one party is preempted."""

    TONE_THEN_HANGUP = "tone_then_hangup"
    HANGUP = "hangup"
    RELEASE = "release"


class CallInfo(Owner):
    """Base of the two CallInfo kinds."""

    __slots__ = ("_initial", "_manager", "_prefix", "ended", "started_at")

    kind = "callinfo"

    def __init__(self, users: tuple[User, ...], priority: int | None, prefix: str) -> None:
        super().__init__(prefix, -1 if priority is None else priority)
        self._initial = users
        self._prefix = prefix
        self._manager: UserManager | None = None
        self.ended = False
        self.started_at = 0.0

    @property
    def manager(self) -> UserManager:
        """The manager it was settled into (``FlowUsageError`` before it is settled)."""
        if self._manager is None:
            raise FlowUsageError(f"{self.name} has not been settled yet")
        return self._manager

    @property
    def alive(self) -> bool:
        """Settled and not ended."""
        return self._manager is not None and not self.ended

    def take_from(self, flow: Owner) -> None:
        """Take the users from ``flow`` (which must own them all): what ``Session.settle`` does."""
        if self._manager is not None:
            raise FlowUsageError(f"{self.name} is settled already")
        if not isinstance(flow, Flow):
            raise FlowUsageError("only a flow can settle a CallInfo")
        manager = flow.manager
        for user in self._initial:
            rec = manager.rec(user)
            if rec.owner is not flow:
                flow.raise_loss(user)  # taken, or being taken, and not told yet: say so
            manager.ledger.fence(flow, rec, flow.lost_how(user))
        self._check(manager)
        if self.priority < 0:
            self.priority = flow.priority
        self.name = manager.new_name(self._prefix)
        self._manager = manager
        self.started_at = manager.now()
        manager.callinfos[self.name] = self
        self._take_meeting(flow)
        for user in self._initial:
            manager.transfer(flow, user, self, "settled")
        manager.events.publish(
            CallInfoStarted(
                callinfo=self.name,
                users=tuple(u.id for u in self._initial),
                priority=self.priority,
                meeting=self._meeting_id(),
            )
        )
        self._started()

    def adopt(self, flow: Owner, user: User) -> None:
        """Hand one more user from ``flow`` to this CallInfo (a late joiner)."""
        manager = self.manager
        if self.ended:
            raise FlowUsageError(f"{self.name} has ended")
        manager.transfer(flow, user, self, "settled")

    def _check(self, manager: UserManager) -> None:
        """Validate the relationship before taking the users."""

    def _take_meeting(self, flow: Owner) -> None:
        pass

    def _meeting_id(self) -> str | None:
        return None

    def _started(self) -> None:
        pass

    def _end(self, reason: str) -> None:
        """Dissolve: release whoever is left, forget the CallInfo."""
        if self.ended:
            return
        manager = self.manager
        self.ended = True
        for user in list(self.users):
            manager.release(self, user, "released")
        manager.callinfos.pop(self.name, None)
        manager.events.publish(CallInfoEnded(callinfo=self.name, reason=reason))

    def _run_policy(
        self,
        coro_name: str,
        user: User,
        cause: Cause,
        tone: Tone | None,
        seconds: float,
        reason: EndReason | None,
    ) -> None:
        """Play an optional tone to ``user`` then hang it up, in a supervised task."""
        manager = self.manager

        async def run() -> None:
            try:
                if tone is not None:
                    await manager.play(self, user, Tone(tone.name, seconds), wait=True)
                await manager.hangup(self, user, cause, reason)
            except BatonError as exc:  # preempted meanwhile, or the switch failed
                manager.events.publish(Problem(source=self.name, message=str(exc)))
            finally:
                if user in self.users:
                    manager.release(self, user, "released")
                self._after_policy()

        manager.spawn(run(), f"{self.name}:{coro_name}:{user.id}")

    def _after_policy(self) -> None:
        if not self.users:
            self._end("empty")


class P2P(CallInfo):
    """Two users talking. ``priority`` defaults to the settling flow's.

    ``on_line_lost(partner, cause)``, if given, is asked what becomes of ``partner`` when the
    other party's line fails (``cause`` in :attr:`LINE_FAILURES`); True means it took the
    partner on (started the flow that will claim them), and the P2P lets the partner go. It
    runs synchronously inside the core's step and must not raise."""

    __slots__ = ("a", "b", "on_line_lost", "on_preempt", "tone_seconds")

    #: the causes of a leg that ended because the line failed — the phone, its connection or
    #: its media died — rather than because someone hung up (``NORMAL``)
    LINE_FAILURES: ClassVar[frozenset[Cause]] = frozenset(
        {Cause.MEDIA_TIMEOUT, Cause.FAILURE, Cause.UNREACHABLE}
    )

    def __init__(
        self,
        a: User,
        b: User,
        *,
        priority: int | None = None,
        on_preempt: PartnerPolicy = PartnerPolicy.TONE_THEN_HANGUP,
        tone_seconds: float = 3.0,
        on_line_lost: Callable[[User, Cause], bool] | None = None,
    ) -> None:
        if a is b:
            raise FlowUsageError("a P2P needs two different users")
        super().__init__((a, b), priority, "p2p")
        self.a = a
        self.b = b
        self.on_preempt = on_preempt
        self.tone_seconds = tone_seconds
        self.on_line_lost = on_line_lost

    def peer_of(self, user: User) -> User:
        """The other party."""
        if user is self.a:
            return self.b
        if user is self.b:
            return self.a
        raise FlowUsageError(f"user {user.id!r} is not in {self.name}")

    def _check(self, manager: UserManager) -> None:
        for user in (self.a, self.b):
            leg = manager.leg_of(user)
            if leg is None or not leg.connected:
                raise FlowUsageError(f"cannot settle {user.id!r} into a P2P: no connected call")

    def _started(self) -> None:
        manager = self.manager
        if manager.rec(self.a).bridge is not self.b:

            async def bridge() -> None:
                try:
                    await manager.connect(self, self.a, self.b)
                except BatonError as exc:
                    manager.events.publish(Problem(source=self.name, message=str(exc)))

            manager.spawn(bridge(), f"{self.name}:bridge")

    def user_lost(self, user: User, notice: Notice, told: bool) -> None:
        if self.ended:
            return
        partner = self.peer_of(user)
        if partner not in self.users:
            self._end(notice.kind)
            return
        if notice.kind is NoticeKind.HUNG_UP and self._line_lost(partner, notice):
            self.manager.release(self, partner, "line lost")
            self._end("line lost")
        elif notice.kind is NoticeKind.HUNG_UP:
            self._run_policy("clearing", partner, Cause.NORMAL, None, 0.0, None)
        elif self.on_preempt is PartnerPolicy.RELEASE:
            self.manager.release(self, partner, "released")
            self._end("preempted")
        else:
            tone = Tone("preemption") if self.on_preempt is PartnerPolicy.TONE_THEN_HANGUP else None
            reason = EndReason.preempted(notice.by)
            self._run_policy("preempted", partner, Cause.PREEMPTED, tone, self.tone_seconds, reason)

    def _line_lost(self, partner: User, notice: Notice) -> bool:
        """Did the other party's line fail, and did ``on_line_lost`` take ``partner`` on?"""
        hook = self.on_line_lost
        cause = notice.cause
        if hook is None or not isinstance(cause, Cause) or cause not in self.LINE_FAILURES:
            return False
        try:
            return hook(partner, cause)
        except Exception as exc:  # a broken hook must not lose the call: clear it as usual
            self.manager.events.publish(Problem(source=self.name, message=repr(exc)))
            return False


class MeetingCall(CallInfo):
    """Users in a meeting. The MeetingCall answers for the meeting's lifetime once settled."""

    __slots__ = ("_music", "_wake", "meeting", "min_members")

    #: what a member alone in an open room hears until someone joins
    ALONE = Tone("hold")

    def __init__(
        self,
        meeting: Meeting,
        users: tuple[User, ...] | None = None,
        *,
        priority: int | None = None,
        min_members: int = 2,
    ) -> None:
        members = tuple(meeting.members) if users is None else tuple(users)
        super().__init__(members, priority, "meetingcall")
        self.meeting = meeting
        self.min_members = min_members
        self._music: asyncio.Task[None] | None = None
        self._wake: asyncio.Future[None] | None = None

    def _started(self) -> None:
        self._refresh()

    def adopt(self, flow: Owner, user: User) -> None:
        super().adopt(flow, user)
        self._refresh()

    def _alone(self) -> User | None:
        """The one member left in the room, if exactly one (and connected)."""
        if self.ended or len(self.users) != 1:
            return None
        (user,) = self.users
        leg = self.manager.leg_of(user)
        return user if leg is not None and leg.connected else None

    def _refresh(self) -> None:
        """Start or stop the hold tone for a member alone in the room (one supervised task per
        MeetingCall serialises the plays and stops)."""
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)
        if self._music is None and self._alone() is not None:
            self._music = self.manager.spawn(self._play_alone(), f"{self.name}:alone")

    async def _play_alone(self) -> None:
        manager = self.manager
        playing: tuple[User, Playback] | None = None
        try:
            while not self.ended:
                alone = self._alone()
                if playing is not None and (alone is not playing[0] or playing[1].done.done()):
                    if not playing[1].done.done() and playing[0] in self.users:
                        await manager.stop_play(self, playing[1])
                    playing = None
                    continue
                if playing is None and alone is not None:
                    pb = await manager.play(self, alone, self.ALONE, loop=True)
                    playing = (alone, pb)
                    continue
                if playing is None and alone is None:
                    return
                self._wake = manager.loop.create_future()
                await self._wake
        except BatonError as exc:  # the member left or was taken meanwhile
            manager.events.publish(Problem(source=self.name, message=str(exc)))
        finally:
            self._music = None

    def _check(self, manager: UserManager) -> None:
        for user in self._initial:
            if manager.rec(user).meeting is not self.meeting:
                raise FlowUsageError(f"user {user.id!r} is not in meeting {self.meeting.id!r}")

    def _take_meeting(self, flow: Owner) -> None:
        self.manager.hand_meeting(flow, self.meeting, self)

    def _meeting_id(self) -> str | None:
        return self.meeting.id

    def user_lost(self, user: User, notice: Notice, told: bool) -> None:
        if self.ended:
            return
        if len(self.users) < self.min_members:
            for member in list(self.users):
                self._run_policy("closing", member, Cause.NORMAL, None, 0.0, None)
            if not self.users:
                self._end(notice.kind)
            return
        self._refresh()

    def _end(self, reason: str) -> None:
        if self.ended:
            return
        super()._end(reason)
        self._refresh()  # the hold-tone task sees the end and stops
        manager = self.manager
        if not self.meeting.ended and not self.meeting.permanent:

            async def destroy() -> None:
                await manager.destroy_meeting(self, self.meeting)

            manager.spawn(destroy(), f"{self.name}:destroy")
