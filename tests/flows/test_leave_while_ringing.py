"""``leave`` sent while the dispatcher's line still rings (barge-in, monitor, whisper) takes
effect then: the ringing stops at once and the parties' call is theirs again — not once the
dispatcher answered or its phone gave up (30 s)."""

from __future__ import annotations

import asyncio

import pytest

from baton.flows import barge_in, call, conference, monitor, whisper
from baton.switch.sim import Timing, never_answers
from baton.testing import World

FLOWS = {"barge_in": barge_in, "monitor": monitor, "whisper": whisper}


async def _ringing(w: World, user: str) -> None:
    for _ in range(500):
        if w.state(user) == "ringing":
            return
        await w.run(0.01)
    raise AssertionError(f"{user} never rang")


@pytest.mark.parametrize("name", sorted(FLOWS))
@pytest.mark.parametrize("seed", [None, 1, 2])
async def test_leave_while_the_dispatcher_rings_stops_it_and_restores_the_call(
    name: str, seed: int | None
) -> None:
    w = World("a", "b", "sup", timing=None if seed is None else Timing.real(seed=seed))
    await w.start(call, w["a"], w["b"]).result()
    w.behave("sup", never_answers())
    f = w.start(FLOWS[name], w["sup"], w["a"])
    await _ringing(w, "sup")
    sent = asyncio.get_running_loop().time()
    assert await f.send("leave") == "left"
    await f.result()
    assert asyncio.get_running_loop().time() - sent < 5.0  # not the 30 s ring
    assert w.state("sup") == "idle"
    await w.run(3)
    assert w.hears("a") == {"b"} and w.hears("b") == {"a"}
    assert w.owner("a").startswith("p2p")
    w.assert_ok(quiescent=True)


@pytest.mark.parametrize("name", sorted(FLOWS))
async def test_leave_while_the_dispatcher_rings_for_a_conference(name: str) -> None:
    w = World("d", "m1", "m2", "sup")
    g = w.start(conference, w["d"], [w["m1"], w["m2"]])
    await w.run(5)
    w.behave("sup", never_answers())
    f = w.start(FLOWS[name], w["sup"], w["m1"])
    await _ringing(w, "sup")
    assert await f.send("leave") == "left"
    await f.result()
    assert w.state("sup") == "idle"
    assert w.hears("m1") == {"d", "m2"}
    assert await g.send("end") == "ended"
    await g.result()
    await w.run(10)
    w.assert_ok(quiescent=True)
