"""Call pickup (代答): answer a call that is ringing at another user.

The picker takes the caller and the ringing user from the flow that is setting up the call
(PRIORITY beats a ROUTINE call), cancels the ringing leg, rings the picker's own line and
connects it to the caller. If the called user answers first — even in the same instant — the
pickup steps aside: the caller and the called user are connected as they would have been, and
the pickup fails with :class:`PickupFailed`.
"""

from __future__ import annotations

import contextlib

from baton.core import (
    P2P,
    BatonError,
    Cause,
    EndReason,
    FlowInterrupted,
    LegState,
    Priority,
    Session,
    Tone,
    User,
    UserHungUp,
    flow,
)
from baton.flows._common import dial_with_ringback, end_unbridged


class PickupFailed(BatonError):
    """There was no call to pick up (not ringing, or answered first)."""

    code = "pickup-failed"


@flow(priority=Priority.PRIORITY, permission="call")
async def pickup(s: Session, picker: User, ringing: User) -> str:
    """``picker`` answers the call ringing at ``ringing``. Returns the caller's id."""
    leg = s.leg_of(ringing)
    if leg is None or leg.state not in (LegState.DIALLING, LegState.RINGING) or leg.caller is None:
        raise PickupFailed(f"no call is ringing at {ringing.id!r}")
    caller = leg.caller
    try:
        await s.claim(caller, ringing, reason=f"pickup by {picker.id}")
    except UserHungUp as exc:
        # the caller hung up while the call was being taken: the phone it rang, let go by the
        # failed claim, must not ring on for nobody until the leak collector finds it
        if caller in exc.users and ringing not in exc.users:
            await _cancel_ringing(s, ringing)
        elif ringing in exc.users and caller not in exc.users:
            # the called user hung up (declined) as the call was taken: the caller, let go by
            # the failed claim, hears why and its call ends, as it would have without the pickup
            await _end_caller(s, caller, exc)
        raise
    try:
        leg = s.leg_of(ringing)
        if leg is not None and leg.connected:
            # The called user answered while we were taking the call: let them have it.
            await s.connect(caller, ringing)
            s.settle(P2P(caller, ringing))
            raise PickupFailed(f"{ringing.id!r} answered first")
        await s.hangup(ringing, Cause.CANCELLED, EndReason("picked up elsewhere"))
        await s.claim(picker)
        caller_leg = s.leg_of(caller)
        if caller_leg is not None and caller_leg.connected:  # a dispatcher's line: not in silence
            await dial_with_ringback(s, caller, picker, timeout=30.0)
        else:
            await s.dial(picker)
        caller_leg = s.leg_of(caller)
        if caller_leg is not None and not caller_leg.connected:  # an inbound call not answered
            await s.answer(caller)
        await s.connect(caller, picker)
    except FlowInterrupted as lost:
        # A party lost before the bridge: the others' sides end now (a phone still ringing is
        # cancelled, the caller hears why), not when the leak collector finds them.
        for other in (caller, ringing, picker):
            if other is not lost.user:
                await end_unbridged(s, other, lost)
        raise
    s.settle(P2P(caller, picker))
    s.note(f"{picker.id} picked up {caller.id}'s call to {ringing.id}")
    return caller.id


async def _end_caller(s: Session, caller: User, lost: UserHungUp) -> None:
    """End ``caller``'s call if nobody holds it: the busy tone on a line that is up, then the
    call ended (an always-on line only cleared)."""
    if s.leg_of(caller) is None or s.owner_of(caller) is not None:
        return
    with contextlib.suppress(BatonError):
        await s.claim(caller, reason="its callee hung up")
        if s.state_of(caller) == "connected":
            await s.play(caller, Tone("busy", 2.0))
        await end_unbridged(s, caller, lost)


async def _cancel_ringing(s: Session, ringing: User) -> None:
    """Cancel ``ringing``'s call if nobody holds it and it still rings."""
    leg = s.leg_of(ringing)
    if leg is None or leg.connected or s.owner_of(ringing) is not None:
        return
    with contextlib.suppress(BatonError):
        await s.claim(ringing, reason="its caller hung up")
        await s.hangup(ringing, Cause.CANCELLED, EndReason("the caller hung up"))
