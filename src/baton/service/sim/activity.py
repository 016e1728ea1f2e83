"""Demo activity on the ``sim`` switch (``[sim] activity = true``): now and then an idle field
user's virtual phone calls the dispatcher number (or another user, or a meeting room), and hangs
up a while after — so a newcomer's console has something to show without anyone clicking.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import TYPE_CHECKING

from baton.core.port import SwitchError
from baton.service.config import Config, UserConfig

if TYPE_CHECKING:
    from baton.service.runtime import Service

__all__ = ["run_activity"]

log = logging.getLogger("baton.service.sim")


def _parties(cfg: Config) -> tuple[list[UserConfig], list[str]]:
    """Who may call, and what they dial — read afresh each time: users come and go over the
    provisioning API."""
    positions = {u.id for u in cfg.positions}
    # Field units that may place calls (an observer's account is a console login, not a phone).
    field = [
        u
        for u in cfg.users
        if u.id not in positions and "call" in cfg.all_roles[u.role].permissions
    ]
    targets: list[str] = []
    if cfg.dispatch.number:
        targets += [cfg.dispatch.number] * 3  # mostly: callers wanting a dispatcher
    targets += [n for u in cfg.users for n in u.numbers[:1]]
    targets += [m.number for m in cfg.meetings]
    return field, targets


async def run_activity(service: Service, *, rng: random.Random | None = None) -> None:
    """Run until cancelled (the service owns the task)."""
    sim = service.sim
    if sim is None:
        return
    rng = rng or random.Random()
    loop = asyncio.get_running_loop()
    hangups: list[asyncio.TimerHandle] = []
    try:
        while True:
            await asyncio.sleep(service.config.sim.activity_every * rng.uniform(0.5, 1.5))
            hangups = [h for h in hangups if not h.cancelled()]
            field, targets = _parties(service.config)
            idle = [
                u for u in field if service.manager.state_of(service.manager.user(u.id)) == "idle"
            ]
            if not idle or not targets:
                continue
            caller = rng.choice(idle)
            to = rng.choice([t for t in targets if t not in caller.numbers] or targets)
            try:
                sim.call_in(caller.id, to)
            except SwitchError as exc:
                log.warning("sim activity: %s", exc)
                continue
            log.info("sim activity: %s calls %s", caller.id, to)
            hangups.append(loop.call_later(rng.uniform(20, 60), sim.hang_up, caller.id))
    finally:
        for h in hangups:
            h.cancel()
