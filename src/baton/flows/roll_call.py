"""Roll call (点名) and polling (轮询).

``roll_call``
    Calls the listed users one after another. Each who answers hears the confirm tone and is
    asked to press ``digit``; the call is then ended and the next user is called. Returns, per
    user, ``confirmed``, ``answered`` (did not confirm in time), or why the call failed.

``polling``
    Calls the listed users in order until one answers, and connects that one with the
    dispatcher (a P2P). Returns who answered, or None.
"""

from __future__ import annotations

from baton.core import (
    P2P,
    BatonError,
    CallFailed,
    ClaimDenied,
    FlowInterrupted,
    Priority,
    Session,
    Tone,
    User,
    flow,
)
from baton.flows._common import dial_with_ringback, end_calls_if_abandoned


@flow(priority=Priority.PRIORITY, permission="roll_call")
async def roll_call(
    s: Session,
    members: list[User],
    digit: str = "1",
    ring: float = 20.0,
    confirm_within: float = 10.0,
) -> dict[str, str]:
    """Call ``members`` one by one; each confirms by pressing ``digit``."""
    report: dict[str, str] = {}
    end_calls_if_abandoned(s, *members)  # cancelled while a member is on the line: hung up
    for m in members:
        try:
            await s.claim(m, reason="roll call")
            await s.dial(m, timeout=ring)
            await s.play(m, Tone("confirm"))
            s.quiet(m, f"asked to press {digit}")
            pressed = await s.collect(m, max_digits=1, timeout=confirm_within, terminators="")
            report[m.id] = "confirmed" if pressed == digit else "answered"
            await s.hangup(m)
        except CallFailed as exc:
            report[m.id] = exc.cause.value
        except FlowInterrupted as exc:
            report[m.id] = "hung up" if exc.code == "user-hung-up" else "taken"
        except BatonError:
            report[m.id] = "busy"
        if s.owns(m):  # (cancelled, the flow's clean-up ends the member's call instead)
            s.release(m)
        s.note(f"roll call: {m.id} {report[m.id]}")
    return report


@flow(priority=Priority.PRIORITY, permission="call")
async def polling(
    s: Session, dispatcher: User, members: list[User], ring: float = 15.0
) -> str | None:
    """Call ``members`` in order until one answers; connect them with ``dispatcher``."""
    await s.claim(dispatcher)
    end_calls_if_abandoned(s, dispatcher, *members)
    await s.dial(dispatcher)
    for m in members:
        try:
            await s.claim(m, reason="polling")
            await dial_with_ringback(s, dispatcher, m, timeout=ring, caller=dispatcher)
        except CallFailed as exc:
            s.note(f"polling: {m.id} {exc.cause.value}")
            s.release(m)
            continue
        except ClaimDenied:
            s.note(f"polling: {m.id} busy")
            continue
        except FlowInterrupted as exc:
            if dispatcher in exc.users:
                s.note(f"polling stopped: {dispatcher.id} {exc.code}")
                return None  # the member being rung is released with the flow
            s.note(f"polling: {m.id} {exc.code}")
            continue
        await s.connect(dispatcher, m)
        s.settle(P2P(dispatcher, m))
        return m.id
    return None
