"""Deliberately broken flows: the mistakes ``baton check`` must catch."""

from __future__ import annotations

import asyncio
import contextlib

from baton.core import P2P, BatonError, FlowInterrupted, Priority, Session, User, flow


async def _talking(s: Session, a: User, b: User) -> bool:
    """Connect ``a`` and ``b``; a party lost on the way ends the other's call (this set-up is
    not the mistake a broken flow below shows). False if it did not get that far."""
    await s.claim(a, b)
    try:
        await s.dial(a)
        await s.dial(b)
        await s.connect(a, b)
    except FlowInterrupted:
        for u in (a, b):
            if s.owns(u) and s.leg_of(u) is not None:
                with contextlib.suppress(BatonError):
                    await s.hangup(u)
        return False
    return True


@flow(priority=Priority.ROUTINE)
async def careless_compensation(s: Session, a: User, b: User) -> None:
    """Registers an undo step that hangs up ``a`` without naming ``a``: when ``a`` is taken,
    the step still runs and touches a user the flow lost."""
    await s.claim(a, b)
    await s.dial(a)
    await s.dial(b)
    await s.connect(a, b)

    async def hang_up_a() -> None:
        await s.hangup(a)

    s.compensate(hang_up_a)  # the mistake: should be s.compensate(hang_up_a, a)
    await s.sleep(20)


@flow(priority=Priority.ROUTINE)
async def deaf_flow(s: Session, a: User, b: User) -> None:
    """Waits with raw asyncio and has no handler: it never learns it lost a user."""
    if not await _talking(s, a, b):
        return
    await asyncio.sleep(20)  # the mistake: not a session wait, and no on_preempted


@flow(priority=Priority.ROUTINE)
async def abandoning_flow(s: Session, a: User, b: User) -> None:
    """Lets the notice of a lost party escape: the other party, released when the flow
    fails, sits on the line in silence until the leak collector hangs it up."""
    await s.claim(a, b)
    await s.dial(a)
    await s.dial(b)
    await s.connect(a, b)
    await s.sleep(20)  # the mistake: a Preempted / UserHungUp here strands the other party


@flow(priority=Priority.ROUTINE)
async def stubborn_flow(s: Session, a: User, b: User) -> None:
    """Swallows Preempted and carries on with the user it lost."""
    if not await _talking(s, a, b):
        return
    try:
        await s.sleep(20)
    except FlowInterrupted:
        pass  # the mistake: ignoring the notice
    await s.play(a, "confirm")


@flow(priority=Priority.ROUTINE)
async def done_with_b(s: Session, a: User, b: User, c: User) -> None:
    """Not broken: hangs ``b`` up (it keeps holding it, as a blind transfer keeps its
    transferor for a recall), then connects ``a`` and ``c``. Losing ``b`` after that, while
    the bridge is on its way, harms nothing."""
    await s.claim(a, b, c)
    for u in (a, b, c):
        await s.dial(u)
    await s.hangup(b)
    await s.connect(a, c)
    s.settle(P2P(a, c))


@flow(priority=Priority.ROUTINE, commands={"drop": "hang up a party (user)", "end": "end"})
async def silencing_drop(s: Session, a: User, b: User) -> None:
    """A console command that hangs up one party of a call and leaves the other on the line
    hearing nobody, held by the flow: dead air (found only by sending the command)."""
    if not await _talking(s, a, b):
        return
    while True:
        try:
            cmd = await s.command()
        except FlowInterrupted:
            return
        if cmd is None:
            continue
        if cmd.name == "end":
            cmd.reply("ended")
            break
        with contextlib.suppress(BatonError):
            await s.hangup(s.user(cmd.args["user"]))  # the mistake: the other party is left
        cmd.reply("dropped")
    for u in (a, b):
        if s.owns(u) and s.leg_of(u) is not None:
            with contextlib.suppress(BatonError):
                await s.hangup(u)
