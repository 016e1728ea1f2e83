"""Barge-in (强插): a dispatcher joins an existing two-party call as a three-way.

The dispatcher takes both parties from their call (a P2P, or a bridge a flow set up) at FLASH
priority, rings their own line, and the three meet. When the dispatcher leaves (hangs up, sends
``leave``, or the flow is cancelled) the two parties are restored to their call at its original
priority — if both are still this flow's. If one of them was taken meanwhile (an emergency) or
hung up, the other hears the preemption tone and is released.

A target in a conference (a meeting, settled or under a flow) is simply joined: the dispatcher enters the meeting as
a speaker and leaves it at the end.
"""

from __future__ import annotations

from baton.core import (
    FlowUsageError,
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


@flow(priority=Priority.FLASH, permission="barge_in", commands={"leave": "the dispatcher leaves"})
async def barge_in(s: Session, dispatcher: User, target: User) -> None:
    """Join ``target``'s call with ``dispatcher`` as a three-way; restore it afterwards."""
    room = s.meeting_of(target)
    if room is not None:  # a conference: just join it
        await s.claim(dispatcher)
        if not await dial_unless_left(s, dispatcher):
            return
        await s.join(room, dispatcher)
        s.quiet(dispatcher, "in the room: hears what it says, silence included")
        await until_leave(s, dispatcher)
        if s.owns(dispatcher) and s.meeting_of(dispatcher) is room:
            await s.leave(room, dispatcher)
        return
    parties = parties_of(s, target)
    if len(parties) != 1:
        raise FlowUsageError(f"{target.id!r} is not in a two-party call")
    peer = parties[0]
    if dispatcher in (target, peer):
        raise FlowUsageError(f"{dispatcher.id!r} is already in that call")
    owner = s.owner_of(target)
    original = owner.priority if owner is not None else Priority.ROUTINE
    await claim_call(s, dispatcher, target, peer, reason=f"barge-in by {dispatcher.id}")

    restore_on_exit(s, target, peer, original)
    room = await s.meeting(target, peer)  # they go on talking while the dispatcher's line rings
    if not await dial_unless_left(s, dispatcher):
        return  # left while its line rang: the call is restored (restore_on_exit)
    await s.join(room, dispatcher)
    s.note(f"{dispatcher.id} barged into {target.id}–{peer.id}")
    await until_leave(s, dispatcher, needs_one_of=(target, peer))
