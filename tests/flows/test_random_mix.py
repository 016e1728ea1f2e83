"""A seeded random mix of library flows on random phones, on a switch that takes time — the way
an independent tester found the stuck claims: 60 flows started at random moments on shared
users, phones that answer late, hang up, die, or press keys, commands and cancellations landing
anywhere. Every run must keep every invariant at every step (liveness and dead air included),
every flow must end — none crashing, none acting on a user it lost without being told — and
nothing may leak.

``BATON_MIX_SEEDS=400`` runs 400 mixes instead of 20; ``BATON_MIX_FROM=N`` starts at seed N.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable

import pytest

from _rigs.mixes import crashed, send, timing
from baton.core import Flow, FlowUsageError, User
from baton.flows import (
    DispatcherQueue,
    attended_transfer,
    barge_in,
    blind_transfer,
    call,
    conference,
    emergency_call,
    force_release,
    group_call,
    hold,
    monitor,
    pickup,
    polling,
    queued_call,
    roll_call,
    whisper,
)
from baton.flows.ptt import ptt_group
from baton.switch.sim import answers, busy, never_answers, rejects
from baton.testing import World

_FROM = int(os.environ.get("BATON_MIX_FROM", "0"))
SEEDS = range(_FROM, _FROM + int(os.environ.get("BATON_MIX_SEEDS", "20")))
FIELD = [f"f{i}" for i in range(6)]
DISPATCHERS = ["d0", "d1"]
PHONES = [
    answers(0.5),
    answers(2),
    answers(6),
    never_answers(),
    busy(),
    rejects(1),
    answers(1).then_hangs_up(5),
    answers(1).presses("1*#", 1),
]


def _starters(w: World, q: DispatcherQueue, rng: random.Random) -> list[Callable[[], Flow]]:
    def f(n: int = 1) -> list[User]:
        return [w[u] for u in rng.sample(FIELD, n)]

    def d() -> User:
        return w[rng.choice(DISPATCHERS)]

    def queued() -> Flow:
        caller = f()[0]
        if w.sim.leg_of(caller.id) is None:
            w.sim.call_in(caller.id, "110")
        return w.start(queued_call, caller, q)

    return [
        lambda: w.start(call, d(), *f()),
        lambda: w.start(call, *f(2)),
        lambda: w.start(group_call, d(), f(rng.randint(1, 3)), ring=8.0),
        lambda: w.start(conference, d(), f(2), ring=8.0),
        lambda: w.start(barge_in, d(), *f()),
        lambda: w.start(monitor, d(), *f()),
        lambda: w.start(whisper, d(), *f()),
        lambda: w.start(force_release, *f()),
        lambda: w.start(blind_transfer, *f(3), ring=8.0),
        lambda: w.start(attended_transfer, *f(3), ring=8.0),
        lambda: w.start(hold, *f(2)),
        lambda: w.start(pickup, d(), *f()),
        lambda: w.start(roll_call, f(2), "1", 5.0, 3.0),
        lambda: w.start(polling, d(), f(2), 5.0),
        lambda: w.start(emergency_call, d(), *f(), ring=8.0),
        lambda: w.start(ptt_group, f(3), [d()], hang_time=4.0, max_burst=6.0),
        queued,
    ]


async def _mix(seed: int) -> tuple[World, list[Flow]]:
    rng = random.Random(seed)
    w = World(*FIELD, grace=2.0, timing=timing(seed))
    for name in DISPATCHERS:
        w.add(name, keep=True)
    for u in FIELD:
        w.behave(u, rng.choice(PHONES))
    q = DispatcherQueue("q", w.manager, [w[x] for x in DISPATCHERS], timeout=15.0)
    starters = _starters(w, q, rng)
    flows: list[Flow] = []
    for _ in range(60):
        try:
            flows.append(rng.choice(starters)())
        except FlowUsageError:
            pass  # e.g. a queue call for a user already on a call
        roll = rng.random()
        user = rng.choice(FIELD)
        if roll < 0.10:
            w.sim.hang_up(user)
        elif roll < 0.14:
            w.sim.kill(user)
        elif roll < 0.18:
            w.behave(user, rng.choice(PHONES))
        elif roll < 0.24 and flows:
            flows[rng.randrange(len(flows))].cancel("random")
        elif roll < 0.34 and flows:
            target = flows[rng.randrange(len(flows))]
            for cmd in ("end", "leave", "resume", "complete", "redial", "cancel"):
                if cmd in target.spec.commands:
                    send(target, cmd)
                    break
        await w.run(rng.choice([0.0, 0.1, 0.3, 0.7, 2.0]))
    await w.run(20)
    for flow in flows:  # wind down whatever holds on: end commands, then cancel
        for cmd in ("end", "leave", "clear_emergency"):
            if cmd in flow.spec.commands:
                send(flow, cmd)
    await w.run(5)
    for flow in flows:
        flow.cancel("mix over")
    for name in (*FIELD, *DISPATCHERS):
        w.sim.hang_up(name)
    await w.run(30)
    assert all(flow.ended for flow in flows), [f.name for f in flows if not f.ended]
    return w, flows


@pytest.mark.parametrize("seed", SEEDS)
async def test_sixty_flows_on_random_phones_under_a_slow_switch(seed: int) -> None:
    w, flows = await _mix(seed)
    w.assert_ok(quiescent=True)
    assert not crashed(flows)
    await w.close()
