"""Individual calls: dispatcher- or user-initiated two-party calls.

``call`` (dispatcher-initiated, click-to-call style)
    The caller's line is rung first (an always-on dispatcher line is already connected), then
    the callee; the caller hears ringback meanwhile. On answer the two are bridged and settled
    into a :class:`~baton.core.P2P` that outlives the flow.

``inbound_call`` (user-initiated)
    A user dialled another user's number. The callee is rung while the caller's phone rings
    back; when the callee answers, the caller's leg is answered and the two are bridged. If the
    callee is busy, does not answer or rejects, the caller's call is ended with that cause. If
    one party is lost before the bridge, the other's call ends at once: the callee's ringing
    is cancelled when the caller hangs up; a party whose other side was taken by a
    higher-priority flow hears the preemption tone and is hung up ``preempted``.
"""

from __future__ import annotations

from baton.core import (
    P2P,
    CallFailed,
    Cause,
    FlowInterrupted,
    InvalidArgument,
    Priority,
    Session,
    User,
    flow,
)
from baton.flows._common import (
    claim_telling,
    dial_pair,
    end_calls_if_abandoned,
    end_unbridged,
    tell_failure,
)


@flow(priority=Priority.ROUTINE, permission="call")
async def call(s: Session, caller: User, callee: User, ring: float = 30.0) -> None:
    """Call ``callee`` for ``caller`` (a dispatcher): ring both, bridge them, settle a P2P.

    Raises ``NoAnswer``/``Busy``/``Rejected``/``Unreachable``/``Incompatible`` if either does not answer; the
    caller then hears a busy tone. A callee taken by a higher-priority flow before the bridge:
    the caller hears the preemption tone and is hung up (an always-on line is only cleared).
    """
    if callee is caller:  # never bridgeable, whatever the state: refused before ringing
        raise InvalidArgument(f"{caller.id!r} cannot call itself", "callee")
    # started above ROUTINE (a supervisor's call) it may take a party out of a call: one
    # hanging up meanwhile leaves the other told and hung up, not released into silence
    await claim_telling(s, caller, callee)

    async def cancel_callee() -> None:  # runs only if callee is still ours (not settled)
        await s.hangup(callee, Cause.CANCELLED)

    s.compensate(cancel_callee, callee, label="cancel_callee")
    try:
        # the caller is rung, then the callee while the caller hears ringback; a callee on the
        # line already, or whose phone rings already (a call taken over), is not left in
        # silence meanwhile
        await dial_pair(s, caller, callee, timeout=ring, caller=caller)
        await s.connect(caller, callee)
    except CallFailed as exc:
        if exc.user is callee:
            await tell_failure(s, caller, exc)
        raise
    except FlowInterrupted as lost:  # the callee was taken or hung up: the caller is told now
        if callee in lost.users:
            await end_unbridged(s, caller, lost)
        raise
    s.settle(P2P(caller, callee))
    s.note(f"{caller.id} and {callee.id} are talking")


@flow(priority=Priority.ROUTINE, permission="call")
async def inbound_call(s: Session, caller: User, callee: User, ring: float = 30.0) -> None:
    """``caller`` dialled ``callee``: ring the callee, then answer and bridge the caller."""
    await claim_telling(s, caller, callee)
    end_calls_if_abandoned(s, caller, callee)  # cancelled half-way: nobody left on a dead line
    try:
        try:
            await s.dial(callee, timeout=ring, caller=caller)
        except CallFailed as exc:
            await s.hangup(caller, exc.cause)  # the caller's phone shows busy / no answer
            raise
        await s.answer(caller)
        await s.connect(caller, callee)
    except FlowInterrupted as lost:  # one party was lost before the bridge
        await end_unbridged(s, callee if lost.user is caller else caller, lost)
        raise
    s.settle(P2P(caller, callee))
