"""Barge-in: three-way, then back to two-way; parties taken or gone meanwhile."""

from __future__ import annotations

import pytest

from baton.core import FlowUsageError
from baton.flows import barge_in, call, conference, emergency_call
from baton.testing import World


async def _talking(w: World) -> None:
    await w.start(call, w["a"], w["b"]).result()


@pytest.mark.interaction("barge_in", "call")
async def test_barge_in_three_way_then_restored() -> None:
    w = World("a", "b")
    d = w.add("d", keep=True)
    await _talking(w)
    bi = w.start(barge_in, d, w["a"])
    await w.run(2)
    assert w.hears("a") == {"b", "d"}
    assert w.hears("d") == {"a", "b"}
    await bi.send("leave")
    await bi.result()
    assert w.hears("a") == {"b"}
    assert w.owner("a").startswith("p2p")
    w.assert_ok()


async def test_dispatcher_hangup_ends_the_barge_in() -> None:
    w = World("a", "b", "d")
    await _talking(w)
    bi = w.start(barge_in, w["d"], w["a"])
    await w.run(3)
    w.sim.hang_up("d")
    await bi.result()
    assert w.hears("b") == {"a"}
    w.assert_ok()


@pytest.mark.interaction("barge_in", "emergency_call")
async def test_party_taken_meanwhile_the_other_is_told_and_released() -> None:
    w = World("a", "b", "boss")
    d = w.add("d", keep=True)
    await _talking(w)
    bi = w.start(barge_in, d, w["a"])
    await w.run(2)
    e = w.start(emergency_call, w["boss"], w["a"])
    await w.run(2)
    assert w.hears("a") == {"boss"}
    assert w.hears("d") == {"b"}  # the barge-in goes on with b
    await bi.send("leave")
    await bi.wait()
    await w.run(4)
    assert "tone:preemption" in w.heard("b")
    assert w.state("b") == "idle"
    await e.send("end")
    w.assert_ok()


@pytest.mark.interaction("barge_in", "conference")
async def test_barge_into_a_conference_joins_it() -> None:
    w = World("a", "b", "c")
    d = w.add("d", keep=True)
    chair = w.add("chair", keep=True)
    conf = w.start(conference, chair, [w["a"], w["b"], w["c"]])
    await w.run(3)
    bi = w.start(barge_in, d, w["a"])
    await w.run(1)
    assert "d" in w.hears("a")
    await bi.send("leave")
    await bi.result()
    assert "d" not in w.hears("a")
    await conf.send("end")


async def test_barge_in_needs_a_call() -> None:
    w = World("a")
    d = w.add("d", keep=True)
    with pytest.raises(FlowUsageError, match="not in a two-party call"):
        await w.start(barge_in, d, w["a"]).result()
