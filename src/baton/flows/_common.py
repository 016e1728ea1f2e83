"""Helpers the library flows share (private: flow authors use the Session API directly)."""

from __future__ import annotations

import contextlib

from baton.core import P2P, BatonError, CallFailed, FlowInterrupted, Session, User
from baton.switch.port import Cause, Tone

#: The tone a party hears when a call fails, by cause.
FAILURE_TONE = {
    Cause.BUSY: "busy",
    Cause.REJECTED: "busy",
    Cause.NO_ANSWER: "busy",
    Cause.UNREACHABLE: "busy",
}


def preemption_reason(by: str, text: str | None = None) -> str:
    """An RFC 4411 ``Reason`` header value (``preemption ;cause=…``). Cause 1 is "Pre-emption:
    the call was pre-empted by a higher-priority call"; the text names the flow that took it."""
    return f'preemption ;cause=1 ;text="{text or by}"'


async def notify_and_release(s: Session, user: User, *, by: str, seconds: float = 3.0) -> None:
    """Preemption notice: ``user`` hears the preemption tone, then is hung up with an RFC 4411
    reason. Best effort: a user lost or gone meanwhile is simply left alone."""
    with contextlib.suppress(BatonError):
        await s.play(user, Tone("preemption", seconds))
    with contextlib.suppress(BatonError):
        await s.hangup(user, Cause.PREEMPTED, preemption_reason(by))


async def tell_failure(s: Session, user: User, error: CallFailed) -> None:
    """Let ``user`` hear why a call failed (busy tone) — best effort."""
    tone = FAILURE_TONE.get(error.cause)
    if tone is not None:
        with contextlib.suppress(BatonError):
            await s.play(user, Tone(tone, 2.0))


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


async def until_leave(s: Session, dispatcher: User) -> None:
    """Wait until ``dispatcher`` leaves: a ``leave`` command, a hang-up, or being taken by a
    higher-priority flow. Other parties leaving (hung up, preempted) do not end the wait."""
    while True:
        try:
            cmd = await s.command()
        except FlowInterrupted as exc:
            if exc.user is dispatcher:
                return
            continue
        if cmd is not None and cmd.name == "leave":
            cmd.reply("left")
            return


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
