"""Force release (强拆): end a user's current call.

The target's call is taken at FLASH_OVERRIDE priority; the target is hung up with an RFC 4411
``Reason: preemption`` header. The other party hears the preemption tone and then, per policy,
is released (hung up), or returned to a dispatcher queue to wait for a dispatcher again.
"""

from __future__ import annotations

import contextlib
import enum

from baton.core import (
    BatonError,
    Cause,
    EndReason,
    FlowInterrupted,
    InvalidArgument,
    Priority,
    Session,
    Tone,
    User,
    UserHungUp,
    flow,
)
from baton.flows._common import end_calls_if_abandoned, parties_of
from baton.flows.queue import DispatcherQueue, queued_call


class OtherParty(enum.Enum):
    """What happens to the party left alone."""

    RELEASE = "release"  # preemption tone, then hung up
    QUEUE = "queue"  # preemption tone, then back into a dispatcher queue


@flow(priority=Priority.FLASH_OVERRIDE, permission="force_release")
async def force_release(
    s: Session,
    target: User,
    other: OtherParty = OtherParty.RELEASE,
    queue: DispatcherQueue | None = None,
) -> list[str]:
    """End ``target``'s call; the other parties are released or re-queued. Returns the ids of
    the other parties."""
    if other is OtherParty.QUEUE and queue is None:
        raise InvalidArgument("force_release with other=QUEUE needs a queue", "queue")
    parties = parties_of(s, target)
    others = [p.id for p in parties]  # what it returns: the parties of the call it ended
    users = [target, *parties]
    while True:
        try:
            await s.claim(*users, reason="force release")
            break
        except UserHungUp as exc:
            # one of them hung up while the call was being taken: the others were pulled out
            # of it and let go by the failed claim — the force release goes on with them, so
            # nobody sits on a broken call in silence
            users = [u for u in users if u not in exc.users and s.leg_of(u) is not None]
            if not users:
                return others
    parties = [p for p in parties if p in users]
    # the target too: a flow failing before it hung the target up (taken back meanwhile, the
    # switch refusing) does not leave the target on a line nobody holds
    end_calls_if_abandoned(s, *users)
    if target in users:
        try:
            await s.hangup(target, Cause.PREEMPTED, EndReason.preempted(s.name, "force release"))
        except FlowInterrupted as exc:
            # a party hung up (or was taken) in the instant the claim was granted: the news is
            # raised here, at the next operation — the target's call is ended all the same
            if target in exc.users:
                raise
            parties = [p for p in parties if p not in exc.users]
            await s.hangup(target, Cause.PREEMPTED, EndReason.preempted(s.name, "force release"))
    s.note(f"{target.id} force-released")
    # Every party left alone hears the notice at once (not one after the other in silence).
    told: list[User] = []
    for party in parties:
        with contextlib.suppress(BatonError):
            await s.play(party, Tone("preemption", 3.0), wait=False)
            told.append(party)

    async def let_go(party: User) -> None:
        if not s.owns(party):
            return
        if other is OtherParty.RELEASE or queue is None:
            with contextlib.suppress(BatonError):
                await s.hangup(party, Cause.PREEMPTED, EndReason.preempted(s.name))
            return
        s.release(party)
        s.manager.start(queued_call, party, queue)
        s.note(f"{party.id} returned to queue {queue.name}")

    for party in parties:  # the tone could not reach it (the switch failed): let go at once
        if party not in told:
            await let_go(party)
    if told:
        with contextlib.suppress(FlowInterrupted):  # a party leaving meanwhile changes nothing
            await s.sleep(3.0)
    for party in told:
        await let_go(party)
    return others
