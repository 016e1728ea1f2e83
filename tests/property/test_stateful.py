"""Random mixes of flows, claims, preemptions, hang-ups, switch failures and cancellations on
the sim; every invariant is checked after every step.

``BATON_PROPERTY_SCALE=10 make test`` runs ten times as many steps.
"""

from __future__ import annotations

import os
from typing import Any

from core_flows import (
    barge_in,
    call,
    conference,
    crashy,
    emergency,
    grab,
    hold,
    patient,
    transfer,
)
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from baton.core import Priority
from baton.switch.sim import Timing, answers, busy, never_answers, rejects
from baton.testing import VirtualTimeLoop, World

SCALE = int(os.environ.get("BATON_PROPERTY_SCALE", "1"))
RANDOM = os.environ.get("BATON_PROPERTY_RANDOM", "") not in ("", "0")
USERS = ["u0", "u1", "u2", "u3", "u4", "u5"]
PRIORITIES = [Priority.ROUTINE, Priority.PRIORITY, Priority.FLASH, Priority.EMERGENCY]
BEHAVIOURS = [
    answers(0.5),
    answers(3),
    never_answers(),
    busy(),
    rejects(1),
    answers(1).then_hangs_up(4),
    answers(1).presses("1#", 1),
]
COMMANDS = ["bridge", "join", "play", "clear", "originate", "create_meeting", "hangup"]

user = st.sampled_from(USERS)
prio = st.sampled_from(PRIORITIES)
#: at once; a slow real switch (0.05–0.8 s a command or an event; a third of them with a heavy
#: tail, one in twenty taking ten times longer); slow clears and originates
timings = st.builds(
    lambda kind, seed: (
        Timing()
        if kind == 0
        else (Timing.heavy(seed) if seed % 3 == 0 else Timing.real(seed))
        if kind == 1
        else Timing(commands={"clear": (0.2, 0.8), "originate": (0.2, 0.8)}, seed=seed)
    ),
    st.integers(0, 2),
    st.integers(0, 2**16),
)


class DispatchMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = VirtualTimeLoop()
        self.world = World(*USERS, "disp", grace=2.0)
        self.steps = 0

    @initialize(timing=timings)
    def switch_timing(self, timing: Timing) -> None:
        self.world = World(*USERS, "disp", grace=2.0, timing=timing)

    def _run(self, fn: Any = None, dt: float = 0.0) -> None:
        async def go() -> None:
            if fn is not None:
                fn()
            await self.world.run(dt)

        self.loop.run_until_complete(go())
        self.steps += 1

    def _start(self, spec: Any, *args: Any, priority: int | None = None) -> None:
        self._run(lambda: self.world.start(spec, *args, priority=priority))

    @rule(a=user, b=user, p=prio)
    def start_call(self, a: str, b: str, p: int) -> None:
        if a != b:
            self._start(call, self.world[a], self.world[b], 15.0, priority=p)

    @rule(a=user, b=user, p=prio)
    def start_hold(self, a: str, b: str, p: int) -> None:
        users = [self.world[a]] if a == b else [self.world[a], self.world[b]]
        self._start(hold, *users, priority=p)

    @rule(t=user)
    def start_emergency(self, t: str) -> None:
        self._start(emergency, self.world["disp"], self.world[t])

    @rule(a=user, b=user, c=user)
    def start_transfer(self, a: str, b: str, c: str) -> None:
        if len({a, b, c}) == 3:
            self._start(transfer, self.world[a], self.world[b], self.world[c])

    @rule(t=user)
    def start_barge_in(self, t: str) -> None:
        self._start(barge_in, self.world["disp"], self.world[t])

    @rule(us=st.lists(user, min_size=2, max_size=4, unique=True), p=prio)
    def start_conference(self, us: list[str], p: int) -> None:
        self._start(conference, *(self.world[u] for u in us), priority=p)

    @rule(a=user, wait=st.sampled_from([0.5, 3.0, 20.0]), p=prio)
    def start_patient(self, a: str, wait: float, p: int) -> None:
        self._start(patient, self.world[a], wait, priority=p)

    @rule(a=user, p=prio)
    def start_grab(self, a: str, p: int) -> None:
        self._start(grab, self.world[a], priority=p)

    @rule(a=user)
    def start_crashy(self, a: str) -> None:
        self._start(crashy, self.world[a])

    @rule(a=user)
    def hang_up(self, a: str) -> None:
        self._run(lambda: self.world.sim.hang_up(a))

    @rule(a=user)
    def phone_dies(self, a: str) -> None:
        self._run(lambda: self.world.sim.kill(a))

    @rule(a=user, b=st.sampled_from(BEHAVIOURS))
    def change_behaviour(self, a: str, b: Any) -> None:
        self.world.behave(a, b)

    @rule(cmd=st.sampled_from(COMMANDS))
    def switch_fails(self, cmd: str) -> None:
        self.world.sim.fail_next(cmd)

    @precondition(lambda self: bool(self.world.manager.flows))
    @rule(i=st.integers(0, 50))
    def cancel_a_flow(self, i: int) -> None:
        flows = sorted(self.world.manager.flows.values(), key=lambda f: f.name)
        self._run(lambda: flows[i % len(flows)].cancel("random"))

    @rule(a=user)
    def call_in(self, a: str) -> None:
        self._run(lambda: self.world.sim.call_in(a, "disp"))

    @rule(dt=st.sampled_from([0.0, 0.05, 0.1, 0.5, 1.0, 3.0, 10.0]))
    def time_passes(self, dt: float) -> None:
        self._run(dt=dt)

    @invariant()
    def invariants_hold(self) -> None:
        problems = self.world.check()  # 1–12, the clock-based ones (10–12) included
        assert not problems, problems

    def teardown(self) -> None:
        async def finish() -> list[str]:
            w = self.world
            for f in list(w.manager.flows.values()):
                f.cancel("teardown")
            await w.run(30)  # compensations, then the leak collector's grace
            problems = w.problems(quiescent=True)
            await w.close()
            return problems

        try:
            problems = self.loop.run_until_complete(finish())
            assert not problems, problems
        finally:
            self.loop.close()


DispatchMachine.TestCase.settings = settings(
    max_examples=80 * SCALE,  # about 4,000 steps; BATON_PROPERTY_SCALE multiplies
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    # `make test` explores the same schedules on every run (a red CI is reproducible); set
    # BATON_PROPERTY_RANDOM=1 to explore new ones (and BATON_PROPERTY_SCALE for more of them).
    derandomize=not RANDOM,
    # and nothing else: a failure saved by an earlier random run must not change the set
    database=None if not RANDOM else settings.default.database,
)
test_dispatch_machine = DispatchMachine.TestCase


def test_the_machine_is_exercised() -> None:
    """The machine really drives flows (a guard against a silently vacuous property test)."""
    m = DispatchMachine()
    m.start_call("u0", "u1", Priority.ROUTINE)
    m.time_passes(3.0)
    m.start_emergency("u0")
    m.time_passes(10.0)
    kinds = {e.kind for e in m.world.events}
    assert {"flow.started", "preemption.started", "preemption.completed"} <= kinds
    m.teardown()
