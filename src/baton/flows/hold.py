"""Hold and resume.

The held party hears the hold tone (or music on hold, a WAV prompt) while the holder is free;
``resume`` puts them back together as the call they were (a P2P at its original priority). If
the held party hangs up, the holder hears a busy tone and is hung up (the preemption notice, if
the held party was taken), as in the two-party call they came from — an always-on line is only
cleared; if the holder hangs up, the held party hears a busy tone and is hung up.

A call with an ``on_line_lost`` hook (a call from the dispatcher queue) keeps it through the
hold: if the holder's *line fails* (not a hang-up), the hook is asked first — the queue puts
the held caller back in the queue, and the hold ends leaving the hold music on until the
caller's new flow takes them (never silence) — and ``resume`` settles the call with the hook.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from baton.core import (
    P2P,
    BatonError,
    Cause,
    FlowInterrupted,
    FlowUsageError,
    Playback,
    Preempted,
    Priority,
    Prompt,
    Session,
    Tone,
    User,
    UserHungUp,
    flow,
)
from baton.flows._common import claim_call, notify_and_release, stop_quietly


@flow(
    priority=Priority.PRIORITY,
    permission="call",
    commands={"resume": "take the held party off hold"},
)
async def hold(s: Session, holder: User, held: User, music: Prompt | None = None) -> str:
    """Put ``held`` (talking with ``holder``) on hold until ``resume``."""
    if s.partner_of(holder) is not held:
        raise FlowUsageError(f"{holder.id!r} is not talking with {held.id!r}")
    owner = s.owner_of(held)
    original = owner.priority if owner is not None else Priority.ROUTINE
    requeue = owner.on_line_lost if isinstance(owner, P2P) else None
    await claim_call(s, holder, held)
    await s.clear(held)
    await s.clear(holder)
    tune: Playback | None = None
    s.note(f"{held.id} on hold")
    while True:
        try:
            if tune is None:
                tune = await s.play(held, music or Tone("hold"), loop=True)
                s.quiet(holder, f"holding {held.id}")
            cmd = await s.command()
            if cmd is None or cmd.name != "resume":
                continue
            cmd.reply("resumed")
            await stop_quietly(s, tune)
            await s.connect(holder, held)
        except FlowInterrupted as exc:
            if _line_lost(exc, holder, held, requeue):
                s.note(f"{holder.id}'s line failed: {held.id} is taken back where they came from")
                return "holder's line lost"
            return await _someone_left(s, exc, holder, held, tune)
        s.settle(P2P(holder, held, priority=original, on_line_lost=requeue))
        return "resumed"


def _line_lost(
    exc: FlowInterrupted,
    holder: User,
    held: User,
    requeue: Callable[[User, Cause], bool] | None,
) -> bool:
    """The holder's line failed (not a hang-up) and the call's ``on_line_lost`` hook took the
    held party on: the flow ends with the music still playing to them, and the hook's flow
    claims them once it has (docs/flows.md, "hold")."""
    return (
        requeue is not None
        and isinstance(exc, UserHungUp)
        and holder in exc.users
        and held not in exc.users
        and exc.cause in P2P.LINE_FAILURES
        and requeue(held, exc.cause)
    )


async def _someone_left(
    s: Session, exc: FlowInterrupted, holder: User, held: User, tune: Playback | None
) -> str:
    if held in exc.users or not s.owns(held):
        # the holder's call is over, as in the two-party call it came from: the preemption
        # notice if the held party was taken, else a busy tone; then hung up (an always-on line
        # is only cleared) — not released onto a silent line for the leak collector to find
        if s.owns(holder) and s.leg_of(holder) is not None and not holder.keep:
            if isinstance(exc, Preempted):
                await notify_and_release(s, holder, by=exc.by)
            else:
                with contextlib.suppress(BatonError):
                    await s.play(holder, Tone("busy", 2.0))
                    await s.hangup(holder, Cause.NORMAL)
        return "held party left"
    # the holder hung up or was taken: the held party is told and released
    with contextlib.suppress(BatonError):
        await stop_quietly(s, tune)
    if isinstance(exc, Preempted):
        await notify_and_release(s, held, by=exc.by)
    else:
        with contextlib.suppress(BatonError):
            await s.play(held, Tone("busy", 2.0))
            await s.hangup(held, Cause.NORMAL)
    return "holder left"
