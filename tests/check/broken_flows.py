"""Deliberately broken flows: the mistakes ``baton check`` must catch."""

from __future__ import annotations

import asyncio

from baton.core import Preempted, Priority, Session, User, flow


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
    await s.claim(a, b)
    await s.dial(a)
    await s.dial(b)
    await s.connect(a, b)
    await asyncio.sleep(20)  # the mistake: not a session wait, and no on_preempted


@flow(priority=Priority.ROUTINE)
async def stubborn_flow(s: Session, a: User, b: User) -> None:
    """Swallows Preempted and carries on with the user it lost."""
    await s.claim(a, b)
    await s.dial(a)
    await s.dial(b)
    await s.connect(a, b)
    try:
        await s.sleep(20)
    except Preempted:
        pass  # the mistake: ignoring the notice
    await s.play(a, "confirm")
