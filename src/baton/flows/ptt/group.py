"""Push-to-talk group calls: a half-duplex meeting with floor control.

Members are rung in parallel and join in *listen* mode, so a member who joins late hears the
current talker at once. The floor decides who speaks: the holder is switched to *speak*, everyone
else listens. Members press the PTT button as DTMF (``*`` to request, ``#`` to release, ``9``
for an emergency — configurable), console users and dispatchers through commands
(``request``, ``release``, ``override``). A user hears the tones a PTT user expects: talk permit
on grant, floor denied, floor revoked, and everyone hears floor idle when the floor falls free.

Floor rules (see :mod:`baton.flows.ptt.floor`): one talker; a strictly higher priority revokes
the talker (who stays in the call, muted, and hears the revoke tone); others queue by priority
then arrival and are told their position; a burst longer than ``max_burst`` is taken back.
Members talk at ``member_priority``, dispatchers at ``dispatcher_priority`` (``override``). An
emergency raised in the group (``emergency``, or the emergency digit) puts it in emergency
state: every talk burst gets emergency priority until an authorised dispatcher sends
``clear_emergency``; the member who raised it is given the floor.

The group stays up for ``hang_time`` seconds after the last talk burst, then ends, unless it is
``persistent`` (a standing channel), which ends only on ``end``. Members are hung up at the end.
"""

from __future__ import annotations

import contextlib

from baton.core import (
    BatonError,
    CallFailed,
    Command,
    FlowInterrupted,
    FlowUsageError,
    InvalidArgument,
    Meeting,
    MeetingMode,
    NotOwner,
    Playback,
    Priority,
    Session,
    Tone,
    User,
    flow,
)
from baton.flows.ptt.events import (
    FloorDenied,
    FloorGranted,
    FloorIdle,
    FloorQueued,
    FloorReleased,
    FloorRevoked,
    GroupEmergency,
)
from baton.flows.ptt.floor import (
    Action,
    BurstTimer,
    Denied,
    FloorControl,
    Granted,
    Idle,
    Positions,
    Released,
    Revoked,
)

__all__ = ["PTT_COMMANDS", "ptt_group"]

PTT_COMMANDS = {
    "request": "a member asks for the floor (user)",
    "release": "a member releases the floor (user)",
    "override": "a dispatcher takes the floor at dispatcher priority (user)",
    "add": "ring a member into the group (user)",
    "remove": "hang up a member (user)",
    "emergency": "put the group in emergency state; the raiser gets the floor (user)",
    "clear_emergency": "end the emergency state (authorised dispatchers only)",
    "end": "end the group call",
}


class _Ptt:
    """The running group: its meeting, floor, members and deadlines."""

    def __init__(
        self,
        s: Session,
        room: Meeting,
        floor: FloorControl,
        dispatchers: list[User],
        member_priority: int,
        dispatcher_priority: int,
        ring: float,
        digits: tuple[str, str, str],
    ) -> None:
        self.s = s
        self.room = room
        self.floor = floor
        self.dispatchers = dispatchers
        self.member_priority = member_priority
        self.dispatcher_priority = dispatcher_priority
        self.ring = ring
        self.request_digit, self.release_digit, self.emergency_digit = digits
        self.burst: tuple[int, float] | None = None  # (token, deadline)
        self.idle_since: float | None = s.now()
        self.idle_tone: Playback | None = None  # the floor-idle beep, while it plays

    # ---- members

    def add(self, user: User) -> None:
        s = self.s
        s.on_lost(user, self._lost)
        s.on_dtmf(user, self._dtmf)
        s.spawn(self._ring(user), f"{s.name}:ring:{user.id}")

    async def _ring(self, user: User) -> None:
        s = self.s
        try:
            await s.dial(user, timeout=self.ring)
            # the floor may have been granted while the phone rang (the initiator's request)
            talking = self.floor.holder == user.id
            await s.join(self.room, user, MeetingMode.SPEAK if talking else MeetingMode.LISTEN)
            # Half-duplex: a member hears the talker, or nothing while the floor is idle (the
            # floor-idle beep marks it) — a declared wait, not dead air (invariant 11).
            s.quiet(user, "push-to-talk: the floor decides who is heard")
        except CallFailed as exc:
            s.note(f"{user.id}: {exc.cause.value}")
            s.release(user)
        except (FlowInterrupted, NotOwner):
            pass  # told through _lost (NotOwner: lost before this task first ran)

    async def _lost(self, exc: FlowInterrupted) -> None:
        self.s.post("_left", user=exc.user.id)

    def _dtmf(self, user: User, digit: str) -> None:
        if digit == self.request_digit:
            self.s.post("request", user=user.id)
        elif digit == self.release_digit:
            self.s.post("release", user=user.id)
        elif digit == self.emergency_digit:
            self.s.post("emergency", user=user.id)

    def priority_of(self, user: User) -> int:
        return self.dispatcher_priority if user in self.dispatchers else self.member_priority

    # ---- commands

    async def handle(self, cmd: Command) -> bool:
        """Serve one command; False when the group should end."""
        s = self.s
        if cmd.name == "end":
            cmd.reply("ended")
            return False
        if cmd.name == "clear_emergency":
            self.floor.set_emergency(False)
            s.manager.events.publish(GroupEmergency(group=s.name, on=False, by=cmd.by))
            cmd.reply("cleared")
            return True
        user = s.user(str(cmd.args.get("user", "")))
        if cmd.name == "request":
            await self.run(self.floor.request(user.id, self.priority_of(user)))
        elif cmd.name == "override":
            if user not in self.dispatchers:
                raise FlowUsageError(f"{user.id!r} is not a dispatcher of this group")
            await self.run(self.floor.request(user.id, self.dispatcher_priority))
        elif cmd.name == "release":
            await self.run(self.floor.release(user.id))
        elif cmd.name == "emergency":
            self.floor.set_emergency(True)
            s.manager.events.publish(GroupEmergency(group=s.name, on=True, by=user.id))
            s.note(f"EMERGENCY in the group, raised by {user.id}")
            await self.run(self.floor.raise_emergency(user.id))
        elif cmd.name == "_left":
            await self.run(self.floor.leave(user.id))
        elif cmd.name == "add":
            if s.owns(user):
                raise FlowUsageError(f"{user.id!r} is in the group already")
            if "end" in s.queued_commands():
                # the group is over (its ``end`` is read next): nobody is taken out of a
                # call, nor rung, for it
                cmd.reply("cancelled")
                return True
            await s.claim(user, reason=f"joining {s.name}")
            self.add(user)
        elif cmd.name == "remove":
            await self.run(self.floor.leave(user.id))
            if s.owns(user):
                # hung up and let go: a member out of the group is nobody's, free for other
                # calls and for an ``add`` back (its ringing task, if any, meets NotOwner)
                await s.hangup(user)
                s.release(user)
        cmd.reply(self.floor.holder)
        return True

    # ---- actions of the floor

    async def run(self, actions: list[Action]) -> None:
        s = self.s
        bus = s.manager.events
        for a in actions:
            if isinstance(a, Granted):
                self.idle_since = None
                await self._stop_idle_tone()  # the talker is heard at once, not through a mix
                user = s.user(a.member)
                if await self._mode(user, MeetingMode.SPEAK):
                    await self._tone(user, "talk_permit")
                bus.publish(FloorGranted(group=s.name, user=a.member, priority=a.priority))
            elif isinstance(a, BurstTimer):
                if a.seconds is not None:
                    self.burst = (a.burst, s.now() + a.seconds)
                elif self.burst is not None and self.burst[0] == a.burst:
                    self.burst = None
            elif isinstance(a, Revoked):
                user = s.user(a.member)
                if await self._mode(user, MeetingMode.LISTEN):
                    await self._tone(user, "floor_revoked")
                bus.publish(FloorRevoked(group=s.name, user=a.member, reason=a.reason, by=a.by))
            elif isinstance(a, Released):
                await self._mode(s.user(a.member), MeetingMode.LISTEN)
                bus.publish(FloorReleased(group=s.name, user=a.member))
            elif isinstance(a, Denied):
                await self._tone(s.user(a.member), "floor_denied")
                bus.publish(FloorDenied(group=s.name, user=a.member, reason=a.reason))
            elif isinstance(a, Positions):
                bus.publish(FloorQueued(group=s.name, queue=a.queue))
            elif isinstance(a, Idle):
                self.idle_since = s.now()
                with contextlib.suppress(BatonError):
                    self.idle_tone = await s.play(self.room, Tone("floor_idle"), wait=False)
                bus.publish(FloorIdle(group=s.name))

    async def _stop_idle_tone(self) -> None:
        tone, self.idle_tone = self.idle_tone, None
        if tone is not None and not tone.done.done():
            with contextlib.suppress(BatonError):
                await self.s.stop(tone)

    async def _mode(self, user: User, mode: MeetingMode) -> bool:
        """Switch a member's mode; a member no longer ours is skipped (the floor hears of its
        departure through ``_left``)."""
        if not self.s.owns(user) or self.s.meeting_of(user) is not self.room:
            return False
        try:
            await self.s.join(self.room, user, mode)
        except BatonError:
            return False
        return True

    async def _tone(self, user: User, name: str) -> None:
        if self.s.owns(user) and self.s.leg_of(user) is not None:
            with contextlib.suppress(BatonError):
                await self.s.play(user, Tone(name), wait=False)


@flow(priority=Priority.PRIORITY, permission="ptt", commands=PTT_COMMANDS)
async def ptt_group(
    s: Session,
    members: list[User],
    dispatchers: list[User] | None = None,
    initiator: User | None = None,
    hang_time: float = 10.0,
    max_burst: float = 30.0,
    persistent: bool = False,
    member_priority: int = Priority.ROUTINE,
    dispatcher_priority: int = Priority.FLASH,
    request_digit: str = "*",
    release_digit: str = "#",
    emergency_digit: str = "9",
    ring: float = 30.0,
) -> str:
    """A push-to-talk group call over ``members`` (and ``dispatchers``); ``initiator`` gets the
    floor first. Returns why it ended."""
    if hang_time < 0:  # the group would end before anyone spoke
        raise InvalidArgument("hang_time must not be negative", "hang_time")
    if max_burst <= 0:  # every grant would be revoked at once
        raise InvalidArgument("max_burst must be a positive number of seconds", "max_burst")
    dispatchers = list(dispatchers or [])
    everyone = list(dict.fromkeys([*members, *dispatchers]))
    room = await s.meeting()
    group = _Ptt(
        s,
        room,
        FloorControl(max_burst=max_burst),
        dispatchers,
        member_priority,
        dispatcher_priority,
        ring,
        (request_digit, release_digit, emergency_digit),
    )

    async def hang_up_everyone() -> None:
        for user in everyone:
            if s.owns(user) and s.leg_of(user) is not None:
                await s.hangup(user)

    s.compensate(hang_up_everyone, label="hang_up_members")
    for user in everyone:
        try:
            await s.claim(user, reason=f"PTT group {s.name}")
        except BatonError as exc:
            s.note(f"{user.id} not reachable now: {exc.code}")
            continue
        if not s.owns(user):  # hung up in the very instant it was granted: told at the next wait
            s.note(f"{user.id} left as the group took it")
            continue
        group.add(user)
    if initiator is not None:
        s.post("request", user=initiator.id)
    while True:
        timeout = _next_timeout(s, group, hang_time, persistent)
        try:
            cmd = await s.command(timeout=timeout)
        except FlowInterrupted as exc:  # handled through _left; the wait is just woken
            s.note(f"{exc.user.id} left")
            continue
        if cmd is None:
            burst = group.burst
            if burst is not None and s.now() >= burst[1]:
                group.burst = None  # this deadline is served, whatever the floor answers
                await group.run(group.floor.burst_expired(burst[0]))
                continue
            # (compare with the deadline itself: ``now - idle_since >= hang_time`` can stay
            # false at the deadline by a rounding error, and the loop would spin in place)
            if (
                not persistent
                and group.idle_since is not None
                and s.now() >= group.idle_since + hang_time
            ):
                s.note(f"no talk burst for {hang_time:g} s: the group call ends")
                return "hang time"
            continue
        try:
            if not await group.handle(cmd):
                return "ended"
        except BatonError as exc:
            cmd.fail(exc)


def _next_timeout(s: Session, group: _Ptt, hang_time: float, persistent: bool) -> float | None:
    deadlines = []
    if group.burst is not None:
        deadlines.append(group.burst[1])
    if not persistent and group.idle_since is not None:
        deadlines.append(group.idle_since + hang_time)
    if not deadlines:
        return None
    return max(0.0, min(deadlines) - s.now())
