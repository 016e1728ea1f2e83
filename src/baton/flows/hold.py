"""Hold and resume.

The held party hears the hold tone (or music on hold, a WAV prompt) while the holder is free;
``resume`` puts them back together as the call they were (a P2P at its original priority). If
the held party hangs up, the holder hears a busy tone and is hung up (the preemption notice, if
the held party was taken), as in the two-party call they came from — an always-on line is only
cleared; if the holder hangs up, the held party hears a busy tone and is hung up.
"""

from __future__ import annotations

import contextlib

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
            return await _someone_left(s, exc, holder, held, tune)
        s.settle(P2P(holder, held, priority=original))
        return "resumed"


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
