"""The random mix, wider: every library flow (inbound calls, inbound emergencies, broadcasts,
a dispatcher taking a queued call from the console) and the service's own (the console's Hang
up, a meeting member removed, a position's line dialled again after a fail-over) and every command a running flow takes,
with its arguments (a PTT floor request or override for a member, a conference kick or mute, an
emergency redial, an attended transfer cancelled) — not only the commands that end a flow;
and now and then the switch refuses a command (a bridge, a join, a play, an answer, an
originate). Same rules as ``test_random_mix``: every invariant at every step, every flow ends (none
crashing, none acting on a user it lost without being told), no leak.

``BATON_MIX_SEEDS=400`` runs 400 mixes instead of 20; ``BATON_MIX_FROM=N`` starts at seed N.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable

import pytest

from _rigs.mixes import console_hang_up, crashed, send, timing
from baton.core import BatonError, Flow, Tone, User
from baton.flows import (
    DispatcherQueue,
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
    inbound_call,
    monitor,
    pickup,
    polling,
    queued_call,
    take_call,
    whisper,
)
from baton.flows.ptt import ptt_group
from baton.service.cluster.restore import keep_line
from baton.service.meetings.flows import meeting_release
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
    answers(1).presses("*", 1).presses("#", 4),
]

#: switch commands the mix makes fail now and then (a refused bridge, a ringback that cannot
#: be played, a call that cannot be placed)
_FAILING = ["originate", "bridge", "join", "play", "answer"]

#: commands that name a user (the member a floor request, a kick or a mute is for)
_WITH_USER = {
    "add",
    "kick",
    "mute",
    "unmute",
    "listen",
    "speak",
    "request",
    "release",
    "override",
    "remove",
    "emergency",
}


def _starters(w: World, q: DispatcherQueue, rng: random.Random) -> list[Callable[[], Flow]]:
    def f(n: int = 1) -> list[User]:
        return [w[u] for u in rng.sample(FIELD, n)]

    def d() -> User:
        return w[rng.choice(DISPATCHERS)]

    def dialling_in(number: str) -> User:
        caller = f()[0]
        if w.sim.leg_of(caller.id) is None:
            w.sim.call_in(caller.id, number)
        return caller

    return [
        lambda: w.start(call, d(), *f()),
        lambda: w.start(inbound_call, dialling_in("200"), *f()),
        lambda: w.start(inbound_call, dialling_in("201"), d()),
        lambda: w.start(group_call, d(), f(rng.randint(1, 3)), ring=8.0),
        lambda: w.start(conference, d(), f(2), ring=8.0),
        lambda: w.start(broadcast, f(rng.randint(1, 3)), d(), ring=8.0),
        lambda: w.start(broadcast, f(2), None, Tone("confirm", 2.0), 2, 4.0, ring=8.0),
        lambda: w.start(barge_in, d(), *f()),
        lambda: w.start(monitor, d(), *f()),
        lambda: w.start(whisper, d(), *f()),
        lambda: w.start(force_release, *f()),
        lambda: w.start(blind_transfer, *f(3), ring=8.0),
        lambda: w.start(attended_transfer, *f(3), ring=8.0),
        lambda: w.start(hold, *f(2)),
        lambda: w.start(pickup, d(), *f()),
        lambda: w.start(polling, d(), f(2), 5.0),
        lambda: w.start(emergency_call, d(), *f(), ring=8.0),
        lambda: w.start(
            emergency_inbound, dialling_in("112"), list(map(w.__getitem__, DISPATCHERS)), ring=6.0
        ),
        lambda: w.start(ptt_group, f(3), [d()], initiator=None, hang_time=4.0, max_burst=6.0),
        lambda: w.start(queued_call, dialling_in("110"), q),
        lambda: w.start(take_call, d(), q),
        # the console's Hang up, started one level above whatever holds the user (as the
        # service does), and its removal of meeting members
        lambda: console_hang_up(w, rng.choice([*f(), d()])),
        lambda: w.start(meeting_release, f(2), "removed by the console"),
        # what a standby starts after a fail-over: a position's always-on line dialled again
        lambda: w.start(keep_line, d()),
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
        except BatonError:
            pass  # a queue call for a user already on a call, nothing queued to take
        roll = rng.random()
        user = rng.choice(FIELD)
        if roll < 0.08:
            w.sim.hang_up(user)
        elif roll < 0.12:
            w.sim.kill(user)
        elif roll < 0.16:
            w.behave(user, rng.choice(PHONES))
        elif roll < 0.20 and flows:
            flows[rng.randrange(len(flows))].cancel("random")
        elif roll < 0.45 and flows:
            live = [fl for fl in flows if fl.spec.commands and not fl.ended]
            if live:
                target = rng.choice(live)
                cmd = rng.choice(sorted(target.spec.commands))
                args = {"user": rng.choice([*FIELD, *DISPATCHERS])} if cmd in _WITH_USER else {}
                send(target, cmd, args)
        elif roll < 0.52:
            w.sim.fail_next(rng.choice(_FAILING))
        await w.run(rng.choice([0.0, 0.1, 0.3, 0.7, 2.0]))
    await w.run(20)
    for flow in flows:  # wind down whatever holds on: end commands, then cancel
        for cmd in ("end", "leave", "clear_emergency"):
            if cmd in flow.spec.commands:
                send(flow, cmd, {})
    await w.run(5)
    for flow in flows:
        flow.cancel("mix over")
    for name in (*FIELD, *DISPATCHERS):
        w.sim.hang_up(name)
    await w.run(30)
    assert all(flow.ended for flow in flows), [f.name for f in flows if not f.ended]
    return w, flows


@pytest.mark.parametrize("seed", SEEDS)
async def test_sixty_flows_every_command_under_a_slow_switch(seed: int) -> None:
    w, flows = await _mix(seed)
    w.assert_ok(quiescent=True)
    assert not crashed(flows)
    await w.close()
