"""Transfers: blind, and attended (consult, then complete or cancel).

``blind_transfer``
    The transferor leaves at once (hung up; an always-on dispatcher line is only cleared); the
    party hears ringback while the target rings; on answer the party and the target talk. If the
    target does not answer, the transferor is called back (``on_fail=RECALL``) or the party hears
    a busy tone and is released (``RELEASE``).

``attended_transfer``
    The party is put on hold (hold tone or music) while the transferor consults the target.
    Commands: ``complete`` (the party and the target talk; the transferor leaves), ``cancel``
    (the target is released; the party and the transferor talk again). The transferor leaving
    during the consultation — hung up, or taken alone by a higher-priority flow — completes the
    transfer, as on a PBX (the party is put through rather than dropped); if the target is still
    ringing then, the party hears ringback until it answers. The target hanging up cancels it;
    the party hanging up leaves the transferor and the target talking. If a higher-priority
    flow takes the target (ringing or consulting), the transfer is off and the party is back
    with the transferor; if it takes the transferor *and* the target (a barge-in into the
    consultation), the held party hears the preemption tone and is released. Whenever the party
    and the transferor are put back together, their call keeps the priority it had.

Neither transfer leaves anyone in silence: a party whose transfer fails half-way — a newer claim
supersedes it, the target hangs up while ringing — is called back or hears a tone and is let go.

Both return a :class:`TransferOutcome`, decided from who is still there and from the type of
what interrupted the transfer — never from the text of a message.
"""

from __future__ import annotations

import contextlib
import enum

from baton.core import (
    P2P,
    BatonError,
    CallFailed,
    Cause,
    Command,
    FlowInterrupted,
    FlowUsageError,
    Playback,
    Preempted,
    Priority,
    Prompt,
    Session,
    Tone,
    User,
    flow,
)
from baton.flows._common import (
    claim_call,
    dial_with_ringback,
    notify_and_release,
    stop_quietly,
    tell_failure,
    tell_failure_and_hang_up,
)


class TransferOutcome(enum.StrEnum):
    """How a transfer ended: the flow's result. A ``StrEnum``, so the API and the journal show
    the same strings as before it was a type."""

    TRANSFERRED = "transferred"  # the party talks to the target
    RECALLED = "recalled"  # blind: the target failed; the party is back with the transferor
    CANCELLED = "cancelled"  # attended: the party is back with the transferor
    PARTY_LEFT = "party left"  # the party left; attended: the transferor and the target talk on
    TARGET_UNREACHABLE = "target unreachable"  # attended: the transferor left, the target failed
    PREEMPTED = "preempted"  # a higher-priority flow took a party; whoever was left was released
    ABANDONED = "abandoned"  # parties hung up; whoever was left heard the notice and was released


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
) -> TransferOutcome:
    """Put ``party`` through to ``target``; ``transferor`` leaves at once. Returns
    ``TRANSFERRED``, ``RECALLED`` or ``PARTY_LEFT``; raises what ended the transfer otherwise
    (the target's ``CallFailed`` or ``FlowInterrupted``, after the party was let go)."""
    original = _priority_of_call(s, party)
    await claim_call(s, party, transferor, target)
    try:
        await _leave(s, transferor)
    except FlowInterrupted as exc:
        if party in exc.users or target in exc.users:
            raise
        # the transferor, taken or gone as it leaves: it was leaving anyway
        s.note(f"{transferor.id} {exc.code} as it left: the transfer goes on")
    ringback = await s.play(party, "ringback", loop=True)
    deadline = s.now() + ring
    while True:
        try:
            await s.dial(target, timeout=max(0.0, deadline - s.now()), caller=party)
            break
        except FlowInterrupted as exc:
            if party in exc.users:  # the party is gone: nobody to transfer
                s.note(f"{party.id} left ({exc.code}): the transfer is off")
                if s.owns(target):
                    await s.hangup(target, Cause.CANCELLED)
                return TransferOutcome.PARTY_LEFT
            if target not in exc.users:
                continue  # the transferor, who has left already: the target still rings
            how = "was taken by " + exc.by if isinstance(exc, Preempted) else "hung up"
            s.note(f"{target.id} {how} while ringing")
            return await _target_lost(s, party, transferor, ringback, ring, on_fail, original, exc)
        except CallFailed as exc:
            return await _target_lost(s, party, transferor, ringback, ring, on_fail, original, exc)
    while True:
        try:
            await s.stop(ringback)
            await s.connect(party, target)
            break
        except FlowInterrupted as exc:
            if party in exc.users or target in exc.users:
                raise
            # the transferor, taken after it left (its notice raised here): nothing to undo
    s.settle(P2P(party, target))
    return TransferOutcome.TRANSFERRED


async def _target_lost(
    s: Session,
    party: User,
    transferor: User,
    ringback: Playback,
    ring: float,
    on_fail: OnFail,
    original: int,
    exc: CallFailed | FlowInterrupted,
) -> TransferOutcome:
    """The blind transfer's target did not answer, hung up while ringing, or was taken: call
    the transferor back (``RECALL``; the party hears ringback meanwhile), or let the party go
    with a busy tone or the preemption notice (``RELEASE``, or the recall failing)."""
    if on_fail is OnFail.RECALL and s.owns(transferor):
        await stop_quietly(s, ringback)
        try:
            await dial_with_ringback(s, party, transferor, timeout=ring)
        except CallFailed as recall:
            s.note(f"the recall of {transferor.id} failed ({recall.code})")
            exc = recall
        else:
            await s.connect(party, transferor)
            s.settle(P2P(party, transferor, priority=original))
            s.note(f"the transfer failed ({exc.code}): {party.id} back with {transferor.id}")
            return TransferOutcome.RECALLED
    await stop_quietly(s, ringback)
    if isinstance(exc, Preempted):
        await notify_and_release(s, party, by=exc.by)
    elif isinstance(exc, CallFailed):
        await tell_failure_and_hang_up(s, party, exc)
    else:
        await s.play(party, Tone("busy", 2.0))
        await s.hangup(party, Cause.NORMAL)
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
) -> TransferOutcome:
    """Consult ``target`` while ``party`` waits on hold, then complete or cancel."""
    original = _priority_of_call(s, party)
    await claim_call(s, party, transferor, target)
    await s.clear(party)
    await s.play(party, music or Tone("hold"), loop=True)
    ringback = await s.play(transferor, "ringback", loop=True)
    why: str | FlowInterrupted
    try:
        # a command is read while the target rings, not once it answered (docs/flows.md)
        answered = await s.dial_or_command(target, timeout=ring, caller=transferor)
    except CallFailed as exc:
        await tell_failure(s, transferor, exc)
        why = "target unreachable"
        return await _what_is_left(s, party, transferor, target, original, why, ring)
    except FlowInterrupted as exc:
        return await _what_is_left(s, party, transferor, target, original, exc, ring)
    if isinstance(answered, Command):
        why = await _while_ringing(s, answered, transferor, target)
        return await _what_is_left(s, party, transferor, target, original, why, ring)
    await s.stop(ringback)
    await s.connect(transferor, target)
    s.note(f"{transferor.id} consults {target.id}; {party.id} on hold")
    while True:
        try:
            cmd = await s.command()
        except FlowInterrupted as exc:
            return await _what_is_left(s, party, transferor, target, original, exc, ring)
        if cmd is None:
            continue
        try:
            if cmd.name == "complete":
                if not _talking(s, target):  # taken or gone in the same instant
                    cmd.fail(FlowUsageError(f"{target.id!r} is no longer in the consultation"))
                    continue
                cmd.reply("completed")
                await _leave(s, transferor)
                why = "completed"
            else:
                cmd.reply("cancelled")
                await s.hangup(target, Cause.NORMAL)
                why = "cancelled"
        except FlowInterrupted as exc:  # a party was taken or hung up meanwhile
            why = exc
        return await _what_is_left(s, party, transferor, target, original, why, ring)


async def _while_ringing(
    s: Session, cmd: Command, transferor: User, target: User
) -> str | FlowInterrupted:
    """A command sent while the target's phone rings takes effect at once: ``cancel`` hangs
    the ringing phone up; ``complete`` lets the transferor leave, the party hearing ringback
    until the target answers (:func:`_what_is_left`). What ended the consultation."""
    try:
        if cmd.name == "complete":
            cmd.reply("completed")
            await _leave(s, transferor)
            return "completed while the target rang"
        cmd.reply("cancelled")
        if s.owns(target) and s.leg_of(target) is not None:
            await s.hangup(target, Cause.CANCELLED)
        return "cancelled while the target rang"
    except FlowInterrupted as exc:  # a party was taken or hung up meanwhile
        return exc


def _who(exc: FlowInterrupted) -> str:
    return f"{', '.join(u.id for u in exc.users)} {exc.code}"


def _talking(s: Session, user: User) -> bool:
    leg = s.leg_of(user)
    return s.owns(user) and leg is not None and leg.connected


async def _what_is_left(
    s: Session,
    party: User,
    transferor: User,
    target: User,
    original: int,
    why: str | FlowInterrupted,
    ring: float,
) -> TransferOutcome:
    """Settle an attended transfer by who is still there (ours, with a call). ``why`` is what
    ended the consultation: a command or a failure (text for the trace), or the interruption
    itself, whose type tells a preemption from a hang-up:

    * the party and the target, without the transferor: transferred (the transferor completed,
      hung up, or was taken during the consultation; a target still ringing is waited for,
      the party hearing ringback);
    * the party and the transferor: back together (cancelled, the target failed or left);
    * the transferor and the target: the party left, the consultation goes on as a call;
    * otherwise whoever is left hears the preemption notice and is released: ``PREEMPTED`` if
      a higher-priority flow took a party (``why`` is :class:`Preempted`), else ``ABANDONED``.
    """
    left = [u for u in (party, transferor, target) if s.owns(u) and s.leg_of(u) is not None]
    for u in left:
        with contextlib.suppress(BatonError):
            await s.clear(u)  # no hold music, no ringback, out of the consultation
    # a party taken or gone while those clears were on their way is no longer there (its
    # notice was raised, and swallowed, by a clear)
    left = [u for u in left if s.owns(u) and s.leg_of(u) is not None]
    s.note(f"attended transfer: {_who(why) if isinstance(why, FlowInterrupted) else why}")
    if party in left and target in left and transferor not in left:
        if not _talking(s, target):  # still ringing: the party waits for it, not in silence
            try:
                await dial_with_ringback(s, party, target, timeout=ring, caller=party)
            except CallFailed as exc:
                await tell_failure_and_hang_up(s, party, exc)
                return TransferOutcome.TARGET_UNREACHABLE
        await s.connect(party, target)
        s.settle(P2P(party, target))
        return TransferOutcome.TRANSFERRED
    if party in left and transferor in left:
        if target in left:
            await s.hangup(target, Cause.CANCELLED)
        await s.connect(party, transferor)
        s.settle(P2P(party, transferor, priority=original))
        return TransferOutcome.CANCELLED
    if transferor in left and target in left:
        await s.connect(transferor, target)
        s.settle(P2P(transferor, target))
        return TransferOutcome.PARTY_LEFT
    for u in left:
        await notify_and_release(s, u, by=s.name)
    return TransferOutcome.PREEMPTED if isinstance(why, Preempted) else TransferOutcome.ABANDONED
