"""The ``sim`` switch: virtual phones in memory, on the loop's clock (virtual time in tests).

Each user has a :class:`SimPhone` whose :class:`Behaviour` is scripted: answer after N s, busy,
never answer, reject, unreachable, hang up N s after answering, press digits. A test injects
inbound calls (:meth:`SimSwitch.call_in`) and phone actions (:meth:`SimSwitch.hang_up`,
:meth:`SimSwitch.press`).

The media model is exact enough to ask "who hears whom now" (:meth:`SimSwitch.hears`), "what is
being played to X" (:meth:`SimSwitch.played_to`), "is X being recorded"
(:meth:`SimSwitch.is_recorded`), and what a user was played over time (``phone.heard``).

Commands can be given a virtual latency (``latency={"bridge": 0.5}``) to open the window in
which a preemption lands mid-command, and made to fail (:meth:`SimSwitch.fail_next`). An
*auditor* (the UserManager's ``audit_command``) may be installed to check at the switch itself
that every command comes from the current owner (DESIGN.md invariant 2).
"""

from __future__ import annotations

import asyncio
import itertools
import wave
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from baton.switch.port import (
    Cause,
    DtmfReceived,
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

__all__ = [
    "Behaviour",
    "SimLeg",
    "SimPhone",
    "SimSwitch",
    "answers",
    "busy",
    "never_answers",
    "rejects",
    "unreachable",
]

#: How long each named tone lasts when played once without an explicit duration (seconds).
TONE_SECONDS: dict[str, float] = {
    "ringback": 6.0,
    "busy": 4.0,
    "call_waiting": 1.0,
    "preemption": 3.0,
    "hold": 4.0,
    "confirm": 0.5,
    "talk_permit": 0.2,
    "floor_denied": 0.5,
    "floor_idle": 0.3,
    "floor_revoked": 0.5,
}


@dataclass(frozen=True, slots=True)
class Behaviour:
    """How a virtual phone reacts. Build with :func:`answers`, :func:`busy`, … and chain
    ``.then_hangs_up(after)`` / ``.presses(digits, after)``."""

    answer_after: float | None = 1.0  # None: never answers (rings until cancelled)
    ring_after: float = 0.1
    fail: Cause | None = None  # BUSY, REJECTED, UNREACHABLE: the call fails
    fail_after: float = 0.2
    hangup_after: float | None = None  # seconds after the answer
    dtmf: tuple[tuple[float, str], ...] = ()  # (seconds after the answer, digits)
    digit_interval: float = 0.2

    def then_hangs_up(self, after: float) -> Behaviour:
        """…and hangs up ``after`` seconds after answering."""
        return replace(self, hangup_after=after)

    def presses(self, digits: str, after: float = 1.0) -> Behaviour:
        """…and presses ``digits`` ``after`` seconds after answering."""
        return replace(self, dtmf=(*self.dtmf, (after, digits)))


def answers(after: float = 1.0) -> Behaviour:
    """Rings, then answers after ``after`` seconds."""
    return Behaviour(answer_after=after)


def never_answers() -> Behaviour:
    """Rings until the call is given up."""
    return Behaviour(answer_after=None)


def busy(after: float = 0.2) -> Behaviour:
    """Answers busy (486) after ``after`` seconds."""
    return Behaviour(fail=Cause.BUSY, fail_after=after)


def rejects(after: float = 2.0) -> Behaviour:
    """Rings, then declines (603) after ``after`` seconds."""
    return Behaviour(fail=Cause.REJECTED, fail_after=after)


def unreachable() -> Behaviour:
    """Is not reachable at all (not registered, no route)."""
    return Behaviour(fail=Cause.UNREACHABLE, fail_after=0.0, ring_after=0.0)


@dataclass(slots=True)
class SimPhone:
    """A virtual phone. ``heard`` logs (time, what) for every playback it was given."""

    user: str
    behaviour: Behaviour
    heard: list[tuple[float, str]] = field(default_factory=list)
    calls: int = 0  # how many times it was called


@dataclass(slots=True, eq=False)
class SimLeg:
    id: str
    user: str
    inbound: bool
    state: str = "ringing"  # ringing | connected | ended
    timers: list[asyncio.TimerHandle] = field(default_factory=list)


@dataclass(slots=True, eq=False)
class _Playback:
    id: str
    target: Target
    what: str
    loop: bool
    timer: asyncio.TimerHandle | None = None


@dataclass(slots=True, eq=False)
class _Recording:
    id: str
    target: Target
    path: str
    started: float


class SimSwitch(Switch):
    """An in-memory switch with scriptable virtual phones."""

    def __init__(
        self, *, default: Behaviour | None = None, latency: dict[str, float] | None = None
    ) -> None:
        self.default = default or Behaviour()
        self.latency: dict[str, float] = dict(latency or {})
        self.phones: dict[str, SimPhone] = {}
        self.legs: dict[str, SimLeg] = {}
        self._by_user: dict[str, SimLeg] = {}
        self._bridge: dict[str, str] = {}  # leg -> partner leg
        self._meeting_of: dict[str, str] = {}  # leg -> meeting id
        self.meetings: dict[str, dict[str, Member]] = {}
        self.playbacks: dict[str, _Playback] = {}
        self.recordings: dict[str, _Recording] = {}
        self.commands: list[tuple[float, str, tuple[str, ...]]] = []
        self.hangups: list[tuple[str, Cause, str | None]] = []  # (leg, cause, reason) sent
        self.prompt_seconds: dict[str, float] = {}
        self.auditor: Callable[[str, tuple[str, ...]], None] | None = None
        self._listener: Callable[[SwitchEvent], None] | None = None
        self._failures: dict[str, list[str]] = {}
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.log_commands = True

    # ------------------------------------------------------------------ set-up

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def set_listener(self, listener: Callable[[SwitchEvent], None]) -> None:
        self._listener = listener

    def set_auditor(self, auditor: Callable[[str, tuple[str, ...]], None] | None) -> None:
        self.auditor = auditor

    def add_phone(self, user: str, behaviour: Behaviour | None = None) -> SimPhone:
        phone = SimPhone(user, behaviour or self.default)
        self.phones[user] = phone
        return phone

    def behave(self, user: str, behaviour: Behaviour) -> None:
        """Change how ``user``'s phone reacts to the next call."""
        self._phone(user).behaviour = behaviour

    def fail_next(self, command: str, message: str = "injected failure") -> None:
        """Make the next ``command`` (e.g. ``"bridge"``) raise :class:`SwitchError`."""
        self._failures.setdefault(command, []).append(message)

    def _phone(self, user: str) -> SimPhone:
        phone = self.phones.get(user)
        if phone is None:
            raise SwitchError(f"sim: no phone for user {user!r}")
        return phone

    def _emit(self, event: SwitchEvent) -> None:
        if self._listener is not None:
            self._listener(event)

    def _later(self, leg: SimLeg, delay: float, fn: Callable[[], None]) -> None:
        leg.timers.append(self.loop.call_later(delay, fn))

    async def _enter(self, command: str, *legs: str) -> None:
        """Common entry of every command: audit, log, latency, injected failure."""
        if self.auditor is not None:
            self.auditor(command, legs)
        if self.log_commands:
            self.commands.append((self.loop.time(), command, legs))
        delay = self.latency.get(command, 0.0)
        if delay > 0:
            await asyncio.sleep(delay)
        pending = self._failures.get(command)
        if pending:
            raise SwitchError(f"sim: {command}: {pending.pop(0)}")

    def _leg(self, leg_id: str) -> SimLeg:
        leg = self.legs.get(leg_id)
        if leg is None or leg.state == "ended":
            raise SwitchError(f"sim: no live leg {leg_id!r}")
        return leg

    def _connected(self, leg_id: str) -> SimLeg:
        leg = self._leg(leg_id)
        if leg.state != "connected":
            raise SwitchError(f"sim: leg {leg_id!r} is not connected")
        return leg

    # ------------------------------------------------------------------ legs

    async def originate(
        self, leg: str, user: str, *, caller: str | None = None, priority: int | None = None
    ) -> None:
        phone = self._phone(user)
        if leg in self.legs:
            raise SwitchError(f"sim: leg id {leg!r} in use")
        await self._enter("originate", leg)
        phone.calls += 1
        sim_leg = SimLeg(leg, user, inbound=False)
        self.legs[leg] = sim_leg
        b = phone.behaviour
        if user in self._by_user:  # the phone is on another call
            self._later(sim_leg, 0.0, lambda: self._fail(sim_leg, Cause.BUSY))
            return
        self._by_user[user] = sim_leg
        if b.fail is not None:
            if b.fail is not Cause.UNREACHABLE and b.ring_after < b.fail_after:
                self._later(sim_leg, b.ring_after, lambda: self._emit(LegRinging(leg)))
            self._later(sim_leg, b.fail_after, lambda: self._fail(sim_leg, b.fail or Cause.FAILURE))
            return
        if b.answer_after is not None and b.answer_after <= b.ring_after:
            # answers at once: one timer (the load benchmark's phones)
            self._later(sim_leg, b.answer_after, lambda: self._ring_and_answer(sim_leg))
            return
        self._later(sim_leg, b.ring_after, lambda: self._emit(LegRinging(leg)))
        if b.answer_after is not None:
            self._later(sim_leg, b.answer_after, lambda: self._answered(sim_leg))

    def _fail(self, leg: SimLeg, cause: Cause) -> None:
        if leg.state == "ended":
            return
        self._drop_leg(leg)
        self._emit(LegFailed(leg.id, cause))

    def _ring_and_answer(self, leg: SimLeg) -> None:
        if leg.state == "ringing":
            self._emit(LegRinging(leg.id))
            self._answered(leg)

    def _answered(self, leg: SimLeg) -> None:
        if leg.state != "ringing":
            return
        leg.state = "connected"
        self._emit(LegAnswered(leg.id))
        self._after_answer(leg)

    def _after_answer(self, leg: SimLeg) -> None:
        b = self.phones[leg.user].behaviour
        if b.hangup_after is not None:
            self._later(leg, b.hangup_after, lambda: self._user_hangup(leg))
        for after, digits in b.dtmf:
            for i, d in enumerate(digits):
                self._later(leg, after + i * b.digit_interval, lambda d=d: self._digit(leg, d))  # type: ignore[misc]

    def _digit(self, leg: SimLeg, digit: str) -> None:
        if leg.state == "connected":
            self._emit(DtmfReceived(leg.id, digit))

    def _user_hangup(self, leg: SimLeg) -> None:
        if leg.state == "ended":
            return
        self._drop_leg(leg)
        self._emit(LegEnded(leg.id, Cause.NORMAL, by_user=True))

    def _drop_leg(self, leg: SimLeg) -> None:
        """The leg ends: out of every room, its media stopped, its timers cancelled."""
        self._clear(leg.id, reason_event=True)
        leg.state = "ended"
        for t in leg.timers:
            t.cancel()
        leg.timers.clear()
        if self._by_user.get(leg.user) is leg:
            del self._by_user[leg.user]
        del self.legs[leg.id]

    async def answer(self, leg: str) -> None:
        sim_leg = self._leg(leg)
        await self._enter("answer", leg)
        if not sim_leg.inbound:
            raise SwitchError(f"sim: leg {leg!r} is outbound")
        if sim_leg.state == "ringing":
            sim_leg.state = "connected"
            self._after_answer(sim_leg)

    async def hangup(
        self, leg: str, cause: Cause = Cause.NORMAL, reason: str | None = None
    ) -> None:
        await self._enter("hangup", leg)
        sim_leg = self.legs.get(leg)
        if sim_leg is not None and sim_leg.state != "ended":
            self._drop_leg(sim_leg)
            self.hangups.append((leg, cause, reason))

    # ------------------------------------------------------------------ test-side actions

    def call_in(
        self, user: str, to: str, *, priority: int | None = None, authenticated: bool = True
    ) -> str:
        """``user``'s phone calls ``to``. Returns the inbound leg id. The phone's behaviour
        applies once the call is answered (hang-up, digits)."""
        phone = self._phone(user)
        leg_id = f"sim-in-{next(self._ids)}"
        leg = SimLeg(leg_id, user, inbound=True)
        self.legs[leg_id] = leg
        if user not in self._by_user:
            self._by_user[user] = leg
        phone.calls += 1
        self._emit(InboundCall(leg_id, user if authenticated else None, to, priority))
        return leg_id

    def hang_up(self, user: str) -> None:
        """``user`` puts the phone down (ends its live leg, answered or not)."""
        leg = self._by_user.get(user)
        if leg is not None:
            self._user_hangup(leg)

    def press(self, user: str, digits: str, interval: float = 0.2) -> None:
        """``user`` presses ``digits`` on a connected call, ``interval`` seconds apart."""
        leg = self._by_user.get(user)
        if leg is None or leg.state != "connected":
            raise SwitchError(f"sim: {user!r} has no connected call")
        for i, d in enumerate(digits):
            self._later(leg, i * interval, lambda d=d: self._digit(leg, d))  # type: ignore[misc]

    def answer_now(self, user: str) -> None:
        """``user`` picks up the ringing outbound call now."""
        leg = self._by_user.get(user)
        if leg is None or leg.inbound:
            raise SwitchError(f"sim: {user!r} has no ringing outbound call")
        self._answered(leg)

    def kill(self, user: str) -> None:
        """``user``'s phone dies (the leg ends by media timeout)."""
        leg = self._by_user.get(user)
        if leg is not None and leg.state != "ended":
            self._drop_leg(leg)
            self._emit(LegEnded(leg.id, Cause.MEDIA_TIMEOUT, by_user=False))

    # ------------------------------------------------------------------ rooms

    def _leave_room(self, leg: str) -> None:
        partner = self._bridge.pop(leg, None)
        if partner is not None:
            self._bridge.pop(partner, None)
        mid = self._meeting_of.pop(leg, None)
        if mid is not None:
            members = self.meetings.get(mid)
            if members is not None:
                members.pop(leg, None)
                for other, m in list(members.items()):
                    if m.whisper_to == leg:
                        members[other] = Member(other, MeetingMode.MUTED)

    async def bridge(self, leg_a: str, leg_b: str) -> None:
        self._connected(leg_a)
        self._connected(leg_b)
        await self._enter("bridge", leg_a, leg_b)
        self._connected(leg_a)
        self._connected(leg_b)
        self._leave_room(leg_a)
        self._leave_room(leg_b)
        self._bridge[leg_a] = leg_b
        self._bridge[leg_b] = leg_a

    async def create_meeting(self, meeting: str) -> None:
        await self._enter("create_meeting")
        if meeting in self.meetings:
            raise SwitchError(f"sim: meeting {meeting!r} exists")
        self.meetings[meeting] = {}

    async def join(self, meeting: str, member: Member) -> None:
        self._connected(member.leg)
        await self._enter("join", member.leg)
        members = self.meetings.get(meeting)
        if members is None:
            raise SwitchError(f"sim: no meeting {meeting!r}")
        self._connected(member.leg)
        if member.whisper_to is not None and member.whisper_to not in members:
            raise SwitchError(f"sim: whisper target {member.whisper_to!r} is not a member")
        if self._meeting_of.get(member.leg) != meeting:
            self._leave_room(member.leg)
        members[member.leg] = member
        self._meeting_of[member.leg] = meeting

    async def leave(self, meeting: str, leg: str) -> None:
        await self._enter("leave", leg)
        if self._meeting_of.get(leg) == meeting:
            self._leave_room(leg)

    async def destroy_meeting(self, meeting: str) -> None:
        await self._enter("destroy_meeting")
        members = self.meetings.pop(meeting, None)
        if members is None:
            return
        for leg in list(members):
            self._meeting_of.pop(leg, None)
        for pb in [p for p in self.playbacks.values() if p.target.meeting == meeting]:
            self._finish_playback(pb, completed=False)
        for rec in [r for r in self.recordings.values() if r.target.meeting == meeting]:
            self._finish_recording(rec)

    async def clear(self, leg: str) -> None:
        await self._enter("clear", leg)
        if leg in self.legs:
            self._clear(leg, reason_event=True)

    def _clear(self, leg: str, *, reason_event: bool) -> None:
        self._leave_room(leg)
        for pb in [p for p in self.playbacks.values() if p.target.leg == leg]:
            self._finish_playback(pb, completed=False)
        for rec in [r for r in self.recordings.values() if r.target.leg == leg]:
            self._finish_recording(rec)

    # ------------------------------------------------------------------ media

    def _check_target(self, target: Target) -> None:
        if target.leg is not None:
            self._connected(target.leg)
        elif target.meeting not in self.meetings:
            raise SwitchError(f"sim: no meeting {target.meeting!r}")

    async def play(self, target: Target, media: Tone | Prompt, *, loop: bool = False) -> str:
        self._check_target(target)
        await self._enter("play", *(() if target.leg is None else (target.leg,)))
        self._check_target(target)
        pid = f"pb{next(self._ids)}"
        what = f"tone:{media.name}" if isinstance(media, Tone) else f"prompt:{media.path}"
        pb = _Playback(pid, target, what, loop)
        self.playbacks[pid] = pb
        now = self.loop.time()
        for user in self._users_reached(target):
            self.phones[user].heard.append((now, what))
        if not loop:
            pb.timer = self.loop.call_later(
                self._seconds(media), lambda: self._finish_playback(pb, completed=True)
            )
        return pid

    def _seconds(self, media: Tone | Prompt) -> float:
        if isinstance(media, Tone):
            if media.duration is not None:
                return media.duration
            if media.name.startswith("dtmf:"):
                return 0.1
            return TONE_SECONDS.get(media.name, 1.0)
        if media.path in self.prompt_seconds:
            return self.prompt_seconds[media.path]
        try:
            with wave.open(media.path) as w:
                return float(w.getnframes()) / float(w.getframerate())
        except (OSError, wave.Error, EOFError):
            return 2.0

    def _users_reached(self, target: Target) -> list[str]:
        if target.leg is not None:
            return [self.legs[target.leg].user]
        return [self.legs[leg].user for leg in self.meetings.get(target.meeting or "", {})]

    def _finish_playback(self, pb: _Playback, completed: bool) -> None:
        if self.playbacks.pop(pb.id, None) is None:
            return
        if pb.timer is not None:
            pb.timer.cancel()
        self._emit(PlaybackFinished(pb.id, completed))

    async def stop_play(self, playback: str) -> None:
        await self._enter("stop_play")
        pb = self.playbacks.get(playback)
        if pb is not None:
            self._finish_playback(pb, completed=False)

    async def record(self, target: Target, path: str) -> str:
        self._check_target(target)
        await self._enter("record", *(() if target.leg is None else (target.leg,)))
        self._check_target(target)
        rid = f"rec{next(self._ids)}"
        self.recordings[rid] = _Recording(rid, target, path, self.loop.time())
        return rid

    def _finish_recording(self, rec: _Recording) -> None:
        if self.recordings.pop(rec.id, None) is None:
            return
        self._emit(RecordingFinished(rec.id, rec.path, self.loop.time() - rec.started))

    async def stop_record(self, recording: str) -> None:
        await self._enter("stop_record")
        rec = self.recordings.get(recording)
        if rec is not None:
            self._finish_recording(rec)

    async def close(self) -> None:
        for leg in list(self.legs.values()):
            for t in leg.timers:
                t.cancel()
        for pb in self.playbacks.values():
            if pb.timer is not None:
                pb.timer.cancel()

    # ------------------------------------------------------------------ queries

    def leg_of(self, user: str) -> SimLeg | None:
        return self._by_user.get(user)

    def hears(self, user: str) -> set[str]:
        """What ``user`` hears now: other users' ids, and ``tone:<name>`` / ``prompt:<path>``."""
        leg = self._by_user.get(user)
        if leg is None or leg.state != "connected":
            return set()
        out: set[str] = set()
        partner = self._bridge.get(leg.id)
        if partner is not None:
            out.add(self.legs[partner].user)
        mid = self._meeting_of.get(leg.id)
        if mid is not None:
            for other, m in self.meetings[mid].items():
                if other == leg.id:
                    continue
                if m.mode is MeetingMode.SPEAK or (
                    m.mode is MeetingMode.WHISPER and m.whisper_to == leg.id
                ):
                    out.add(self.legs[other].user)
            out.update(p.what for p in self.playbacks.values() if p.target.meeting == mid)
        out.update(p.what for p in self.playbacks.values() if p.target.leg == leg.id)
        return out

    def heard_by(self, user: str) -> set[str]:
        """The users who hear ``user`` now."""
        return {other for other in self._by_user if user in self.hears(other)}

    def played_to(self, user: str) -> set[str]:
        """The tones and prompts ``user`` hears now."""
        return {h for h in self.hears(user) if ":" in h}

    def is_recorded(self, user: str) -> bool:
        leg = self._by_user.get(user)
        if leg is None:
            return False
        mid = self._meeting_of.get(leg.id)
        return any(
            r.target.leg == leg.id or (mid is not None and r.target.meeting == mid)
            for r in self.recordings.values()
        )

    def room_of(self, user: str) -> str | None:
        """``"bridge:<user>"``, ``"meeting:<id>"`` or None."""
        leg = self._by_user.get(user)
        if leg is None:
            return None
        partner = self._bridge.get(leg.id)
        if partner is not None:
            return f"bridge:{self.legs[partner].user}"
        mid = self._meeting_of.get(leg.id)
        return f"meeting:{mid}" if mid is not None else None

    def is_idle(self, user: str) -> bool:
        """Connected with nothing going on (or no call at all)."""
        leg = self._by_user.get(user)
        if leg is None:
            return True
        return (
            self.room_of(user) is None and not self.played_to(user) and not self.is_recorded(user)
        )

    def sent(self, command: str) -> list[tuple[str, ...]]:
        """The legs named by every ``command`` received so far."""
        return [legs for _, c, legs in self.commands if c == command]
