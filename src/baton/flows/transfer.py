"""Transfers: blind, and attended (consult, then complete or cancel).

``blind_transfer``
    The transferor leaves at once (hung up; an always-on dispatcher line is only cleared); the
    party hears ringback while the target rings; on answer the party and the target talk. If the
    target does not answer, the transferor is called back (``on_fail=RECALL``) or the party hears
    a busy tone and is released (``RELEASE``).

``attended_transfer``
    The party is put on hold (hold tone or music) while the transferor consults the target.
    Commands: ``complete`` (the party and the target talk; the transferor leaves), ``cancel``
    (the target is released; the party and the transferor talk again). The transferor hanging up
    during the consultation completes the transfer, as on a PBX; the target hanging up cancels
    it; the party hanging up leaves the transferor and the target talking. If a higher-priority
    flow takes the target (ringing or consulting), the transfer is off and the party is back
    with the transferor; if it takes the transferor (a barge-in, an emergency), the held party
    hears the preemption tone and is released. Whenever the party and the transferor are put
    back together, their call keeps the priority it had.
"""

from __future__ import annotations

import contextlib
import enum

from baton.core import (
    P2P,
    BatonError,
    CallFailed,
    FlowInterrupted,
    Playback,
    Preempted,
    Priority,
    Session,
    User,
    flow,
)
from baton.flows._common import notify_and_release, tell_failure
from baton.switch.port import Cause, Prompt, Tone


class OnFail(enum.Enum):
    RECALL = "recall"  # call the transferor back and reconnect
    RELEASE = "release"  # busy tone, then the party is released


def _priority_of_call(s: Session, party: User) -> int:
    """The priority of the call ``party`` is in (ROUTINE if none)."""
    owner = s.owner_of(party)
    return owner.priority if owner is not None else Priority.ROUTINE


async def _leave(s: Session, user: User) -> None:
    """The transferor leaves: hung up, unless it is an always-on line (then just idle)."""
    if user.keep:
        await s.clear(user)
        s.release(user)
    else:
        await s.hangup(user)


@flow(priority=Priority.PRIORITY, permission="transfer")
async def blind_transfer(
    s: Session,
    party: User,
    transferor: User,
    target: User,
    ring: float = 30.0,
    on_fail: OnFail = OnFail.RECALL,
) -> str:
    """Put ``party`` through to ``target``; ``transferor`` leaves at once."""
    original = _priority_of_call(s, party)
    await s.claim(party, transferor, target)
    await _leave(s, transferor)
    ringback = await s.play(party, "ringback", loop=True)
    try:
        await s.dial(target, timeout=ring, caller=party)
    except FlowInterrupted as exc:
        if party in exc.users:  # the party is gone: nobody to transfer
            s.note(f"{party.id} left ({exc.code}): the transfer is off")
            if s.owns(target):
                await s.hangup(target, Cause.CANCELLED)
            return "party left"
        if not isinstance(exc, Preempted):
            raise
        s.note(f"{target.id} was taken by {exc.by} while ringing")
        return await _target_lost(s, party, transferor, ringback, ring, on_fail, original, exc)
    except CallFailed as exc:
        return await _target_lost(s, party, transferor, ringback, ring, on_fail, original, exc)
    await s.stop(ringback)
    await s.connect(party, target)
    s.settle(P2P(party, target))
    return "transferred"


async def _target_lost(
    s: Session,
    party: User,
    transferor: User,
    ringback: Playback,
    ring: float,
    on_fail: OnFail,
    original: int,
    exc: CallFailed | Preempted,
) -> str:
    """The blind transfer's target did not answer, or was taken while ringing: call the
    transferor back (``RECALL``), or let the party go with a busy tone or the preemption
    notice (``RELEASE``)."""
    await s.stop(ringback)
    if on_fail is OnFail.RECALL and s.owns(transferor):
        await s.dial(transferor, timeout=ring)
        await s.connect(party, transferor)
        s.settle(P2P(party, transferor, priority=original))
        s.note(f"the transfer failed ({exc.code}): {party.id} back with {transferor.id}")
        return "recalled"
    if isinstance(exc, Preempted):
        await notify_and_release(s, party, by=exc.by)
    else:
        await tell_failure(s, party, exc)
        await s.hangup(party, exc.cause)
    raise exc


@flow(
    priority=Priority.PRIORITY,
    permission="transfer",
    commands={"complete": "put the party through to the target", "cancel": "give up the transfer"},
)
async def attended_transfer(
    s: Session,
    party: User,
    transferor: User,
    target: User,
    ring: float = 30.0,
    music: Prompt | None = None,
) -> str:
    """Consult ``target`` while ``party`` waits on hold, then complete or cancel."""
    original = _priority_of_call(s, party)
    await s.claim(party, transferor, target)
    await s.clear(party)
    await s.play(party, music or Tone("hold"), loop=True)
    ringback = await s.play(transferor, "ringback", loop=True)
    try:
        await s.dial(target, timeout=ring, caller=transferor)
    except CallFailed as exc:
        await tell_failure(s, transferor, exc)
        return await _what_is_left(s, party, transferor, target, original, "target unreachable")
    except FlowInterrupted as exc:
        return await _what_is_left(s, party, transferor, target, original, _who(exc))
    await s.stop(ringback)
    await s.connect(transferor, target)
    s.note(f"{transferor.id} consults {target.id}; {party.id} on hold")
    while True:
        try:
            cmd = await s.command()
        except FlowInterrupted as exc:
            return await _what_is_left(s, party, transferor, target, original, _who(exc))
        if cmd is None:
            continue
        if cmd.name == "complete":
            cmd.reply("completed")
            await _leave(s, transferor)
            return await _what_is_left(s, party, transferor, target, original, "completed")
        cmd.reply("cancelled")
        await s.hangup(target, Cause.NORMAL)
        return await _what_is_left(s, party, transferor, target, original, "cancelled")


def _who(exc: FlowInterrupted) -> str:
    return f"{', '.join(u.id for u in exc.users)} {exc.code}"


async def _what_is_left(
    s: Session, party: User, transferor: User, target: User, original: int, why: str
) -> str:
    """Settle an attended transfer by who is still there (ours, with a call):

    * the party and the target, without the transferor: transferred (the transferor completed,
      or hung up during the consultation);
    * the party and the transferor: back together (cancelled, the target failed or left);
    * the transferor and the target: the party left, the consultation goes on as a call;
    * otherwise whoever is left hears the preemption notice and is released (the transferor or
      the party was taken away).
    """
    left = [u for u in (party, transferor, target) if s.owns(u) and s.leg_of(u) is not None]
    for u in left:
        with contextlib.suppress(BatonError):
            await s.clear(u)  # no hold music, no ringback, out of the consultation
    s.note(f"attended transfer: {why}")
    if party in left and target in left and transferor not in left:
        await s.connect(party, target)
        s.settle(P2P(party, target))
        return "transferred"
    if party in left and transferor in left:
        if target in left:
            await s.hangup(target, Cause.CANCELLED)
        await s.connect(party, transferor)
        s.settle(P2P(party, transferor, priority=original))
        return "cancelled"
    if transferor in left and target in left:
        await s.connect(transferor, target)
        s.settle(P2P(transferor, target))
        return "party left"
    for u in left:
        await notify_and_release(s, u, by=s.name)
    return "preempted" if "preempted" in why else "abandoned"
