"""Monitor (监听) and whisper: a dispatcher listens to a call, or speaks to one party only.

The monitored parties hear nothing of it. A call in a meeting (a conference) is joined in
*listen* (or *whisper-to*) mode without touching its members. A two-party call (a P2P) is
turned into a meeting for the duration — both parties speaking, the dispatcher listening or
whispering — and restored as a P2P at its original priority afterwards. A call still being set
up by another flow cannot be monitored (it would break that flow): the error says so.

Either ends when the dispatcher hangs up or sends ``leave``.
"""

from __future__ import annotations

from baton.core import (
    P2P,
    FlowUsageError,
    InvalidArgument,
    MeetingMode,
    Priority,
    Session,
    User,
    flow,
)
from baton.flows._common import (
    claim_call,
    dial_unless_left,
    parties_of,
    restore_on_exit,
    until_leave,
)

LEAVE = {"leave": "the dispatcher stops listening"}


@flow(priority=Priority.FLASH, permission="monitor", commands=LEAVE)
async def monitor(s: Session, dispatcher: User, target: User) -> None:
    """Listen silently to ``target``'s call."""
    await _listen_in(s, dispatcher, target, MeetingMode.LISTEN)


@flow(priority=Priority.FLASH, permission="whisper", commands=LEAVE)
async def whisper(s: Session, dispatcher: User, target: User) -> None:
    """Speak to ``target`` only; the other parties hear nothing of it."""
    await _listen_in(s, dispatcher, target, MeetingMode.WHISPER)


async def _listen_in(s: Session, dispatcher: User, target: User, mode: MeetingMode) -> None:
    if dispatcher is target:
        raise InvalidArgument(f"{dispatcher.id!r} cannot {mode.value} to itself", "target")
    whisper_to = target if mode is MeetingMode.WHISPER else None
    room = s.meeting_of(target)
    owner = s.owner_of(target)
    if room is not None:
        await s.claim(dispatcher)
        if not await dial_unless_left(s, dispatcher):
            return
        await s.join(room, dispatcher, mode, whisper_to=whisper_to)
        s.quiet(dispatcher, "listening in: hears what the room says, silence included")
        await until_leave(s, dispatcher)
        if s.owns(dispatcher) and s.meeting_of(dispatcher) is room:
            await s.leave(room, dispatcher)
        return
    if not isinstance(owner, P2P):
        holder = owner.name if owner is not None else "nobody"
        raise FlowUsageError(
            f"{target.id!r} is not in a settled call (held by {holder}); only settled calls "
            "and meetings can be monitored"
        )
    parties = parties_of(s, target)
    if len(parties) != 1:  # the other party was just taken or hung up: the call is ending
        raise FlowUsageError(f"{target.id!r}'s call is ending ({owner.name} lost a party)")
    peer = parties[0]
    if peer is dispatcher:
        raise FlowUsageError(f"{dispatcher.id!r} is {target.id!r}'s party in that call")
    original = owner.priority
    await claim_call(s, dispatcher, target, peer, reason=f"{mode.value} by {dispatcher.id}")

    restore_on_exit(s, target, peer, original)
    room = await s.meeting(target, peer)  # they go on talking while the dispatcher's line rings
    if not await dial_unless_left(s, dispatcher):
        return  # left while its line rang: the call is restored (restore_on_exit)
    await s.join(room, dispatcher, mode, whisper_to=whisper_to)
    # A party lost ends the monitoring: the one left hears the preemption notice (restore).
    await until_leave(s, dispatcher, needs=(target, peer))
