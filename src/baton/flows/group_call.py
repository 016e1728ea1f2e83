"""Group call and conference: many users in one meeting under a dispatcher.

``group_call``
    Rings the group's members in parallel; those who answer join the dispatcher's meeting, late
    answerers join when they answer. A member already busy in a lower-priority flow is
    preempted (``busy=PREEMPT``) or left alone (``SKIP``); one busy at an equal or higher
    priority is always left alone. It lasts until the dispatcher hangs up or sends ``end``; the
    members are then hung up. Returns each member's fate: ``joined``, ``left``, ``taken``
    (preempted away), ``skipped``, ``busy``, ``no_answer``, ``rejected``, ``incompatible``,
    ``unreachable``, ``cancelled`` (still ringing when the call ended: that ringing stops
    before the members are hung up, and no member is rung after; or never rung, because an
    ``end`` was queued before their turn came).

``conference``
    A group call the dispatcher controls: ``add`` (ring one more), ``kick``, ``mute``,
    ``unmute``, ``listen`` (listen-only), ``speak``, ``end``. When the dispatcher leaves, the
    policy decides: ``END`` hangs everyone up; ``CONTINUE`` leaves the others talking in a
    MeetingCall that outlives the flow.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools

from baton.core import (
    BatonError,
    CallFailed,
    Cause,
    Command,
    FlowInterrupted,
    FlowUsageError,
    InvalidArgument,
    Meeting,
    MeetingCall,
    MeetingMode,
    NotOwner,
    Playback,
    Priority,
    Session,
    Tone,
    User,
    flow,
)
from baton.flows._common import stop_quietly

#: The command a member's task posts to the main loop when it learns the dispatcher was lost.
DISPATCHER_LOST = "dispatcher_lost"


class BusyPolicy(enum.Enum):
    PREEMPT = "preempt"  # take members busy in a lower-priority flow
    SKIP = "skip"  # leave busy members alone


class OnLeave(enum.Enum):
    END = "end"  # everyone is hung up
    CONTINUE = "continue"  # the others go on in a MeetingCall


class _Group:
    """The meeting, and what became of each member."""

    def __init__(self, s: Session, room: Meeting, dispatcher: User, ring: float) -> None:
        self.s = s
        self.room = room
        self.dispatcher = dispatcher
        self.ring = ring
        self.fate: dict[str, str] = {}
        #: what the dispatcher hears while nobody has joined yet (never silence: invariant 11)
        self.ringback: Playback | None = None
        #: each member's ringing task, while it runs
        self.ringing: dict[User, asyncio.Task[None]] = {}
        #: set once the call is being wound up: nothing rings, nothing is played any more
        self.closing = False
        #: commands sent while the dispatcher's phone rang, served first by the command loop
        self.early: list[Command] = []

    def members(self) -> list[User]:
        return [u for u in self.room.members if u is not self.dispatcher]

    def _heard_by_dispatcher(self) -> bool:
        """A member of this call in the room whom the dispatcher hears (a muted or listening
        member is in the room but silent). Only this call's own members count: a dispatcher
        another flow joined to the room (a barge-in) leaves when that flow decides, telling
        this one nothing — counted, its leaving would leave the dispatcher in silence."""
        s, d = self.s, self.dispatcher
        return any(
            u is not d
            and s.owns(u)
            and (
                st.mode is MeetingMode.SPEAK
                or (st.mode is MeetingMode.WHISPER and st.whisper_to is d)
            )
            for u, st in self.room.members.items()
        )

    async def refresh(self) -> None:
        """What the dispatcher hears besides the members: ringback while nobody is in the room
        and someone rings; nothing (a declared wait for ``add`` or the end) when nobody is in
        the room and nobody rings any more.

        Called from a member's ringing task too: the dispatcher lost meanwhile is news for the
        main loop (the call is over, or goes on without them), not a crash of that task — it
        is handed on as a ``dispatcher_lost`` command."""
        try:
            await self._refresh()
        except FlowInterrupted as exc:
            if self.dispatcher not in exc.users:
                raise
            self.s.post(DISPATCHER_LOST)

    async def _refresh(self) -> None:
        s, d = self.s, self.dispatcher
        if self.closing or not s.owns(d) or s.leg_of(d) is None:
            return
        if self._heard_by_dispatcher():
            playback, self.ringback = self.ringback, None
            await stop_quietly(s, playback)
        elif any(f == "ringing" for f in self.fate.values()):
            if self.ringback is None or self.ringback.done.done():
                s.quiet(d, None)
                self.ringback = await s.play(d, Tone("ringback"), loop=True)
        else:
            playback, self.ringback = self.ringback, None
            await stop_quietly(s, playback)
            if s.owns(d):
                s.quiet(d, "no member heard: waiting for a member or the end")

    async def invite(self, members: list[User], busy: BusyPolicy) -> None:
        s = self.s
        takeable: list[User] = []
        # the dispatcher listed among the members is the dispatcher, not a member too: a
        # member's loss handler would swallow the dispatcher's own departure
        for m in dict.fromkeys(m for m in members if m is not self.dispatcher):
            owner = s.owner_of(m)
            if owner is s.flow and self.fate.get(m.id) in ("ringing", "joined"):
                continue  # added again: one ringing task per member, or two would race
            if owner is None or owner is s.flow:
                takeable.append(m)
            elif busy is BusyPolicy.SKIP:
                self.fate[m.id] = "skipped"
            elif owner.priority < s.priority:
                takeable.append(m)
            else:
                self.fate[m.id] = "busy"
        for i, m in enumerate(takeable):
            if "end" in s.queued_commands():
                # the dispatcher pressed End before this member was rung (while their own
                # phone rang, say, or an earlier member was being taken): the command loop
                # reads it after this, and nobody is to ring for a call that is over
                for rest in takeable[i:]:
                    self.fate[rest.id] = "cancelled"
                break
            try:
                await s.claim(m, reason=f"group call by {self.dispatcher.id}")
            except FlowInterrupted as exc:
                # the news may be about the dispatcher, lost while an earlier member was being
                # taken (the claim raises what is pending): the call is over or goes on without
                # them — for the main loop to decide, not a member "busy" to pass over
                if m in exc.users:
                    self.fate[m.id] = "left"
                if self.dispatcher in exc.users:
                    s.post(DISPATCHER_LOST)
                    break
                continue
            except BatonError:
                self.fate[m.id] = "busy"
                continue
            s.on_lost(m, self._lost)
            self.fate[m.id] = "ringing"
            task = s.spawn(self._ring(m), f"{s.name}:ring:{m.id}")
            self.ringing[m] = task
            task.add_done_callback(functools.partial(self._rang, m))
        await self.refresh()

    async def _ring(self, m: User) -> None:
        s = self.s
        try:
            await s.dial(m, timeout=self.ring)
            await s.join(self.room, m)
        except CallFailed as exc:
            self.fate[m.id] = exc.cause.value
            s.release(m)
            await self.refresh()
            return
        except FlowInterrupted:
            return  # _lost recorded it
        self.fate[m.id] = "joined"
        s.note(f"{m.id} joined")
        await self.refresh()

    def _rang(self, m: User, task: asyncio.Task[None]) -> None:
        if self.ringing.get(m) is task:
            del self.ringing[m]

    async def stop_ringing(self) -> None:
        """Stop every member's ringing task and wait until it has: a task left running while
        the members are hung up would dial (or join) a member the hang-ups have passed over,
        and its phone would ring after the call ended. A call already placed is not dropped
        by this (docs/design.md, invariant 4): it rings on until it is hung up."""
        self.closing = True
        stopped = dict(self.ringing)
        for task in stopped.values():
            task.cancel()
        if stopped:
            await asyncio.wait(stopped.values(), timeout=self.s.manager.compensation_timeout)
        for m in stopped:
            if self.fate.get(m.id) == "ringing":  # (a join in flight has landed: joined)
                self.fate[m.id] = "joined" if m in self.room.members else "cancelled"

    async def _lost(self, exc: FlowInterrupted) -> None:
        self.fate[exc.user.id] = "left" if exc.code == "user-hung-up" else "taken"
        await self.refresh()

    async def hang_up_members(self) -> None:
        await self.stop_ringing()  # first, or a member passed over could still be rung
        # each one still ours when its turn comes (the hang-ups before it take time, and a
        # member may be taken meanwhile: that one is simply no longer ours to hang up)
        for m in [*self.members(), *self.s.users]:
            if m is not self.dispatcher and self.s.owns(m) and self.s.leg_of(m) is not None:
                with contextlib.suppress(NotOwner, FlowInterrupted):
                    await self.s.hangup(m)


async def _start(s: Session, dispatcher: User, ring: float) -> _Group | list[Command]:
    """Reach the dispatcher and open the room: the group, and the commands sent while the
    dispatcher's phone rang (served once it answered) — or, if ``end`` was sent meanwhile,
    that ringing stopped at once and the commands read (the ``end`` last), none served yet."""
    await s.claim(dispatcher)
    early: list[Command] = []
    deadline = s.now() + _DISPATCHER_RING
    while True:
        got = await s.dial_or_command(dispatcher, timeout=max(0.0, deadline - s.now()))
        if not isinstance(got, Command):
            break
        early.append(got)
        if got.name == "end":
            leg = s.leg_of(dispatcher)
            if leg is not None and not leg.connected:
                await s.hangup(dispatcher, Cause.CANCELLED)
            return early
    room = await s.meeting(dispatcher)
    group = _Group(s, room, dispatcher, ring)
    group.early = early
    return group


#: How long the dispatcher's own phone rings for a group call or a conference.
_DISPATCHER_RING = 30.0


def _over_before_it_began(members: list[User], commands: list[Command]) -> dict[str, str]:
    """``end`` was sent while the dispatcher's phone rang: nobody was rung; the commands sent
    before it are refused, the ``end`` answered."""
    for cmd in commands:
        if cmd.name == "end":
            cmd.reply("ended")
        else:
            cmd.fail(FlowUsageError("the call was ended before the dispatcher answered"))
    return {m.id: "cancelled" for m in members}


async def _until_end(s: Session, group: _Group) -> str:
    """Serve commands until the dispatcher leaves or sends ``end``; returns why it ended.
    Those sent while the dispatcher's phone rang are served first, in order."""
    while True:
        if group.early:
            cmd: Command | None = group.early.pop(0)
        else:
            try:
                cmd = await s.command()
            except FlowInterrupted as exc:
                if group.dispatcher in exc.users:  # (users lost in one instant: told together)
                    return "dispatcher left"
                continue
        if cmd is None:
            continue
        if cmd.name == DISPATCHER_LOST:
            cmd.reply("noted")
            return "dispatcher left"
        if cmd.name == "end":
            cmd.reply("ended")
            return "ended"
        try:
            cmd.reply(await _control(s, group, cmd))
        except FlowInterrupted as exc:
            cmd.fail(exc)
            if group.dispatcher in exc.users:  # lost while serving the command: not swallowed
                return "dispatcher left"
        except BatonError as exc:
            cmd.fail(exc)
        # a kick, a mute or a listen may leave the dispatcher hearing nobody (the last member
        # who spoke): the declared wait for ``add`` or the end, never silence (docs/flows.md)
        await group.refresh()


async def _control(s: Session, group: _Group, cmd: Command) -> str:
    user_id = cmd.args.get("user")
    if not isinstance(user_id, str):
        raise InvalidArgument(f"command {cmd.name} needs a 'user' argument (a user id)", "user")
    user = s.user(user_id)
    if cmd.name == "add":
        await group.invite([user], BusyPolicy.PREEMPT)
        return group.fate.get(user.id, "?")
    if user not in group.room.members or user is group.dispatcher:
        raise FlowUsageError(f"{user.id!r} is not a member of this conference")
    if cmd.name == "kick":
        await s.hangup(user)
        group.fate[user.id] = "kicked"
        return "kicked"
    mode = {
        "mute": MeetingMode.MUTED,
        "unmute": MeetingMode.SPEAK,
        "speak": MeetingMode.SPEAK,
        "listen": MeetingMode.LISTEN,
    }[cmd.name]
    await s.join(group.room, user, mode)
    return mode.value


@flow(priority=Priority.PRIORITY, permission="group_call", commands={"end": "end the call"})
async def group_call(
    s: Session,
    dispatcher: User,
    members: list[User],
    busy: BusyPolicy = BusyPolicy.PREEMPT,
    ring: float = 30.0,
) -> dict[str, str]:
    """Ring ``members`` in parallel and connect those who answer with ``dispatcher``."""
    group = await _start(s, dispatcher, ring)
    if isinstance(group, list):
        s.note("group call ended while the dispatcher's phone rang")
        return _over_before_it_began(members, group)
    s.compensate(group.hang_up_members, label="hang_up_members")
    await group.invite(list(members), busy)
    why = await _until_end(s, group)
    await group.stop_ringing()  # the clean-up hangs up whoever still rings
    s.note(f"group call over: {why}")
    return group.fate


CONFERENCE_COMMANDS = {
    "add": "ring one more member (user)",
    "kick": "hang up a member (user)",
    "mute": "a member is no longer heard (user)",
    "unmute": "a muted member is heard again (user)",
    "listen": "a member only listens (user)",
    "speak": "a member speaks and listens (user)",
    "end": "end the conference for everyone",
}


@flow(priority=Priority.PRIORITY, permission="conference", commands=CONFERENCE_COMMANDS)
async def conference(
    s: Session,
    dispatcher: User,
    members: list[User],
    on_leave: OnLeave = OnLeave.END,
    ring: float = 30.0,
) -> dict[str, str]:
    """A conference under ``dispatcher``'s control."""
    group = await _start(s, dispatcher, ring)
    if isinstance(group, list):
        s.note("conference ended while the dispatcher's phone rang")
        return _over_before_it_began(members, group)
    # a conference that fails or is cancelled half-way hangs its members up, as a group call
    # does (settled or hung up already, they are not its any more)
    s.compensate(group.hang_up_members, label="hang_up_members")
    await group.invite(list(members), BusyPolicy.PREEMPT)
    why = await _until_end(s, group)
    await group.stop_ringing()  # before the members are counted, settled or hung up
    talking = [m for m in group.members() if s.owns(m)]
    if why == "dispatcher left" and on_leave is OnLeave.CONTINUE and len(talking) >= 2:
        if s.owns(dispatcher) and s.meeting_of(dispatcher) is group.room:
            await s.leave(group.room, dispatcher)
        s.settle(MeetingCall(group.room, tuple(talking)))
        s.note(f"conference continues without {dispatcher.id}")
        return group.fate
    await group.hang_up_members()
    return group.fate
