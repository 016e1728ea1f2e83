"""The same random interleavings, drawn from the flow library: every library flow started
against every other on shared users, commands sent at random moments, phones hanging up and
dying, switch commands failing — every invariant checked after every step.

``BATON_PROPERTY_SCALE=10 make test`` runs ten times as many steps.
"""

from __future__ import annotations

import os
from typing import Any

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
from baton.flows import (
    DispatcherQueue,
    OtherParty,
    attended_transfer,
    barge_in,
    blind_transfer,
    broadcast,
    call,
    conference,
    emergency_call,
    emergency_inbound,
    force_release,
    group_call,
    hold,
    monitor,
    pickup,
    polling,
    queued_call,
    roll_call,
    take_call,
    whisper,
)
from baton.flows.ptt import ptt_group
from baton.switch.sim import Timing, answers, busy, never_answers, rejects
from baton.testing import VirtualTimeLoop, World

SCALE = int(os.environ.get("BATON_PROPERTY_SCALE", "1"))
RANDOM = os.environ.get("BATON_PROPERTY_RANDOM", "") not in ("", "0")
FIELD = ["f0", "f1", "f2", "f3", "f4"]
DISPATCHERS = ["d0", "d1"]
BEHAVIOURS = [
    answers(0.5),
    answers(4),
    never_answers(),
    busy(),
    rejects(1),
    answers(1).then_hangs_up(6),
    answers(1).presses("1", 1),
]
COMMANDS = [
    "end", "leave", "resume", "complete", "cancel", "redial", "mute", "unmute", "listen",
    "kick", "add", "request", "release", "override", "emergency", "clear_emergency", "remove",
]  # fmt: skip

field = st.sampled_from(FIELD)
disp = st.sampled_from(DISPATCHERS)
any_user = st.sampled_from(FIELD + DISPATCHERS)
#: How the switch takes time in a run: at once; like a slow real switch (every command and
#: event 0.05–0.8 s; for a third of those, with a heavy tail: one in twenty takes ten times
#: longer); or slow media clears and originates with late events — so that hang-ups,
#: claims and cancellations land inside the core's own awaits as well as the flows'.
timings = st.builds(
    lambda kind, seed: (
        Timing()
        if kind == 0
        else (Timing.heavy(seed) if seed % 3 == 0 else Timing.real(seed))
        if kind == 1
        else Timing(
            commands={"clear": (0.2, 0.8), "originate": (0.2, 0.8), "bridge": (0.0, 0.5)},
            events=(0.0, 0.3),
            seed=seed,
        )
    ),
    st.integers(0, 2),
    st.integers(0, 2**16),
)


class LibraryMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = VirtualTimeLoop()
        self._world(Timing())

    def _world(self, timing: Timing) -> None:
        self.w = World(*FIELD, grace=2.0, timing=timing)
        for d in DISPATCHERS:
            self.w.add(d, keep=True)
        self.queue = DispatcherQueue(
            "q", self.w.manager, [self.w[d] for d in DISPATCHERS], timeout=20.0
        )

    @initialize(timing=timings)
    def switch_timing(self, timing: Timing) -> None:
        self._world(timing)

    def _run(self, fn: Any = None, dt: float = 0.0) -> None:
        async def go() -> None:
            if fn is not None:
                fn()
            await self.w.run(dt)

        self.loop.run_until_complete(go())

    def _start(self, spec: Any, *args: Any, **kw: Any) -> None:
        self._run(lambda: self.w.start(spec, *args, **kw), 0.5)

    def u(self, *ids: str) -> list[Any]:
        return [self.w[i] for i in ids]

    @rule(d=disp, f=field)
    def a_call(self, d: str, f: str) -> None:
        self._start(call, *self.u(d, f))

    @rule(a=field, b=field)
    def field_call(self, a: str, b: str) -> None:
        if a != b:
            self._start(call, *self.u(a, b))

    @rule(f=field)
    def queued(self, f: str) -> None:
        def go() -> None:
            self.w.sim.call_in(f, "110")
            self.w.start(queued_call, self.w[f], self.queue)

        self._run(go, 0.5)

    @rule(d=disp)
    def take(self, d: str) -> None:
        self._start(take_call, self.w[d], self.queue)

    @rule(d=disp, fs=st.lists(field, min_size=1, max_size=3, unique=True))
    def group(self, d: str, fs: list[str]) -> None:
        self._start(group_call, self.w[d], self.u(*fs), ring=10.0)

    @rule(d=disp, fs=st.lists(field, min_size=2, max_size=3, unique=True))
    def conf(self, d: str, fs: list[str]) -> None:
        self._start(conference, self.w[d], self.u(*fs), ring=10.0)

    @rule(d=disp, fs=st.lists(field, min_size=1, max_size=3, unique=True))
    def bcast(self, d: str, fs: list[str]) -> None:
        self._start(broadcast, self.u(*fs), self.w[d])

    @rule(d=disp, f=any_user)
    def barge(self, d: str, f: str) -> None:
        if d != f:
            self._start(barge_in, self.w[d], self.w[f])

    @rule(d=disp, f=any_user)
    def listen(self, d: str, f: str) -> None:
        if d != f:
            self._start(monitor, self.w[d], self.w[f])

    @rule(d=disp, f=any_user)
    def coach(self, d: str, f: str) -> None:
        if d != f:
            self._start(whisper, self.w[d], self.w[f])

    @rule(f=any_user, queue_it=st.booleans())
    def cut(self, f: str, queue_it: bool) -> None:
        other = OtherParty.QUEUE if queue_it else OtherParty.RELEASE
        self._start(force_release, self.w[f], other, self.queue)

    @rule(a=any_user, b=any_user, c=any_user, attended=st.booleans())
    def transfer(self, a: str, b: str, c: str, attended: bool) -> None:
        if len({a, b, c}) == 3:
            self._start(attended_transfer if attended else blind_transfer, *self.u(a, b, c))

    @rule(a=any_user, b=any_user)
    def put_on_hold(self, a: str, b: str) -> None:
        if a != b:
            self._start(hold, *self.u(a, b))

    @rule(a=any_user, b=any_user)
    def pick(self, a: str, b: str) -> None:
        if a != b:
            self._start(pickup, *self.u(a, b))

    @rule(fs=st.lists(field, min_size=1, max_size=3, unique=True))
    def roll(self, fs: list[str]) -> None:
        self._start(roll_call, self.u(*fs), "1", 5.0, 3.0)

    @rule(d=disp, fs=st.lists(field, min_size=1, max_size=3, unique=True))
    def poll(self, d: str, fs: list[str]) -> None:
        self._start(polling, self.w[d], self.u(*fs), 5.0)

    @rule(d=disp, fs=st.lists(field, min_size=2, max_size=4, unique=True), hang=st.booleans())
    def ptt(self, d: str, fs: list[str], hang: bool) -> None:
        self._start(
            ptt_group,
            self.u(*fs),
            [self.w[d]],
            hang_time=5.0,
            max_burst=8.0,
            persistent=not hang,
        )

    @rule(a=field, digit=st.sampled_from(["*", "#", "9"]))
    def press(self, a: str, digit: str) -> None:
        leg = self.w.sim.leg_of(a)
        if leg is not None and leg.state == "connected":
            self._run(lambda: self.w.sim.press(a, digit), 0.3)

    @rule(d=disp, f=field)
    def emergency(self, d: str, f: str) -> None:
        self._start(emergency_call, *self.u(d, f))

    @rule(f=field)
    def emergency_in(self, f: str) -> None:
        def go() -> None:
            self.w.sim.call_in(f, "112")
            self.w.start(emergency_inbound, self.w[f], self.u(*DISPATCHERS))

        self._run(go, 0.5)

    @precondition(lambda self: bool(self.w.manager.flows))
    @rule(i=st.integers(0, 30), cmd=st.sampled_from(COMMANDS), who=field)
    def command(self, i: int, cmd: str, who: str) -> None:
        flows = sorted(self.w.manager.flows.values(), key=lambda f: f.name)
        f = flows[i % len(flows)]
        if cmd in f.spec.commands and f.state.value == "running":

            def send() -> None:  # the reply (often a refusal) does not matter here
                f.send(cmd, user=who).add_done_callback(
                    lambda fut: fut.cancelled() or fut.exception()
                )

            self._run(send, 0.2)

    @precondition(lambda self: bool(self.w.manager.flows))
    @rule(i=st.integers(0, 30))
    def cancel(self, i: int) -> None:
        flows = sorted(self.w.manager.flows.values(), key=lambda f: f.name)
        self._run(lambda: flows[i % len(flows)].cancel("random"))

    @rule(a=any_user)
    def hang_up(self, a: str) -> None:
        self._run(lambda: self.w.sim.hang_up(a))

    @rule(a=field)
    def dies(self, a: str) -> None:
        self._run(lambda: self.w.sim.kill(a))

    @rule(a=field, b=st.sampled_from(BEHAVIOURS))
    def behave(self, a: str, b: Any) -> None:
        self.w.behave(a, b)

    @rule(cmd=st.sampled_from(["bridge", "join", "play", "clear", "originate", "hangup"]))
    def switch_fails(self, cmd: str) -> None:
        self.w.sim.fail_next(cmd)

    @rule(dt=st.sampled_from([0.0, 0.1, 0.3, 1.0, 3.0, 10.0]))
    def time_passes(self, dt: float) -> None:
        self._run(dt=dt)

    @invariant()
    def invariants_hold(self) -> None:
        problems = self.w.check()  # 1–12, the clock-based ones (10–12) included
        assert not problems, problems

    def teardown(self) -> None:
        async def finish() -> list[str]:
            for f in list(self.w.manager.flows.values()):
                f.cancel("teardown")
            for d in DISPATCHERS:
                self.w.sim.hang_up(d)
            await self.w.run(30)
            problems = self.w.problems(quiescent=True)
            await self.w.close()
            return problems

        try:
            problems = self.loop.run_until_complete(finish())
            assert not problems, problems
        finally:
            self.loop.close()


LibraryMachine.TestCase.settings = settings(
    max_examples=60 * SCALE,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    # `make test` explores the same schedules on every run (a red CI is reproducible); set
    # BATON_PROPERTY_RANDOM=1 to explore new ones (and BATON_PROPERTY_SCALE for more of them).
    derandomize=not RANDOM,
    # and nothing else: a failure saved by an earlier random run must not change the set
    database=None if not RANDOM else settings.default.database,
)
test_library_machine = LibraryMachine.TestCase


def test_the_library_machine_is_exercised() -> None:
    m = LibraryMachine()
    m.conf("d0", ["f0", "f1"])
    m.time_passes(3.0)
    m.emergency("d1", "f0")
    m.time_passes(3.0)
    kinds = {e.kind for e in m.w.events}
    assert {"flow.started", "preemption.started", "callinfo.started"} <= kinds or {
        "flow.started",
        "preemption.started",
    } <= kinds
    assert Priority.EMERGENCY in {e.priority for e in m.w.events if e.kind == "flow.started"}
    m.teardown()
