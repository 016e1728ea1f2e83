"""What the seeded mixes of library flows share (tests/flows/test_random_mix*.py): the
switch's timing profiles, sending a command whose reply does not matter, the console's
hang-up as the service starts it, and the crash check every mix ends with."""

from __future__ import annotations

from typing import Any

from baton.core import BatonError, Flow, FlowUsageError, NotOwner, Priority, User
from baton.service.positions.flows import hang_up
from baton.switch.sim import Timing
from baton.testing import World

__all__ = ["console_hang_up", "crashed", "send", "timing"]


def timing(seed: int) -> Timing:
    """The switch of mix ``seed``: slow at everything; or slow to clear and to place calls,
    with events late (a preemption's clear outlasting a hang-up and a new call); or quick to
    act but late to report. Each profile found interleavings the others did not."""
    profile = seed % 3
    if profile == 0:
        return Timing.real(seed)
    if profile == 1:
        return Timing(
            commands={"clear": (0.3, 1.5), "originate": (0.2, 1.0)}, events=(0, 0.4), seed=seed
        )
    return Timing(default=(0, 0.2), events=(0.3, 1.5), seed=seed)


def send(flow: Flow, command: str, args: dict[str, str] | None = None) -> None:
    """Send ``command`` if the flow still takes commands; its reply does not matter."""
    try:
        flow.send(command, **(args or {})).add_done_callback(_ignore)
    except FlowUsageError:
        pass  # it is finishing or has ended: it takes no more commands


def _ignore(fut: Any) -> None:
    if not fut.cancelled():
        fut.exception()


def console_hang_up(w: World, user: User) -> Flow:
    """As the service starts it: one level above the holder, and never above an emergency
    (no role may: the emergency itself is ended instead)."""
    owner = w.manager.owner_of(user)
    priority = (owner.priority + 1) if owner is not None else 0
    if priority > Priority.EMERGENCY:
        raise FlowUsageError(f"{user.id} is held by an emergency")
    return w.start(hang_up, user, priority=priority)


def crashed(flows: list[Flow]) -> list[str]:
    """Flows that crashed, or operated on a user they had lost without being told (the loss
    raised as NotOwner instead of the Preempted or UserHungUp they must hear)."""
    return [
        f"{f.name}: {f.error!r}"
        for f in flows
        if f.error is not None
        and (isinstance(f.error, NotOwner) or not isinstance(f.error, BatonError))
    ]
