"""The ``sim`` switch: virtual phones in memory, on the loop's clock (virtual time in tests).

Each user has a :class:`SimPhone` whose :class:`Behaviour` is scripted: answer after N s, busy,
never answer, reject, unreachable, hang up N s after answering, press digits. A test injects
inbound calls (:meth:`SimSwitch.call_in`) and phone actions (:meth:`SimSwitch.hang_up`,
:meth:`SimSwitch.press`).

The media model is exact enough to ask "who hears whom now" (:meth:`SimSwitch.hears`), "what is
being played to X" (:meth:`SimSwitch.played_to`), "is X being recorded"
(:meth:`SimSwitch.is_recorded`), and what a user was played over time (``phone.heard``).
With ``write_recordings = True`` a recording is also a real file — a WAV of silence as long as
the recording ran, opened when it starts (an unwritable path fails the ``record`` command as a
real switch's would) — so what is built on recordings (checksums, export, playback) runs on the
sim too.

Timing like a real switch
-------------------------
A real switch takes time: a command is *issued* at once (and audited then), *takes effect* some
time later, and its issuer learns the result after that; phone events (an answer, a hang-up, a
digit) reach the core some time after they happened at the phone. :class:`Timing` gives every
command and every event delivery a latency — fixed, or drawn from a seeded range — so that a
hang-up, a newer claim or a cancellation lands *inside* the core's own awaits (a preemption's
media clear, a compensation, a settle's bridge, a makecall) as well as the flow's. The rules a
real switch keeps are kept here:

* a command once issued is carried out, even if its issuer stops awaiting it (a cancelled
  ``originate`` still rings the phone; a ``bridge`` in flight still lands);
* the commands on one leg (or one meeting) take effect in the order they were issued, and the
  events of one leg arrive in the order they happened;
* with no latency (the default) a command takes effect within the call, as before: the
  benchmarks and most unit tests run that way.

``latency={"bridge": 0.5}`` is shorthand for fixed per-command latencies. Commands can be made
to fail (:meth:`SimSwitch.fail_next`). An *auditor* (the UserManager's ``audit_command``) may be
installed to check at the switch itself that every command comes from the current owner
(docs/design.md, invariant 2).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import wave
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import BinaryIO, TypeVar

from baton.core.port import (
    Cause,
    DtmfReceived,
    EndReason,
    InboundCall,
    LegAnswered,
    LegEnded,
    LegFailed,
    LegGone,
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
    "Timing",
    "answers",
    "busy",
    "incompatible",
    "never_answers",
    "rejects",
    "unreachable",
]

T = TypeVar("T")

#: A latency: a fixed number of seconds, or a (low, high) range drawn uniformly.
Latency = float | tuple[float, float]


@dataclass(frozen=True, slots=True)
class Timing:
    """How long the switch takes (see the module docstring of ``baton.switch.sim.switch``).

    ``commands`` maps a command name (``"originate"``, ``"bridge"``, ``"clear"``…) to its
    latency; ``default`` applies to the others; ``events`` delays the delivery of phone events
    to the core. Ranges are drawn from a generator seeded with ``seed``, so a run replays.

    ``tail`` makes the latencies heavy-tailed, as a real switch's are under load: that share
    of the commands and event deliveries takes ``tail_factor`` times what was drawn (one clear
    in twenty taking ten times the others, past the core's ``command_timeout``).
    """

    commands: Mapping[str, Latency] = field(default_factory=dict)
    default: Latency = 0.0
    events: Latency = 0.0
    seed: int = 0
    tail: float = 0.0
    tail_factor: float = 10.0

    @classmethod
    def real(cls, seed: int = 0, *, low: float = 0.05, high: float = 0.8) -> Timing:
        """Every command and event takes between ``low`` and ``high`` seconds: a slow switch
        on a loaded network (what the property tests and ``baton check`` explore)."""
        return cls(default=(low, high), events=(low / 2, high / 2), seed=seed)

    @classmethod
    def heavy(cls, seed: int = 0, *, tail: float = 0.05, tail_factor: float = 10.0) -> Timing:
        """As :meth:`real`, with a heavy tail: ``tail`` of the commands and events take
        ``tail_factor`` times longer (up to 8 s with the defaults)."""
        return replace(cls.real(seed), tail=tail, tail_factor=tail_factor)

    @property
    def instant(self) -> bool:
        """Every command and event delivery takes no time (the default)."""
        return not self.commands and _upper(self.default) == 0 and _upper(self.events) == 0

    @property
    def longest(self) -> float:
        """The longest a single command or event delivery can take (its tail included)."""
        return self.usual * (self.tail_factor if self.tail > 0 else 1.0)

    @property
    def usual(self) -> float:
        """The longest a command or event delivery takes outside the tail."""
        return max(
            [_upper(self.default), _upper(self.events)]
            + [_upper(v) for v in self.commands.values()]
        )


def _upper(latency: Latency) -> float:
    return latency[1] if isinstance(latency, tuple) else float(latency)


#: The least gap between two commands (or two events) of one leg, so that they land in the
#: order they were issued (seconds).
_AFTER = 1e-6

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


def incompatible(after: float = 0.0) -> Behaviour:
    """Refuses the call's media (488: no common codec, or encryption it will not do) after
    ``after`` seconds, without ringing."""
    return Behaviour(fail=Cause.INCOMPATIBLE, fail_after=after, ring_after=after)


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
    file: BinaryIO | None = None  # the WAV file being written, opened at the start


def _write_silence(out: BinaryIO, seconds: float) -> None:
    """Write a recording's WAV file (8 kHz mono 16-bit, as the media engine writes): the sim
    hears no audio, so it holds silence as long as the recording ran. The standard library's
    writer keeps the sim free of the media engine (numpy, scipy, codecs), whose import took a
    second and left every test's garbage collector walking its objects."""
    with wave.open(out, "wb") as file:  # (closes the WAV writer, not ``out``)
        file.setnchannels(1)
        file.setsampwidth(2)
        file.setframerate(8000)
        file.writeframes(bytes(2 * round(seconds * 8000)))


class SimSwitch(Switch):
    """An in-memory switch with scriptable virtual phones."""

    def __init__(
        self,
        *,
        default: Behaviour | None = None,
        latency: dict[str, float] | None = None,
        timing: Timing | None = None,
    ) -> None:
        self.default = default or Behaviour()
        if timing is None:
            timing = Timing(commands=dict(latency or {}))
        elif latency:
            timing = replace(timing, commands={**timing.commands, **latency})
        self.timing = timing
        self._instant = timing.instant
        self._rng = random.Random(timing.seed)
        #: when the last command (or event) issued on a leg or meeting takes effect
        self._due: dict[str, float] = {}
        self._event_due: dict[str, float] = {}
        self.phones: dict[str, SimPhone] = {}
        self.legs: dict[str, SimLeg] = {}
        self._by_user: dict[str, SimLeg] = {}
        self._bridge: dict[str, str] = {}  # leg -> partner leg
        self._meeting_of: dict[str, str] = {}  # leg -> meeting id
        self.meetings: dict[str, dict[str, Member]] = {}
        self.playbacks: dict[str, _Playback] = {}
        self.recordings: dict[str, _Recording] = {}
        self.commands: list[tuple[float, str, tuple[str, ...]]] = []
        self.hangups: list[tuple[str, Cause, EndReason | None]] = []  # (leg, cause, reason) sent
        self.prompt_seconds: dict[str, float] = {}
        self.auditor: Callable[[str, tuple[str, ...]], None] | None = None
        #: called when a delayed command takes effect or a playback ends: the moments what a
        #: phone hears changes with no core event (a test's watch samples hearing then)
        self.on_change: Callable[[], None] | None = None
        self._listener: Callable[[SwitchEvent], None] | None = None
        self._failures: dict[str, list[str]] = {}
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.log_commands = True
        #: Write each recording as a WAV file of silence (see the module docstring).
        self.write_recordings = False

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

    def remove_phone(self, user: str) -> None:
        """Take ``user``'s virtual phone away (its user was removed): it is unreachable from
        now on, as if it had never registered."""
        self.phones.pop(user, None)

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
        """Deliver a phone or media event to the core, after the event latency (in order per
        leg)."""
        if self._listener is None:
            return
        if self._instant and not self._event_due:
            self._listener(event)
            return
        delay = self._draw(self.timing.events)
        if delay <= 0 and not self._event_due:
            self._listener(event)
            return
        key = getattr(event, "leg", None) or getattr(event, "playback", None) or "rec"
        now = self.loop.time()
        due = self._event_due.get(key)
        at = now + delay if due is None else max(now + delay, due + _AFTER)  # (in order: _do)
        self._event_due[key] = at
        listener = self._listener

        def deliver() -> None:
            if self._event_due.get(key) == at:
                del self._event_due[key]
            listener(event)

        self.loop.call_at(at, deliver)

    def _draw(self, latency: Latency) -> float:
        if isinstance(latency, tuple):
            low, high = latency
            drawn = self._rng.uniform(low, high) if high > 0 else 0.0
        else:
            drawn = float(latency)
        if self.timing.tail > 0 and drawn > 0 and self._rng.random() < self.timing.tail:
            drawn *= self.timing.tail_factor
        return drawn

    def _later(self, leg: SimLeg, delay: float, fn: Callable[[], None]) -> None:
        leg.timers.append(self.loop.call_later(delay, fn))

    async def _do(
        self, command: str, legs: tuple[str, ...], effect: Callable[[], T], room: str | None = None
    ) -> T:
        """Issue a command: audit and log it now, carry out ``effect`` after the command's
        latency — in issue order per leg and room, and whether or not the issuer still awaits
        it — and return its result (or raise its :class:`SwitchError`) to the issuer."""
        if self.auditor is not None:
            self.auditor(command, legs)
        if self.log_commands:
            self.commands.append((self.loop.time(), command, legs))
        pending = self._failures.get(command)
        failure = pending.pop(0) if pending else None
        if self._instant and not self._due:  # the common case, kept as cheap as before
            if failure is not None:
                raise SwitchError(f"sim: {command}: {failure}")
            return effect()
        now = self.loop.time()
        latency = self.timing.commands.get(command, self.timing.default)
        delay = self._draw(latency)
        keys = (*legs, room) if room is not None else legs
        if delay <= 0 and not any(k in self._due for k in keys):
            if failure is not None:
                raise SwitchError(f"sim: {command}: {failure}")
            return effect()
        # strictly after what is due on the same leg or room: the loop's timer heap does not
        # keep equal deadlines in the order they were set (a hang-up landing before the
        # originate it follows would leave a ghost call at the switch)
        at = max([now + delay, *(self._due[k] + _AFTER for k in keys if k in self._due)])
        for k in keys:
            self._due[k] = at
        fut: asyncio.Future[T] = self.loop.create_future()

        def land() -> None:
            for k in keys:
                if self._due.get(k) == at:
                    del self._due[k]
            try:
                if failure is not None:
                    raise SwitchError(f"sim: {command}: {failure}")
                result = effect()
            except SwitchError as exc:
                fut.set_exception(exc)
                fut.exception()  # the issuer may have stopped listening: no "never retrieved"
            else:
                fut.set_result(result)
            if self.on_change is not None:
                self.on_change()

        self.loop.call_at(at, land)
        return await asyncio.shield(fut)

    def _leg(self, leg_id: str) -> SimLeg:
        leg = self.legs.get(leg_id)
        if leg is None or leg.state == "ended":
            raise LegGone(leg_id, f"sim: no live leg {leg_id!r}")
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
        await self._do("originate", (leg,), lambda: self._originate(phone, leg))

    def _originate(self, phone: SimPhone, leg: str) -> None:
        user = phone.user
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
        if not sim_leg.inbound:
            raise SwitchError(f"sim: leg {leg!r} is outbound")

        def effect() -> None:
            self._leg(leg)  # the caller may have hung up meanwhile
            if sim_leg.state == "ringing":
                sim_leg.state = "connected"
                self._after_answer(sim_leg)

        await self._do("answer", (leg,), effect)

    async def hangup(
        self, leg: str, cause: Cause = Cause.NORMAL, reason: EndReason | None = None
    ) -> None:
        def effect() -> None:
            sim_leg = self.legs.get(leg)
            if sim_leg is not None and sim_leg.state != "ended":
                self._drop_leg(sim_leg)
                self.hangups.append((leg, cause, reason))

        await self._do("hangup", (leg,), effect)

    # ------------------------------------------------------------------ test-side actions

    def call_in(
        self,
        user: str,
        to: str,
        *,
        priority: int | None = None,
        authenticated: bool = True,
        headers: dict[str, str] | None = None,
    ) -> str:
        """``user``'s phone calls ``to``. Returns the inbound leg id. The phone's behaviour
        applies once the call is answered (hang-up, digits). ``headers``: what a SIP switch
        would pass on from the INVITE (``From``...)."""
        phone = self._phone(user)
        leg_id = f"sim-in-{next(self._ids)}"
        leg = SimLeg(leg_id, user, inbound=True)
        self.legs[leg_id] = leg
        if user not in self._by_user:
            self._by_user[user] = leg
        phone.calls += 1
        self._emit(
            InboundCall(leg_id, user if authenticated else None, to, priority, dict(headers or {}))
        )
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

        def effect() -> None:
            self._connected(leg_a)
            self._connected(leg_b)
            self._leave_room(leg_a)
            self._leave_room(leg_b)
            self._bridge[leg_a] = leg_b
            self._bridge[leg_b] = leg_a

        await self._do("bridge", (leg_a, leg_b), effect)

    async def create_meeting(self, meeting: str) -> None:
        if meeting in self.meetings:
            raise SwitchError(f"sim: meeting {meeting!r} exists")

        def effect() -> None:
            if meeting in self.meetings:
                raise SwitchError(f"sim: meeting {meeting!r} exists")
            self.meetings[meeting] = {}

        await self._do("create_meeting", (), effect, room=meeting)

    async def join(self, meeting: str, member: Member) -> None:
        self._connected(member.leg)

        def effect() -> None:
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

        await self._do("join", (member.leg,), effect, room=meeting)

    async def leave(self, meeting: str, leg: str) -> None:
        def effect() -> None:
            if self._meeting_of.get(leg) == meeting:
                self._leave_room(leg)

        await self._do("leave", (leg,), effect, room=meeting)

    async def destroy_meeting(self, meeting: str) -> None:
        def effect() -> None:
            members = self.meetings.pop(meeting, None)
            if members is None:
                return
            for leg in list(members):
                self._meeting_of.pop(leg, None)
            for pb in [p for p in self.playbacks.values() if p.target.meeting == meeting]:
                self._finish_playback(pb, completed=False)
            for rec in [r for r in self.recordings.values() if r.target.meeting == meeting]:
                self._finish_recording(rec)

        await self._do("destroy_meeting", (), effect, room=meeting)

    async def clear(self, leg: str) -> None:
        def effect() -> None:
            if leg in self.legs:
                self._clear(leg, reason_event=True)

        await self._do("clear", (leg,), effect)

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

        def effect() -> str:
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

        legs = () if target.leg is None else (target.leg,)
        return await self._do("play", legs, effect, room=target.meeting)

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
        if self.on_change is not None:
            self.on_change()

    async def stop_play(self, playback: str) -> None:
        def effect() -> None:
            pb = self.playbacks.get(playback)
            if pb is not None:
                self._finish_playback(pb, completed=False)

        pb = self.playbacks.get(playback)
        legs = () if pb is None or pb.target.leg is None else (pb.target.leg,)
        room = None if pb is None else pb.target.meeting
        await self._do("stop_play", legs, effect, room=room)

    async def record(self, target: Target, path: str) -> str:
        self._check_target(target)

        def effect() -> str:
            self._check_target(target)
            rid = f"rec{next(self._ids)}"
            file = None
            if self.write_recordings:
                try:
                    file = open(path, "wb")  # noqa: SIM115 - closed when the recording finishes
                    # A WAV from the start, as the media engine's writer keeps its file: a
                    # service that dies while recording leaves a readable file, not an empty one.
                    _write_silence(file, 0)
                    file.flush()
                except OSError as exc:
                    raise SwitchError(f"sim: cannot record to {path!r}: {exc}") from exc
            self.recordings[rid] = _Recording(rid, target, path, self.loop.time(), file)
            return rid

        legs = () if target.leg is None else (target.leg,)
        return await self._do("record", legs, effect, room=target.meeting)

    def _finish_recording(self, rec: _Recording) -> None:
        if self.recordings.pop(rec.id, None) is None:
            return
        seconds = self.loop.time() - rec.started
        if rec.file is not None:
            # A file that cannot be finished is found by whoever reads it (as on a real switch).
            with contextlib.suppress(OSError):
                try:
                    rec.file.seek(0)
                    rec.file.truncate()
                    _write_silence(rec.file, seconds)
                finally:
                    rec.file.close()
        self._emit(RecordingFinished(rec.id, rec.path, seconds))

    async def stop_record(self, recording: str) -> None:
        def effect() -> None:
            rec = self.recordings.get(recording)
            if rec is not None:
                self._finish_recording(rec)

        rec = self.recordings.get(recording)
        legs = () if rec is None or rec.target.leg is None else (rec.target.leg,)
        room = None if rec is None else rec.target.meeting
        await self._do("stop_record", legs, effect, room=room)

    async def close(self) -> None:
        # Recordings still running are finished, as a real switch closes its files on the way
        # out: a file left opened and never written is no WAV, and the voice logger would
        # report every call recorded at shutdown as a failed recording.
        for rec in list(self.recordings.values()):
            self._finish_recording(rec)
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
        if leg is None:
            return set()
        return self.hears_on(leg.id)

    def hears_on(self, leg_id: str) -> set[str]:
        """What the phone hears on one of its calls (``leg_id``): as :meth:`hears`, for a phone
        that has more than one call at the switch."""
        leg = self.legs.get(leg_id)
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
