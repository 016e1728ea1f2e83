"""Group calls and conferences."""

from __future__ import annotations

import pytest

from baton.core import Priority, UnknownUser
from baton.flows import BusyPolicy, OnLeave, call, conference, group_call
from baton.switch.sim import answers, busy, never_answers
from baton.testing import World


async def test_group_call_parallel_ring_late_answer_joins() -> None:
    w = World("m1", "m2", "m3")
    d = w.add("d", keep=True)
    w.behave("m2", answers(8))
    w.behave("m3", never_answers())
    g = w.start(group_call, d, [w["m1"], w["m2"], w["m3"]], ring=20.0)
    await w.run(2)
    assert w.hears("m1") == {"d"}  # first answerer already in
    calls_at_2s = [w.sim.phones[m].calls for m in ("m1", "m2", "m3")]
    assert calls_at_2s == [1, 1, 1]  # all rung in parallel
    await w.run(8)
    assert w.hears("d") == {"m1", "m2"}  # the late answerer joined
    await w.run(15)
    assert await g.send("end") == "ended"
    fate = await g.result()
    assert fate == {"m1": "joined", "m2": "joined", "m3": "no_answer"}
    assert w.state("m1") == "idle"  # members hung up at the end
    w.assert_ok()


@pytest.mark.interaction("group_call", "call")
async def test_group_call_busy_policy() -> None:
    w = World("m1", "m2", "x", "y")
    d = w.add("d", keep=True)
    await w.start(call, w["m1"], w["x"]).result()  # m1 busy at ROUTINE
    hi = w.start(call, w["m2"], w["y"], priority=Priority.FLASH)  # m2 busy at FLASH
    await hi.result()
    g = w.start(group_call, d, [w["m1"], w["m2"]], BusyPolicy.PREEMPT)
    await w.run(3)
    assert w.hears("m1") == {"d"}  # taken from the routine call
    assert "tone:preemption" in w.heard("x")  # its partner was told
    assert w.hears("m2") == {"y"}  # left alone
    await g.send("end")
    assert (await g.result())["m2"] == "busy"

    w2 = World("m1", "x")
    d2 = w2.add("d", keep=True)
    await w2.start(call, w2["m1"], w2["x"]).result()
    g2 = w2.start(group_call, d2, [w2["m1"]], BusyPolicy.SKIP)
    await w2.run(3)
    await g2.send("end")
    assert await g2.result() == {"m1": "skipped"}
    assert w2.hears("m1") == {"x"}


async def test_member_hangs_up_and_dispatcher_leaves() -> None:
    w = World("m1", "m2", "d")
    w.behave("m2", busy())
    g = w.start(group_call, w["d"], [w["m1"], w["m2"]])
    await w.run(3)
    w.sim.hang_up("m1")
    await w.run(1)
    w.sim.hang_up("d")
    fate = await g.result()
    assert fate == {"m1": "left", "m2": "busy"}
    w.assert_ok(quiescent=True)


async def test_conference_controls() -> None:
    w = World("a", "b", "c", "late")
    chair = w.add("chair", keep=True)
    conf = w.start(conference, chair, [w["a"], w["b"], w["c"]])
    await w.run(3)
    assert w.hears("a") == {"b", "c", "chair"}
    assert await conf.send("mute", user="b") == "muted"
    assert "b" not in w.hears("a")
    assert await conf.send("unmute", user="b") == "speak"
    assert "b" in w.hears("a")
    assert await conf.send("listen", user="c") == "listen"
    assert "c" not in w.hears("a")
    assert "a" in w.hears("c")
    assert await conf.send("kick", user="b") == "kicked"
    assert w.state("b") == "idle"
    assert await conf.send("add", user="late") == "ringing"
    await w.run(2)
    assert "late" in w.hears("a")
    with pytest.raises(UnknownUser, match="no user with id 'nobody'"):
        await conf.send("mute", user="nobody")
    await conf.send("end")
    await conf.result()
    w.assert_ok()


async def test_conference_continues_when_the_dispatcher_leaves() -> None:
    w = World("a", "b", "chair")
    conf = w.start(conference, w["chair"], [w["a"], w["b"]], OnLeave.CONTINUE)
    await w.run(3)
    w.sim.hang_up("chair")
    await conf.result()
    assert w.hears("a") == {"b"}
    assert w.owner("a").startswith("meetingcall")
    w.assert_ok()


async def test_conference_ends_for_everyone_by_default() -> None:
    w = World("a", "b", "chair")
    conf = w.start(conference, w["chair"], [w["a"], w["b"]])
    await w.run(3)
    w.sim.hang_up("chair")
    await conf.result()
    assert w.state("a") == w.state("b") == "idle"
    w.assert_ok(quiescent=True)
