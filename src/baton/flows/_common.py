"""Helpers the library flows share (private: flow authors use the Session API directly)."""

from __future__ import annotations

import asyncio
import contextlib

from baton.core import (
    P2P,
    BatonError,
    CallFailed,
    Cause,
    Command,
    EndReason,
    FlowInterrupted,
    FlowOutcome,
    Leg,
    Playback,
    Preempted,
    Session,
    Superseded,
    Tone,
    User,
    UserHungUp,
)

#: The tone a party hears when a call fails, by cause.
FAILURE_TONE = {
    Cause.BUSY: "busy",
    Cause.REJECTED: "busy",
    Cause.INCOMPATIBLE: "busy",
    Cause.NO_ANSWER: "busy",
    Cause.UNREACHABLE: "busy",
}


async def notify_and_release(s: Session, user: User, *, by: str, seconds: float = 3.0) -> None:
    """Preemption notice: ``user`` hears the preemption tone, then is hung up as preempted by
    ``by`` (the switch tells the phone: on SIP, an RFC 4411 ``Reason``). Best effort: a user lost or gone meanwhile is simply left alone."""
    with contextlib.suppress(BatonError):
        await s.play(user, Tone("preemption", seconds))
    with contextlib.suppress(BatonError):
        await s.hangup(user, Cause.PREEMPTED, EndReason.preempted(by))


async def notify_and_release_all(
    s: Session, users: list[User], *, by: str, seconds: float = 3.0
) -> None:
    """:func:`notify_and_release` for several users at once: the notice starts for each, then,
    once it has played, each one still ours is hung up. Best effort, as for one."""
    playing: list[User] = []
    for u in users:
        with contextlib.suppress(BatonError):
            await s.play(u, Tone("preemption", seconds), wait=False)
            playing.append(u)
    end = s.now() + seconds
    while playing and s.now() < end:
        with contextlib.suppress(FlowInterrupted):  # a party leaving changes nothing here
            await s.sleep(end - s.now())
    for u in users:
        if s.owns(u):
            with contextlib.suppress(BatonError):
                await s.hangup(u, Cause.PREEMPTED, EndReason.preempted(by))


async def end_unbridged(s: Session, user: User, lost: FlowInterrupted) -> None:
    """The other party of a call not yet bridged was lost: ``user``'s side ends now rather
    than when the leak collector finds it (a callee answering into silence, a caller hearing
    ringback for nobody). Taken by a higher priority: the preemption tone, then hung up with
    the RFC 4411 reason; hung up: a ringing leg is cancelled, an answered one ended. An
    always-on line that is up is only cleared (one still ringing is cancelled). Best effort: a user gone meanwhile is left alone."""
    if not s.owns(user) or s.leg_of(user) is None:
        return
    if isinstance(lost, Preempted) and not user.keep:
        await notify_and_release(s, user, by=lost.by)
        return
    with contextlib.suppress(BatonError):
        if s.state_of(user) in ("dialling", "ringing"):  # an always-on line not up yet too
            await s.hangup(user, Cause.CANCELLED)
        elif user.keep:
            await s.clear(user)
        else:
            await s.hangup(user, Cause.NORMAL)


async def tell_failure(s: Session, user: User, error: CallFailed) -> None:
    """Let ``user`` hear why a call failed (busy tone) — best effort."""
    tone = FAILURE_TONE.get(error.cause)
    if tone is not None:
        with contextlib.suppress(BatonError):
            await s.play(user, Tone(tone, 2.0))


async def tell_failure_and_hang_up(s: Session, user: User, error: CallFailed) -> None:
    """:func:`tell_failure`, then hang ``user`` up with the failure's cause — unless the user
    hung up or was taken during the tone (the tone's best effort swallowed that news): a user
    no longer ours is not ours to hang up."""
    await tell_failure(s, user, error)
    if s.owns(user) and s.leg_of(user) is not None:
        await s.hangup(user, error.cause)


async def stop_quietly(s: Session, playback: Playback | None) -> None:
    """Stop a playback if it still plays (best effort: a switch failure or a playback on a
    user already given away is ignored). A notice — the user was taken or hung up — is raised,
    as by any operation: the flow must learn of it."""
    if playback is None or playback.done.done():
        return
    try:
        await s.stop(playback)
    except FlowInterrupted:
        raise
    except BatonError:
        pass


async def dial_with_ringback(
    s: Session, listener: User, user: User, *, timeout: float, caller: User | None = None
) -> Leg:
    """Dial ``user`` while ``listener`` (connected, ours) hears ringback — nobody waits for a
    phone to be answered in silence (invariant 11). The ringback stops however the dial ends;
    a cancellation leaves it to the flow's clean-up, which clears what the flow leaves."""
    ringback = await s.play(listener, Tone("ringback"), loop=True)
    try:
        leg = await s.dial(user, timeout=timeout, caller=caller)
    except BatonError:
        await stop_quietly(s, ringback)
        raise
    await stop_quietly(s, ringback)
    return leg


async def dial_pair(
    s: Session, first: User, second: User, *, timeout: float, caller: User | None = None
) -> None:
    """Reach two parties to connect them (``caller`` is shown to ``second``): ``first`` is rung,
    then ``second`` while ``first`` hears ringback — unless a party is on the line already or
    its phone rings already (a call the flow took over), in which case whoever answers first
    hears ringback until the other answers. Nobody who has answered waits in silence."""
    first_up, second_up = _up(s, first), _up(s, second)
    if second_up and not first_up:
        await dial_with_ringback(s, second, first, timeout=timeout)
        return
    if s.leg_of(second) is None or second_up or first_up:
        await s.dial(first, timeout=timeout)
        await dial_with_ringback(s, first, second, timeout=timeout, caller=caller)
        return
    # Both may ring at once: the second's answer is watched beside the first's dial.
    watcher = s.spawn(_ringback_when_answered(s, second, first, timeout, caller))
    await s.dial(first, timeout=timeout)
    if watcher.done() and not watcher.cancelled() and watcher.exception() is None:
        await stop_quietly(s, watcher.result())  # the second answered first: its ringback
        return
    watcher.cancel()
    if _up(s, second):  # its ringback may have been started meanwhile
        await s.clear(second)
    await dial_with_ringback(s, first, second, timeout=timeout, caller=caller)


async def _ringback_when_answered(
    s: Session, user: User, other: User, timeout: float, caller: User | None
) -> Playback | None:
    await s.dial(user, timeout=timeout, caller=caller)
    if _up(s, other):
        return None
    return await s.play(user, Tone("ringback"), loop=True)


def _up(s: Session, user: User) -> bool:
    """``user``'s call is answered (connected)."""
    leg = s.leg_of(user)
    return leg is not None and leg.connected


async def claim_call(s: Session, *users: User, reason: str | None = None) -> None:
    """Claim users taken out of a call (a P2P, a bridge). If the claim fails half-way — a
    newer claim supersedes it, a party hangs up — the parties it had already taken were pulled
    out of their call and are released by the failed claim: each one still connected and held
    by nobody hears the preemption notice and is let go, rather than sitting in silence until
    the leak collector hangs it up. Once claimed, a flow that then fails or is cancelled ends
    their calls the same way (:func:`end_calls_if_abandoned`)."""
    await claim_telling(s, *users, reason=reason)
    end_calls_if_abandoned(s, *users)


async def claim_telling(s: Session, *users: User, reason: str | None = None) -> None:
    """Claim ``users`` — some of them perhaps taken out of calls they are in — so that a claim
    failing half-way (a newer claim supersedes it, one of them hangs up) leaves nobody it
    pulled out of a call on the line in silence: each one still connected and held by nobody
    hears the preemption notice and is hung up. The first half of :func:`claim_call`, for a
    flow that registers its own clean-up (``call``)."""
    try:
        await s.claim(*users, reason=reason)
    except (Superseded, UserHungUp, Preempted) as exc:
        # (Preempted: one of them — the dispatcher of a barge-in, say — taken meanwhile)
        by = getattr(exc, "by", None) or s.name
        told: list[User] = []
        for u in users:
            leg = s.leg_of(u)
            if leg is None or not leg.connected:
                continue
            if s.owns(u) and u.keep:
                # an always-on line is not hung up: let go now (cleared by the preemption,
                # idle), not held in silence while the others hear their notice
                s.release(u)
            elif s.owns(u):
                # still ours (the claim failed on another of them after taking this one):
                # released with the flow, it would sit on a silent line
                told.append(u)
            elif s.owner_of(u) is None and not u.keep:
                with contextlib.suppress(BatonError):
                    await _claim_past_news(s, u)
                    told.append(u)
        # all at once: one after the other, the second would hear nothing while the first
        # hears its notice (dead air)
        await notify_and_release_all(s, told, by=by)
        raise


async def _claim_past_news(s: Session, user: User) -> None:
    """Claim ``user``; news still pending about the flow's other users (raised by the claim, as
    by any operation) does not stop it — it was about users the caller is giving up anyway.
    News about ``user`` itself is raised."""
    while True:
        try:
            await s.claim(user)
            return
        except FlowInterrupted as exc:
            if user in exc.users:
                raise


def end_calls_if_abandoned(s: Session, *users: User) -> None:
    """Register the compensation of a flow that holds ``users`` on the line: if it ends
    without completing — it failed (a party lost in the middle of its work, an error) or was
    cancelled — each of them it still holds, connected, hears why and is hung up rather than
    released into silence until the leak collector finds the line: the preemption notice
    (all at once) when a party was taken, a busy tone when a party hung up, nothing when the
    flow was cancelled (hung up at once). A phone still ringing is cancelled; an always-on
    line is left to the flow's wind-down (cleared, idle). A flow that completes decides
    itself what becomes of its users."""

    # Two steps, each within its own compensation bound: the notice to everyone at once, then
    # the hang-ups once it has played (on a slow switch each command takes up to a second).
    told: dict[User, float] = {}  # user -> when its notice ends

    def why() -> tuple[str | None, Tone | None]:
        error = s.flow.error
        if isinstance(error, Preempted):
            return error.by, Tone("preemption", 3.0)
        if isinstance(error, UserHungUp):
            return None, Tone("busy", 2.0)
        return None, None  # cancelled, or failed otherwise: hung up at once

    def abandoned() -> list[User]:
        if s.flow.outcome is FlowOutcome.COMPLETED:
            return []
        return [u for u in users if s.owns(u) and s.leg_of(u) is not None and not u.keep]

    async def tell_abandoned() -> None:
        _, tone = why()
        end = s.now() + (tone.duration or 0.0) if tone is not None else 0.0
        for u in abandoned():
            if not _up(s, u):
                with contextlib.suppress(BatonError):
                    await s.hangup(u, Cause.CANCELLED)  # a phone still ringing: cancelled
            elif tone is not None:
                with contextlib.suppress(BatonError):
                    await s.play(u, tone, wait=False)
                    told[u] = end

    async def end_abandoned_calls() -> None:
        by, _ = why()
        while told and s.now() < max(told.values()):
            with contextlib.suppress(FlowInterrupted):  # a party leaving changes nothing
                await s.sleep(max(told.values()) - s.now())

        async def hang_up(u: User) -> None:
            with contextlib.suppress(BatonError):
                if by is not None:
                    await s.hangup(u, Cause.PREEMPTED, EndReason.preempted(by))
                else:
                    await s.hangup(u, Cause.NORMAL)

        # all at once: in turn, one slow hang-up (a loaded switch) outlasts the step's
        # deadline and the next party is never hung up, left to the leak collector
        await asyncio.gather(*(hang_up(u) for u in abandoned()))

    s.compensate(end_abandoned_calls, label="end_abandoned_calls")
    s.compensate(tell_abandoned, label="tell_abandoned")  # runs first (last in, first out)


def parties_of(s: Session, user: User) -> list[User]:
    """The users ``user`` is talking to now: its bridge partner, or the other members of its
    meeting."""
    partner = s.partner_of(user)
    if partner is not None:
        return [partner]
    meeting = s.meeting_of(user)
    if meeting is not None:
        return [u for u in meeting.members if u is not user]
    return []


async def until_leave(
    s: Session,
    dispatcher: User,
    *,
    needs: tuple[User, ...] = (),
    needs_one_of: tuple[User, ...] = (),
) -> None:
    """Wait until ``dispatcher`` leaves: a ``leave`` command, a hang-up, or being taken by a
    higher-priority flow — or until one of the parties the dispatcher's presence ``needs`` is
    lost (a monitored call that lost a party is no call to listen to: the party left alone would
    hear nobody), or every one of ``needs_one_of`` is (a barge-in whose parties are all gone
    leaves the dispatcher alone in an empty room). Other parties leaving do not end the wait."""
    gone: set[User] = set()
    while True:
        try:
            cmd = await s.command()
        except FlowInterrupted as exc:
            gone.update(exc.users)
            if dispatcher in exc.users or any(u in needs for u in exc.users):
                return
            if needs_one_of and all(u in gone for u in needs_one_of):
                return
            continue
        if cmd is not None and cmd.name == "leave":
            cmd.reply("left")
            return


async def dial_unless_left(s: Session, dispatcher: User, *, timeout: float = 30.0) -> bool:
    """Ring ``dispatcher``'s line for a flow that ``leave`` ends (barge-in, monitor, whisper):
    True once it answers; False if ``leave`` was sent while it rang — the ringing stops at
    once (``Session.dial_or_command``), the command is answered ``left``."""
    deadline = s.now() + timeout
    got = await s.dial_or_command(dispatcher, timeout=max(0.0, deadline - s.now()))
    if not isinstance(got, Command):
        return True
    got.reply("left")  # ``leave``: the only command these flows take
    leg = s.leg_of(dispatcher)
    if leg is not None and not leg.connected:
        await s.hangup(dispatcher, Cause.CANCELLED)
    elif leg is not None and not dispatcher.keep:  # answered in that same instant
        await s.hangup(dispatcher, Cause.NORMAL)
    return False


def restore_on_exit(s: Session, a: User, b: User, priority: int) -> None:
    """Register the compensation of a flow that borrowed a two-party call (barge-in, monitor,
    whisper): when it ends, ``a`` and ``b`` are put back in their call at ``priority`` if both
    are still this flow's; if only one is, it hears the preemption notice and is released."""

    async def restore_call() -> None:
        mine = [u for u in (a, b) if s.owns(u) and s.leg_of(u) is not None]
        if len(mine) == 2:
            await s.connect(a, b)
            s.settle(P2P(a, b, priority=priority))
            s.note(f"{a.id} and {b.id} restored to their call")
        elif len(mine) == 1:
            await notify_and_release(s, mine[0], by=s.name)

    s.compensate(restore_call)
