"""Emergency calls: the top priority.

``emergency_call`` (declared by a dispatcher)
    Takes the target and the dispatcher from whatever they are in — the flows that held them are
    preempted and compensate — and connects them. The *emergency state* then holds, whatever the
    parties do, until an authorised dispatcher sends ``end`` (the service checks who may); a
    party who hangs up can be called again with ``redial``. When ended, parties still talking
    are settled into an ordinary call.

``emergency_inbound`` (raised by a user calling an emergency number)
    Answers the caller at emergency priority and puts them through to a dispatcher: a free one
    if there is one, else the one busy at the lowest priority, who is preempted. A position
    that does not answer, is unreachable or cannot be taken is passed over for the next, round
    after round, while the caller hears ringback: the caller is never dropped.

Cancelled (by someone who may end emergencies) or failed, either flow leaves nobody in silence
(:func:`_wind_down`): parties talking go on as an ordinary call, as after ``end``; a party left
without one hears a busy tone and is hung up; a position still ringing stops.
"""

from __future__ import annotations

import contextlib

from baton.core import (
    P2P,
    BatonError,
    CallFailed,
    Cause,
    ClaimDenied,
    Command,
    FlowInterrupted,
    FlowOutcome,
    FlowUsageError,
    InvalidArgument,
    NotOwner,
    Priority,
    Session,
    Superseded,
    SwitchFailed,
    Tone,
    User,
    UserHungUp,
    flow,
)
from baton.flows._common import dial_pair, stop_quietly

COMMANDS = {
    "end": "end the emergency (authorised dispatchers only)",
    "redial": "call a party who hung up again",
}


@flow(priority=Priority.EMERGENCY, permission="emergency", commands=COMMANDS)
async def emergency_call(s: Session, dispatcher: User, target: User, ring: float = 60.0) -> str:
    """Declare an emergency: take ``target`` from whatever it is in and connect it to
    ``dispatcher``; hold the emergency until an authorised dispatcher ends it."""
    gone: User | None = None
    _wind_down(s, [dispatcher, target])
    try:
        await s.claim(dispatcher, target, reason="emergency")
    except UserHungUp as exc:
        # A party hung up while being taken: the emergency stands all the same (it holds until
        # ended, whatever the parties do); the one who hung up can be called with ``redial``.
        gone = exc.user
        await s.claim(dispatcher, target, reason="emergency")
    s.note(f"EMERGENCY declared by {dispatcher.id} for {target.id}")
    if gone is target and s.leg_of(target) is not None:
        # it hung up, then another flow rang it again before the emergency's second claim
        # took it over (with that ringing call): it is reached like any target, not waited for
        s.note(f"{target.id} hung up as the emergency took it, and is ringing again")
        gone = None
    if gone is target:
        await s.dial(dispatcher)
        s.note(f"{target.id} hung up as the emergency took it; waiting for redial or end")
        s.quiet(dispatcher, "the target hung up: waiting for redial or end")
        return await _hold_emergency(s, dispatcher, target, ring)
    # the dispatcher's line, then the target (whose phone may ring already: a call the
    # emergency took over) — whoever answers first hears ringback, never silence
    end: Command | None = None
    try:
        end = await _set_up(s, dispatcher, target, ring)
        if end is None:
            await s.connect(dispatcher, target)
    except (UserHungUp, SwitchFailed) as exc:
        # A party hung up while the other's phone still rang, or as they were bridged (the
        # switch refuses the bridge on a leg that is gone before the core hears of the
        # hang-up): the emergency stands (it holds until ended); whoever is still on the line
        # is reached all the same and waits for redial or end.
        gone = exc.user if isinstance(exc, UserHungUp) else None
        s.note(f"the emergency could not connect the parties ({exc.code}); waiting for redial")
        for other in (dispatcher, target):
            with contextlib.suppress(BatonError):  # it may hang up or fail too: redial serves it
                if other is not gone and s.owns(other) and s.leg_of(other) is not None:
                    await s.dial(other, timeout=ring)  # a phone still ringing is answered first
                    await s.clear(other)  # no ringback for a party who is gone
                    # and it waits, declared, while the other's phone may still ring
                    s.quiet(other, "the parties could not be connected: waiting for redial")
        for _ in range(3):  # a notice still pending is raised by the first declaration
            with contextlib.suppress(FlowInterrupted):
                for other in (dispatcher, target):
                    leg = s.leg_of(other) if s.owns(other) else None
                    if leg is not None and leg.connected:
                        s.quiet(other, "the other party hung up: waiting for redial or end")
                break
    return await _hold_emergency(s, dispatcher, target, ring, end)


async def _set_up(s: Session, dispatcher: User, target: User, ring: float) -> Command | None:
    """Reach both parties, whoever answers first hearing ringback: the dispatcher's line, then
    the target's — or both at once if the target's phone rings already (a call the emergency
    took over: :func:`dial_pair`). An ``end`` sent while one of them rings stops that ringing
    at once and is returned (``redial`` meanwhile is refused: the call is being set up)."""
    d_up, t_up = _up(s, dispatcher), _up(s, target)
    if s.leg_of(target) is not None and not t_up and not d_up:  # both may ring at once
        await dial_pair(s, dispatcher, target, timeout=ring, caller=dispatcher)
        return None
    if not d_up:
        end = await _ring(s, target if t_up else None, dispatcher, ring, _SETTING_UP)
        if end is not None:
            return end
    if not _up(s, target):
        return await _ring(s, dispatcher, target, ring, _SETTING_UP, caller=dispatcher)
    return None


_SETTING_UP = "the emergency call is being set up"


def _up(s: Session, user: User) -> bool:
    leg = s.leg_of(user)
    return leg is not None and leg.connected


@flow(priority=Priority.EMERGENCY, permission="emergency", commands=COMMANDS)
async def emergency_inbound(
    s: Session, caller: User, dispatchers: list[User], ring: float = 20.0
) -> str:
    """``caller`` dialled the emergency number: answer and put them through to a dispatcher,
    preempting the least important call a dispatcher is on if none is free. A position that
    does not answer within ``ring`` seconds, is unreachable or busy is passed over for the
    next; the caller hears ringback until one answers, however long that takes — an emergency
    caller is never dropped by Baton."""
    if not dispatchers:
        raise InvalidArgument("emergency_inbound needs at least one dispatcher", "dispatchers")
    _wind_down(s, [caller, *dispatchers])
    await s.claim(caller, reason="emergency")
    await s.answer(caller)
    s.note(f"EMERGENCY call from {caller.id}")
    ringback = await s.play(caller, "ringback", loop=True)
    rounds = 0
    while True:
        for dispatcher in _by_availability(s, dispatchers):
            reached = await _reach(s, caller, dispatcher, ring)
            if isinstance(reached, Command):  # ``end`` while the position rang
                await stop_quietly(s, ringback)
                return await _hold_emergency(s, dispatcher, caller, ring, reached)
            if reached:
                await stop_quietly(s, ringback)
                await s.connect(caller, dispatcher)
                return await _hold_emergency(s, dispatcher, caller, ring)
        rounds += 1
        s.note(f"no position answered {caller.id}'s emergency call (round {rounds}); ringing on")
        end = await _pause(s, _PAUSE)
        if end is not None:
            await stop_quietly(s, ringback)
            return await _hold_emergency(s, dispatchers[0], caller, ring, end)


#: Between two rounds over every position (each unreachable, say), the caller hears ringback
#: for this long rather than the positions being rung in a tight loop.
_PAUSE = 5.0


def _by_availability(s: Session, dispatchers: list[User]) -> list[User]:
    """Free positions first, then the busy ones from the least important call up; among
    equals, the order given (the service lists positions ready and registered first)."""

    def rank(d: User) -> int:
        owner = s.owner_of(d)
        return -1 if owner is None else owner.priority

    return sorted(dispatchers, key=rank)


#: Why a ``redial`` is refused while an inbound emergency call is put through.
_PUTTING_THROUGH = "the emergency call is being put through to a position"


async def _pause(s: Session, seconds: float) -> Command | None:
    """The pause between two rounds, cut short by ``end`` (returned); a ``redial`` meanwhile
    is refused. The caller's loss is raised."""
    deadline = s.now() + seconds
    while (left := deadline - s.now()) > 0:
        cmd = await s.command(left)
        if cmd is None:
            continue
        if cmd.name == "end":
            return cmd
        cmd.fail(FlowUsageError(_PUTTING_THROUGH))
    return None


async def _reach(s: Session, caller: User, dispatcher: User, ring: float) -> bool | Command:
    """Take ``dispatcher`` (preempting a less important call) and ring it while the caller
    hears ringback. False — and the position given back — if it cannot be taken, does not
    answer, is unreachable, or is lost meanwhile; the caller's own loss is raised. An ``end``
    sent while it rings stops that ringing at once and is returned (a ``redial`` meanwhile is
    refused)."""
    try:
        await s.claim(dispatcher, reason=f"emergency call from {caller.id}")
    except (ClaimDenied, Superseded, UserHungUp) as exc:
        s.note(f"{dispatcher.id} cannot take the emergency call: {type(exc).__name__}")
        return False
    try:
        deadline = s.now() + ring
        while True:
            got = await s.dial_or_command(
                dispatcher, timeout=max(0.0, deadline - s.now()), caller=caller
            )
            if not isinstance(got, Command):
                return True
            if got.name == "end":
                await _give_back(s, dispatcher)
                return got
            got.fail(FlowUsageError(_PUTTING_THROUGH))
    except CallFailed as exc:
        s.note(f"{dispatcher.id} did not take the emergency call ({exc.cause.value})")
    except FlowInterrupted as exc:
        if caller in exc.users:  # the caller is gone: the position must not ring on for nobody
            with contextlib.suppress(FlowInterrupted):
                await _give_back(s, dispatcher)
            raise
        s.note(f"{dispatcher.id} was lost while ringing ({type(exc).__name__})")
    await _give_back(s, dispatcher)
    return False


def _wind_down(s: Session, users: list[User]) -> None:
    """Register what a cancelled (or failed) emergency does with the users it still holds,
    rather than let them go onto a live line for the leak collector (docs/flows.md, "Letting
    go on a live line"): two of them talking to each other go on as an ordinary ROUTINE call,
    as after ``end`` — a cancel needs the same right as ``end`` and must not cut a caller off
    mid-sentence; anyone else up hears a busy tone, then is hung up (an always-on line is only
    cleared); a phone still ringing is cancelled at once. An emergency that completed (``end``)
    has done this itself."""

    async def wind_down() -> None:
        if s.flow.outcome is FlowOutcome.COMPLETED:
            return
        mine = [u for u in dict.fromkeys(users) if s.owns(u) and s.leg_of(u) is not None]
        talking = [u for u in mine if s.state_of(u) == "talking"]
        if len(talking) == 2 and s.partner_of(talking[0]) is talking[1]:
            try:
                await s.connect(*talking)  # again: the bridge that failed the flow, say
            except BatonError:
                pass  # no call to go on with: each is told below
            else:
                s.settle(P2P(*talking, priority=Priority.ROUTINE))
                s.note(f"{talking[0].id} and {talking[1].id} go on as an ordinary call")
                return
        told: list[User] = []
        for u in mine:
            leg = s.leg_of(u)
            with contextlib.suppress(BatonError):
                if leg is None or not leg.connected:
                    await s.hangup(u, Cause.CANCELLED)  # still ringing: for nobody now
                elif u.keep:
                    await s.clear(u)
                else:
                    await s.clear(u)  # the ringback it may hear says someone will answer
                    await s.play(u, Tone("busy", _BUSY), wait=False)
                    told.append(u)
        if told:
            with contextlib.suppress(FlowInterrupted):  # a party hanging up changes nothing
                await s.sleep(_BUSY)
        for u in told:
            with contextlib.suppress(BatonError):
                await s.hangup(u, Cause.NORMAL)

    s.compensate(wind_down, label="wind_down")


#: How long a party an ended emergency leaves alone hears the busy tone before it is hung up.
_BUSY = 2.0


async def _give_back(s: Session, dispatcher: User) -> None:
    """Release a position this flow took: its ringing is cancelled (an always-on line that is
    up stays up, only given back)."""
    if not s.owns(dispatcher):
        return
    leg = s.leg_of(dispatcher)
    if leg is not None and not (dispatcher.keep and leg.connected):
        with contextlib.suppress(CallFailed, ClaimDenied, NotOwner, SwitchFailed):
            await s.hangup(dispatcher, Cause.CANCELLED)
    s.release(dispatcher)


async def _hold_emergency(
    s: Session, dispatcher: User, target: User, ring: float, end: Command | None = None
) -> str:
    """Wait for ``end`` (``end``: sent already, while the call was set up); serve ``redial``;
    survive hang-ups."""
    if end is not None:
        _ended(s, end)
    while end is None:
        try:
            cmd = await s.command()
        except UserHungUp as exc:
            s.note(f"{exc.user.id} hung up; the emergency stays declared until ended")
            await _wait_for_redial(s, dispatcher, target)
            continue
        if cmd is None:
            continue
        if cmd.name == "end":
            _ended(s, cmd)
            break
        redialled = await _redial(s, cmd, dispatcher, target, ring)
        if isinstance(redialled, Command):  # an ``end`` sent while a party rang
            _ended(s, redialled)
            break
        if not redialled:
            # the redial itself was broken (a party hung up as it was bridged or rung, a
            # party did not answer): whoever is still on the line waits for the next redial
            # or the end, not on a silent line (docs/flows.md)
            await _wait_for_redial(s, dispatcher, target)
    talking = [u for u in (dispatcher, target) if s.owns(u) and s.state_of(u) == "talking"]
    if len(talking) == 2:
        s.settle(P2P(dispatcher, target, priority=Priority.ROUTINE))
        return "ended"
    # the one left (the other hung up and was not redialled): its call is over — a busy tone,
    # then hung up, not let go onto a silent line (an always-on line is only cleared)
    for u in (dispatcher, target):
        leg = s.leg_of(u) if s.owns(u) else None
        if leg is not None and not u.keep:
            with contextlib.suppress(BatonError):
                if leg.connected:
                    await s.play(u, Tone("busy", _BUSY))
                await s.hangup(u, Cause.NORMAL)
    return "ended"


async def _wait_for_redial(s: Session, dispatcher: User, target: User) -> None:
    """The parties still on the line and not talking to each other are in the emergency's
    declared wait: the other one is gone until a ``redial`` or the ``end``. A party whose
    phone a broken redial left ringing is not called to talk to nobody: the ringing is
    cancelled (a later ``redial`` calls it again)."""
    for u in (dispatcher, target):
        leg = s.leg_of(u) if s.owns(u) else None
        if leg is not None and not leg.connected:
            with contextlib.suppress(BatonError):
                await s.hangup(u, Cause.CANCELLED)
    for _ in range(3):  # a notice still pending is raised by the first declaration
        with contextlib.suppress(FlowInterrupted):
            for u in (dispatcher, target):
                leg = s.leg_of(u) if s.owns(u) else None
                if leg is not None and leg.connected and s.state_of(u) != "talking":
                    s.quiet(u, "the other party hung up: waiting for redial or end")
            return


def _ended(s: Session, cmd: Command) -> None:
    s.note(f"emergency ended by {cmd.by or 'an authorised dispatcher'}")
    cmd.reply("ended")


async def _redial(
    s: Session, cmd: Command, dispatcher: User, target: User, ring: float
) -> bool | Command:
    """Serve a ``redial``: True if the parties are connected again; the ``end`` sent while a
    party rang (that ringing stopped, the redial failed) for the caller to serve."""
    try:
        for u in (dispatcher, target):
            if not s.owns(u) or s.leg_of(u) is None:
                await s.claim(u, reason="emergency")
                other = target if u is dispatcher else dispatcher
                leg = s.leg_of(other)
                up = s.owns(other) and leg is not None and leg.connected
                end = await _ring(s, other if up else None, u, ring, "a redial is under way")
                if end is not None:
                    cmd.fail(FlowUsageError("the emergency was ended before the party answered"))
                    return end
        await s.connect(dispatcher, target)
    except BatonError as exc:
        cmd.fail(exc)
        return False
    with contextlib.suppress(BatonError):
        cmd.reply("connected")
    return True


async def _ring(
    s: Session,
    listener: User | None,
    user: User,
    ring: float,
    busy: str,
    *,
    caller: User | None = None,
) -> Command | None:
    """Ring ``user`` (``listener``, on the line, hears ringback) until it answers — or until
    ``end`` is sent: then the ringing stops at once and the ``end`` is returned. A ``redial``
    meanwhile is refused with ``busy`` (why it makes no sense now)."""
    ringback = await s.play(listener, Tone("ringback"), loop=True) if listener else None
    deadline = s.now() + ring
    try:
        while True:
            got = await s.dial_or_command(user, timeout=max(0.0, deadline - s.now()), caller=caller)
            if not isinstance(got, Command):
                break
            if got.name == "end":
                with contextlib.suppress(BatonError):  # the end is served whatever comes
                    await stop_quietly(s, ringback)
                    leg = s.leg_of(user) if s.owns(user) else None
                    if leg is not None and not leg.connected:
                        await s.hangup(user, Cause.CANCELLED)
                return got
            got.fail(FlowUsageError(busy))
    except BatonError:
        await stop_quietly(s, ringback)
        raise
    await stop_quietly(s, ringback)
    return None
