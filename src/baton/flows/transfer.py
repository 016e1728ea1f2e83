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

import enum

from baton.core import (
    P2P,
    CallFailed,
    Playback,
    Preempted,
    Priority,
    Session,
    User,
    UserHungUp,
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
    except (CallFailed, Preempted) as exc:
        await s.stop(ringback)
        if isinstance(exc, Preempted):
            s.note(f"{target.id} was taken by {exc.by} while ringing")
        if on_fail is OnFail.RECALL and s.owns(transferor):
            await s.dial(transferor, timeout=ring)
            await s.connect(party, transferor)
            s.settle(P2P(party, transferor, priority=original))
            s.note(f"{target.id} did not answer: {party.id} back with {transferor.id}")
            return "recalled"
        if isinstance(exc, Preempted):
            await notify_and_release(s, party, by=exc.by)
            raise
        await tell_failure(s, party, exc)
        await s.hangup(party, exc.cause)
        raise
    await s.stop(ringback)
    await s.connect(party, target)
    s.settle(P2P(party, target))
    return "transferred"


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
    music: str | None = None,
) -> str:
    """Consult ``target`` while ``party`` waits on hold, then complete or cancel."""
    original = _priority_of_call(s, party)
    await s.claim(party, transferor, target)
    await s.clear(party)
    hold = await s.play(party, Prompt(music) if music else Tone("hold"), loop=True)

    async def back_together() -> str:
        await s.stop(hold)
        await s.connect(party, transferor)
        s.settle(P2P(party, transferor, priority=original))
        return "cancelled"

    ringback = await s.play(transferor, "ringback", loop=True)
    try:
        await s.dial(target, timeout=ring, caller=transferor)
    except CallFailed as exc:
        await s.stop(ringback)
        await tell_failure(s, transferor, exc)
        return await back_together()
    except Preempted as exc:  # the target was taken while ringing: the transfer is off
        await s.stop(ringback)
        s.note(
            f"{target.id} was taken by {exc.by} while ringing: {party.id} back with {transferor.id}"
        )
        return await back_together()
    await s.stop(ringback)
    await s.connect(transferor, target)
    s.note(f"{transferor.id} consults {target.id}; {party.id} on hold")
    while True:
        try:
            cmd = await s.command()
        except UserHungUp as exc:
            if exc.user is transferor:
                return await _complete(s, party, target, hold, transferor_left=True)
            if exc.user is target:
                return await back_together()
            s.settle(P2P(transferor, target))  # the party left: the consultation goes on
            return "party left"
        except Preempted as exc:
            s.note(f"{', '.join(u.id for u in exc.users)} taken by {exc.by}: the transfer is off")
            if s.owns(transferor):  # only the target was taken: back to the party
                return await back_together()
            await notify_and_release(s, party, by=exc.by)
            return "preempted"
        if cmd is None:
            continue
        if cmd.name == "complete":
            cmd.reply("completed")
            return await _complete(s, party, target, hold, transferor_left=False, by=transferor)
        cmd.reply("cancelled")
        await s.hangup(target, Cause.NORMAL)
        return await back_together()


async def _complete(
    s: Session,
    party: User,
    target: User,
    hold: Playback,
    *,
    transferor_left: bool,
    by: User | None = None,
) -> str:
    await s.stop(hold)
    await s.connect(party, target)
    s.settle(P2P(party, target))
    if not transferor_left and by is not None:
        await _leave(s, by)
    return "transferred"
