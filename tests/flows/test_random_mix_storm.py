"""The random mix, in a storm: what ``test_random_mix_wide`` does not perturb yet.

* a **heavy-tailed** switch (:meth:`Timing.heavy`): one command or event delivery in twenty
  takes ten times the others — up to 8 s, past the core's ``command_timeout`` — so a clear, a
  bridge or a hang-up lands long after the awaits that issued it gave up on it;
* **few users**, so that nearly every flow contends with another;
* **double takes**: two flows aimed at the same user in the same loop tick, at equal and at
  different priorities (two emergencies, an emergency and a force release, a barge-in and the
  console's Hang up);
* a flow **cancelled while a phone dies**: the cancellation lands and, in the same tick or a
  little later, one of its users hangs up or dies — inside its compensation;
* **floor requests during a preemption**: a PTT group's member is taken while the group is
  asked for the floor for that member;
* the service's **routing flows** (a dial-in room, a group's number, a PTT group's number, a
  feature code, an unroutable number) beside the library's and the console's.

Same rules as the other mixes: every invariant at every step (liveness and dead air
included), every flow ends within its bound, none crashes, and nothing leaks. A third as many
runs stop the service in the middle of the storm instead (``UserManager.close``: every flow
cancelled at once, mid-operation): the stop must return within ``end_timeout``.

``BATON_MIX_SEEDS=400`` runs 400 mixes instead of 12; ``BATON_MIX_FROM=N`` starts at seed N.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Callable

import pytest

from _rigs.mixes import console_hang_up, crashed, send
from baton.core import BatonError, Flow, User
from baton.flows import (
    DispatcherQueue,
    attended_transfer,
    barge_in,
    blind_transfer,
    call,
    conference,
    emergency_call,
    emergency_inbound,
    force_release,
    group_call,
    hold,
    inbound_call,
    monitor,
    pickup,
    queued_call,
    take_call,
    whisper,
)
from baton.flows.ptt import ptt_group
from baton.service.cluster.restore import keep_line
from baton.service.meetings.flows import meeting_release
from baton.service.routing.flows import (
    dial_in,
    feature_code,
    group_dial_in,
    ptt_dial_in,
    unroutable,
)
from baton.switch.sim import Timing, answers, busy, never_answers, rejects
from baton.testing import World

_FROM = int(os.environ.get("BATON_MIX_FROM", "0"))
SEEDS = range(_FROM, _FROM + int(os.environ.get("BATON_MIX_SEEDS", "12")))

FIELD = [f"f{i}" for i in range(4)]
DISPATCHERS = ["d0", "d1"]
PHONES = [
    answers(0.5),
    answers(1),
    answers(2),
    answers(1),
    never_answers(),
    busy(),
    rejects(1),
    answers(1).then_hangs_up(6),
    answers(0.5).presses("*", 0.5).presses("#", 3),
]

_WITH_USER = {"add", "kick", "mute", "unmute", "listen", "speak", "request", "release"}
_WITH_USER |= {"override", "remove", "emergency"}


class _Storm:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.w = World(*FIELD, grace=2.0, timing=Timing.heavy(seed))
        for name in DISPATCHERS:
            self.w.add(name, keep=True)
        for u in FIELD:
            self.w.behave(u, self.rng.choice(PHONES))
        self.q = DispatcherQueue(
            "q", self.w.manager, [self.w[x] for x in DISPATCHERS], timeout=15.0
        )
        self.flows: list[Flow] = []

    def f(self, n: int = 1) -> list[User]:
        return [self.w[u] for u in self.rng.sample(FIELD, n)]

    def d(self) -> User:
        return self.w[self.rng.choice(DISPATCHERS)]

    def dialling_in(self, number: str) -> User:
        free = [u for u in FIELD if self.w.sim.leg_of(u) is None]
        caller = self.w[self.rng.choice(free)] if free else self.f()[0]
        if self.w.sim.leg_of(caller.id) is None:
            self.w.sim.call_in(caller.id, number)
        return caller

    def at(self, target: User) -> list[Callable[[], Flow]]:
        """Flows that take ``target`` (a field user), at every level."""
        w, rng = self.w, self.rng
        others = [u for u in self.f(2) if u is not target][:1] or [self.w[FIELD[0]]]
        return [
            lambda: w.start(emergency_call, self.d(), target, ring=6.0),
            lambda: w.start(force_release, target),
            lambda: w.start(barge_in, self.d(), target),
            lambda: w.start(monitor, self.d(), target),
            lambda: w.start(call, self.d(), target),
            lambda: w.start(hold, target, *others),
            lambda: w.start(group_call, self.d(), [target, *others], ring=6.0),
            lambda: w.start(blind_transfer, target, *others, self.f()[0], ring=6.0),
            lambda: w.start(pickup, self.d(), target),
            lambda: console_hang_up(w, target),
            lambda: w.start(meeting_release, [target], "removed by the console"),
            lambda: w.start(
                ptt_group, [target, *others], [self.d()], initiator=None, hang_time=3.0
            ),
            lambda: w.start(conference, self.d(), [target, *others], ring=6.0),
            lambda: w.start(whisper, self.d(), target),
            lambda: (
                w.start(attended_transfer, target, *others, self.f()[0], ring=6.0)
                if rng.random() < 0.5
                else w.start(call, target, *others)
            ),
        ]

    def starters(self) -> list[Callable[[], Flow]]:
        w = self.w
        return [
            lambda: self.rng.choice(self.at(self.f()[0]))(),
            lambda: w.start(call, *self.f(2)),
            lambda: w.start(call, self.d(), *self.f()),
            lambda: w.start(inbound_call, self.dialling_in("200"), *self.f()),
            lambda: w.start(inbound_call, self.dialling_in("201"), self.d()),
            lambda: w.start(
                emergency_inbound, self.dialling_in("112"), [w[x] for x in DISPATCHERS], ring=5.0
            ),
            lambda: w.start(queued_call, self.dialling_in("110"), self.q),
            lambda: w.start(take_call, self.d(), self.q),
            lambda: w.start(keep_line, self.d()),
            # the router's flows: a caller answered first, then the room, the group, the code
            lambda: w.start(dial_in, self.dialling_in("300"), "room1"),
            lambda: w.start(group_dial_in, self.dialling_in("400"), "g", self.f(2)),
            lambda: w.start(ptt_dial_in, self.dialling_in("500"), "p", self.f(2)),
            lambda: w.start(feature_code, self.dialling_in("*71"), "*71", self.rng.random() < 0.5),
            lambda: w.start(unroutable, self.dialling_in("999"), "999"),
        ]

    def add(self, start: Callable[[], Flow]) -> Flow | None:
        try:
            flow = start()
        except BatonError:
            return None  # a queue call for a user already on a call, nothing queued to take
        self.flows.append(flow)
        return flow

    def live(self) -> list[Flow]:
        return [fl for fl in self.flows if not fl.ended]

    def storm_step(self) -> None:
        w, rng = self.w, self.rng
        roll = rng.random()
        user = rng.choice(FIELD)
        if roll < 0.25:
            self.add(rng.choice(self.starters()))
        elif roll < 0.40:
            # two takes of one user in the same tick, at whatever levels they draw
            target = w[user]
            first, second = rng.sample(self.at(target), 2)
            self.add(first)
            self.add(second)
        elif roll < 0.52:
            # a flow cancelled while one of its users hangs up or dies: now, or inside its
            # compensation (a little later)
            live = self.live()
            if live:
                flow = rng.choice(live)
                flow.cancel("storm")
                delay = rng.choice([0.0, 0.0, 0.05, 0.3, 1.0])
                kill = w.sim.kill if rng.random() < 0.5 else w.sim.hang_up
                w.manager.loop.call_later(delay, kill, user)
        elif roll < 0.60:
            # a PTT member taken while the floor is asked for it
            groups = [fl for fl in self.live() if "request" in fl.spec.commands]
            if groups:
                group = rng.choice(groups)
                self.add(rng.choice(self.at(w[user])))
                for cmd in rng.sample(["request", "override", "release"], 2):
                    send(group, cmd, {"user": user})
        elif roll < 0.68:
            w.sim.hang_up(user)
        elif roll < 0.72:
            w.sim.kill(user)
        elif roll < 0.76:
            w.behave(user, rng.choice(PHONES))
        elif roll < 0.82:
            live = self.live()
            if live:
                rng.choice(live).cancel("random")
        elif roll < 0.94:
            live = [fl for fl in self.live() if fl.spec.commands]
            if live:
                target = rng.choice(live)
                cmd = rng.choice(sorted(target.spec.commands))
                args = {"user": rng.choice([*FIELD, *DISPATCHERS])} if cmd in _WITH_USER else {}
                send(target, cmd, args)
        else:
            w.sim.fail_next(rng.choice(["originate", "bridge", "join", "play", "answer", "clear"]))

    async def calm_pair(self) -> None:
        """Two free users put in a call, and a few quiet seconds for it to settle: the storm's
        takes then land on settled calls too (a barge-in, a monitor, a take from a P2P)."""
        w = self.w
        free = [u for u in FIELD if w.manager.owner_of(w[u]) is None]
        if len(free) >= 2:
            a, b = self.rng.sample(free, 2)
            w.behave(a, answers(0.5))
            w.behave(b, answers(1))
            self.add(lambda: w.start(call, w[a], w[b]))
            await w.run(5)

    async def storm(self) -> None:
        for i in range(70):
            if i % 10 == 0:
                await self.calm_pair()
            self.storm_step()
            await self.w.run(self.rng.choice([0.0, 0.0, 0.1, 0.3, 0.7, 2.0, 4.0]))

    async def stop_the_service(self) -> float:
        """The service stops in the middle of the storm (``UserManager.close``): every flow is
        cancelled at once, mid-operation, its compensations on their way to a slow switch.
        Returns how long the stop took (virtual seconds); it must be bounded."""
        m = self.w.manager
        start = m.now()
        await asyncio.wait_for(m.close(), timeout=m.end_timeout + 2 * m.command_timeout)
        return m.now() - start

    async def run(self) -> World:
        w = self.w
        await self.storm()
        await w.run(25)
        for flow in self.flows:  # wind down whatever holds on: end commands, then cancel
            for cmd in ("end", "leave", "clear_emergency"):
                if cmd in flow.spec.commands:
                    send(flow, cmd, {})
        await w.run(10)
        for flow in self.flows:
            flow.cancel("mix over")
        for name in (*FIELD, *DISPATCHERS):
            w.sim.hang_up(name)
        await w.run(40)
        assert all(flow.ended for flow in self.flows), [f.name for f in self.flows if not f.ended]
        return w


@pytest.mark.parametrize("seed", SEEDS)
async def test_contention_storm_on_a_heavy_tailed_switch(seed: int) -> None:
    storm = _Storm(seed)
    w = await storm.run()
    w.assert_ok(quiescent=True)
    assert not crashed(storm.flows)
    await w.close()


@pytest.mark.parametrize("seed", SEEDS[: max(1, len(SEEDS) // 3)])
async def test_the_service_stopping_mid_storm_ends_every_flow_in_bound(seed: int) -> None:
    """A third as many: the storm, then the service stops at once (no wind-down) — every flow
    ends within ``end_timeout`` of being cancelled, every invariant held meanwhile."""
    storm = _Storm(seed + 7_000_000)
    await storm.storm()
    took = await storm.stop_the_service()
    assert all(f.ended for f in storm.flows), [f.name for f in storm.flows if not f.ended]
    assert took <= storm.w.manager.end_timeout + 1.0
    storm.w.assert_ok()
    assert not crashed(storm.flows)
    await storm.w.close()
