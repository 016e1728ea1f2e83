"""A test world: a UserManager on a sim switch with virtual phones, checked as it runs.

::

    async def test_call() -> None:
        w = World("alice", "bob")
        f = w.start(call, w["alice"], w["bob"])
        await w.run(5)                      # five virtual seconds
        assert w.hears("alice") == {"bob"}
        w.assert_ok()                       # every invariant held at every step

The world installs the manager as the sim's auditor (so a command from a non-owner is caught at
the switch) and, with ``checked=True`` (the default), re-checks the invariants of docs/design.md
after every burst of events — between loop callbacks, when every synchronous step of the core is
complete — and again whenever a bound of the clock-based ones expires (a claim that must have
resolved, a flow that must have ended, a user silent too long): see
:class:`~baton.core.invariants.Watch`.

``timing`` makes the sim take time like a real switch (:class:`~baton.switch.sim.Timing`);
``dead_air`` is how long a held, connected user may hear nothing (default: two seconds plus four
times the switch's longest usual latency, plus two heavy-tail delays if it has a tail).
"""

from __future__ import annotations

import asyncio
from typing import Any

from baton.core.events import Event, Problem
from baton.core.flow import Flow, FlowSpec
from baton.core.invariants import Watch, check_event_order, check_quiescent
from baton.core.manager import UserManager
from baton.core.model import User
from baton.switch.sim import Behaviour, SimSwitch, Timing

__all__ = ["World"]


class World:
    """A manager, a sim switch, users with phones, and an invariant watch.

    ``w["id"]`` is that user (a ``User`` for flows); ``w.manager`` the ``UserManager``;
    ``w.sim`` the sim switch, which drives the phones from the test: ``w.sim.hang_up(id)``,
    ``w.sim.press(id, digits)``, ``w.sim.kill(id)`` (the phone dies: its leg ends by media
    timeout), ``w.sim.answer_now(id)``, ``w.sim.call_in(id, number)`` (the phone calls out).
    ``timing`` (``Timing.real(seed)``) makes the switch take time as a real one does."""

    def __init__(
        self,
        *users: str | User,
        grace: float = 5.0,
        behaviour: Behaviour | None = None,
        latency: dict[str, float] | None = None,
        timing: Timing | None = None,
        checked: bool = True,
        history: int = 100_000,
        dead_air: float | None = None,
    ) -> None:
        self.sim = SimSwitch(default=behaviour, latency=latency, timing=timing)
        self.manager = UserManager(self.sim, grace=grace, history=history)
        self.sim.set_auditor(self.manager.audit_command)
        if dead_air is None:
            # a heavy-tailed switch may be slow on a flow's next command or two, not on four
            t = self.sim.timing
            dead_air = 2.0 + 4 * t.usual + 2 * (t.longest - t.usual)
        self.watch = Watch(self.manager, self._hearing, dead_air=dead_air)
        self.violations: list[str] = []
        self._check_armed = False
        self._timer: asyncio.TimerHandle | None = None
        self.checked = checked
        if checked:
            self.manager.events.subscribe(self._on_event)
            # what a phone hears also changes when a slow command lands or a tone ends, with
            # no event: the watch samples then too, or a notice heard between two events
            # would go unseen and its silence before and after count as one (dead air)
            self.sim.on_change = self._arm
        for user in users:
            self.add(user)

    # ---- users

    def add(self, user: str | User, behaviour: Behaviour | None = None, **kw: Any) -> User:
        """Add a user (by id or object) with a virtual phone."""
        u = user if isinstance(user, User) else User(user, **kw)
        self.manager.add_user(u)
        self.sim.add_phone(u.id, behaviour)
        return u

    def __getitem__(self, user_id: str) -> User:
        return self.manager.user(user_id)

    def behave(self, user_id: str, behaviour: Behaviour) -> None:
        """Change how ``user_id``'s virtual phone reacts from now on."""
        self.sim.behave(user_id, behaviour)

    # ---- running

    def start(
        self, spec: FlowSpec[Any], /, *args: Any, priority: int | None = None, **kwargs: Any
    ) -> Flow:
        """Start a flow (see :meth:`UserManager.start`)."""
        return self.manager.start(spec, *args, priority=priority, **kwargs)

    async def run(self, seconds: float = 0.0) -> None:
        """Let ``seconds`` of (virtual) time pass, then let every ready callback run."""
        if seconds > 0:
            await asyncio.sleep(seconds)
        await self.idle()

    @staticmethod
    async def idle(rounds: int = 20) -> None:
        """Let the loop run its ready callbacks (a few rounds) without advancing time."""
        for _ in range(rounds):
            await asyncio.sleep(0)

    async def close(self) -> None:
        """Stop every flow (compensations run) and the sim's timers."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self.manager.close()
        await self.sim.close()

    # ---- looking

    def hears(self, user_id: str) -> set[str]:
        """Who and what ``user_id`` hears now (user ids, ``tone:x``, ``prompt:p``)."""
        return self.sim.hears(user_id)

    def owner(self, user_id: str) -> str | None:
        """The name of whoever holds ``user_id`` (``"call#1"``, ``"p2p#2"``), or None."""
        owner = self.manager.owner_of(self[user_id])
        return owner.name if owner is not None else None

    def state(self, user_id: str) -> str:
        """idle, dialling, ringing, connected, talking or meeting."""
        return self.manager.state_of(self[user_id])

    def heard(self, user_id: str) -> list[str]:
        """Everything ever played to ``user_id``, in order."""
        return [what for _, what in self.sim.phones[user_id].heard]

    @property
    def events(self) -> list[Event]:
        """Every event so far (the bus's history), oldest first."""
        return list(self.manager.events.history)

    def kinds(self, *kinds: str) -> list[Event]:
        """The events of these kinds (``"floor.granted"``, ``"leg.state"``…)."""
        return [e for e in self.manager.events.history if e.kind in kinds]

    # ---- checking

    def _on_event(self, _: Event) -> None:
        self._arm()

    def _arm(self) -> None:
        if not self._check_armed:
            self._check_armed = True
            self.manager.loop.call_soon(self._check_now)

    def _hearing(self, user_id: str) -> set[str] | None:
        # the call the core knows for the user, if any: a phone may have another at the switch
        # (a call in the making, or a ghost the switch refused to end)
        rec = self.manager.ledger.records.get(user_id)
        known = rec.live_leg if rec is not None else None
        leg = self.sim.legs.get(known.id) if known is not None else self.sim.leg_of(user_id)
        if leg is None or leg.state != "connected":
            return None
        return self.sim.hears_on(leg.id)

    def _check_now(self) -> None:
        self._check_armed = False
        for problem in self.watch.check():
            if problem not in self.violations:
                self.violations.append(problem)
        if not self.checked:
            return
        when = self.watch.next_deadline()
        timer = self._timer
        if when is None or not self.manager.has_loop:
            return
        if timer is None or timer.cancelled() or timer.when() > when:
            if timer is not None:
                timer.cancel()
            self._timer = self.manager.loop.call_at(when + 1e-3, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._check_now()

    def check(self) -> list[str]:
        """Every violation seen so far, the state of this instant checked too (cheap enough to
        call after every step; :meth:`problems` adds the history and end-of-run checks)."""
        self._check_now()
        return list(self.violations)

    def problems(self, *, quiescent: bool = False) -> list[str]:
        """Violations seen so far, plus the event-order check, plus (``quiescent``) the
        end-of-scenario check that nothing leaked."""
        found = list(self.violations)
        self._check_now()
        found = list(dict.fromkeys([*found, *self.violations]))
        found += check_event_order(self.events)
        if quiescent:
            found += check_quiescent(self.manager)
            found += self._ghosts()
        return found

    def _ghosts(self) -> list[str]:
        """Calls the switch still has that the core does not know of (invariant 8 at the
        switch: a phone in a call nobody will ever end)."""
        reported = {
            ev.source.partition(":")[2]
            for ev in self.kinds("problem")
            if isinstance(ev, Problem) and ev.source.startswith(("hangup:", "reject:"))
        }  # the core tried to end these and said the switch refused (invariant 9)
        return [
            f"inv8: the switch still has {leg.id} of {leg.user} ({leg.state}), unknown to the core"
            for leg in self.sim.legs.values()
            if leg.state != "ended"
            and self.manager.find_leg(leg.id) is None
            and leg.id not in reported
        ]

    def assert_ok(self, *, quiescent: bool = False) -> None:
        """Fail with every violation found (see :meth:`problems`)."""
        problems = self.problems(quiescent=quiescent)
        assert not problems, "invariant violations:\n  " + "\n  ".join(problems)
