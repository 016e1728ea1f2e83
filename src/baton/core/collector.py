"""The leak collector: a live leg nobody holds is hung up after a grace period (docs/design.md,
invariant 8).

Theory of operation
-------------------
After every hand-over and every leg change the manager asks the collector to look at the user
(:meth:`Collector.arm`): a live leg with no owner gets a timer — unless it is the connected
line of a user marked ``keep`` (a phone of such a user still ringing for nobody does) —
for the user's grace (``User.grace``, else the manager's ``grace``); an owner arriving, or the
leg ending, cancels it. When the timer fires with the leg still ownerless the leg is ended in
the core at once and hung up at the switch in a supervised task.

The collector also owns the one way the manager hangs a leg up *on its own account*
(:meth:`Collector.hang_up`), shared by the collector, a ringing leg given up at its deadline
and a flow's failed hang-up: the core has already ended the leg, so the switch must too — it is
asked again once if it fails, or the phone would stay in a call nobody knows of.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from baton.core.events import LegCollected, Problem
from baton.core.ops import CURRENT_OP
from baton.core.port import Cause, EndReason, SwitchError

if TYPE_CHECKING:
    from baton.core.ledger import UserRecord
    from baton.core.manager import UserManager
    from baton.core.model import Leg

__all__ = ["Collector"]


class Collector:
    """The leak collector of one manager."""

    __slots__ = ("_m",)

    def __init__(self, manager: UserManager) -> None:
        self._m = manager

    def arm(self, rec: UserRecord) -> None:
        """Start or stop the user's collection timer, as the user's state now asks."""
        leg = rec.live_leg
        # keep spares an always-on line that is up; one still ringing for nobody is a leak
        want = rec.owner is None and leg is not None and not (rec.user.keep and leg.connected)
        if want and rec.gc is None and not self._m.closing:
            grace = rec.user.grace if rec.user.grace is not None else self._m.grace
            rec.gc = self._m.loop.call_later(grace, self._collect, rec)
        elif not want and rec.gc is not None:
            rec.gc.cancel()
            rec.gc = None

    def _collect(self, rec: UserRecord) -> None:
        rec.gc = None
        leg = rec.live_leg
        if rec.owner is not None or leg is None or (rec.user.keep and leg.connected):
            return
        m = self._m
        m.events.publish(LegCollected(user=rec.user.id, leg=leg.id))
        m.end_leg(rec, leg, Cause.COLLECTED)
        m.spawn(self.hang_up(leg, Cause.COLLECTED, None), f"collect:{leg.id}")

    async def hang_up(
        self, leg: Leg, cause: Cause, reason: EndReason | None, tries: int = 2
    ) -> None:
        """Hang up a leg the core has already ended, on the manager's account. A switch that
        fails is asked again (``tries`` in all, a second apart): otherwise the phone would stay
        in a call nobody knows of."""
        m = self._m
        token = CURRENT_OP.set(None)
        try:
            for attempt in range(tries):
                try:
                    async with asyncio.timeout(m.command_timeout):
                        await m.switch.hangup(leg.id, cause, reason)
                    return
                except (SwitchError, TimeoutError) as exc:
                    message = str(exc) or f"no answer within {m.command_timeout} s"
                    m.events.publish(Problem(source=f"hangup:{leg.id}", message=message))
                if attempt + 1 < tries:
                    await asyncio.sleep(1.0)
        finally:
            CURRENT_OP.reset(token)
