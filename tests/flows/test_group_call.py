"""Group calls and conferences."""

from __future__ import annotations

import asyncio

import pytest

from baton.core import Priority, UnknownUser
from baton.core.events import LegStateChanged, MediaChanged
from baton.flows import BusyPolicy, OnLeave, broadcast, call, conference, group_call
from baton.switch.sim import Timing, answers, busy, never_answers
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


# ---- nothing rings once the call is over: member tasks stop before the clean-up


def _member_dials(w: World, members: tuple[str, ...]) -> list[str]:
    return [
        f"{e.user} {e.leg}"
        for e in w.kinds("leg.state")
        if isinstance(e, LegStateChanged) and e.state == "dialling" and e.user in members
    ]


@pytest.mark.parametrize("latency", [None, {"originate": 0.5}])
async def test_conference_ended_right_after_an_add_rings_nobody_after(
    latency: dict[str, float] | None,
) -> None:
    """``add`` then ``end`` in one instant: the new member's ringing task had not dialled yet
    when the conference hung its members up, and it used to dial right after those hang-ups
    — a phone ringing for a conference that was over. Now the ``add`` sees the ``end``
    queued behind it and rings nobody (and a ringing task is stopped before the hang-ups)."""
    w = World("a", "late", latency=latency)
    chair = w.add("chair", keep=True)
    w.behave("late", never_answers())
    conf = w.start(conference, chair, [w["a"]])
    await w.run(4)
    assert "a" in w.hears("chair")
    added, ended = conf.send("add", user="late"), conf.send("end")
    assert await added == "cancelled"
    assert await ended == "ended"
    assert await conf.result() == {"a": "joined", "late": "cancelled"}
    await w.run(5)
    assert w.sim.phones["late"].calls == 0
    assert w.state("a") == w.state("late") == "idle"
    w.assert_ok()


async def test_conference_ending_while_members_ring_plays_nothing_more() -> None:
    """A member still ringing is hung up by the end; its ringing task used to take that as a
    failed call and start the dispatcher's ringback again after the conference ended."""
    w = World("a", "b", "c")
    chair = w.add("chair", keep=True)
    w.behave("b", never_answers())
    w.behave("c", never_answers())
    conf = w.start(conference, chair, [w["a"], w["b"], w["c"]])
    await w.run(3)
    mark = w.events[-1].seq
    assert await conf.send("end") == "ended"
    fate = await conf.result()
    assert fate == {"a": "joined", "b": "cancelled", "c": "cancelled"}
    plays = [e for e in w.kinds("media") if e.seq > mark and isinstance(e, MediaChanged)]
    assert [e.command for e in plays if e.command.startswith("play")] == []
    assert w.state("b") == w.state("c") == "idle"
    w.assert_ok()


@pytest.mark.parametrize("spec", ["group_call", "conference", "broadcast"])
async def test_end_sent_before_the_members_are_rung_rings_none_of_them(spec: str) -> None:
    """``end`` arrives while the dispatcher's own phone rings: the flow invites the members
    and reads the ``end`` in one step. Their ringing tasks used to run after the flow's body
    had returned, so every member's phone rang for a call already over."""
    w = World("m1", "m2", "d")
    w.behave("d", answers(2))
    members = [w["m1"], w["m2"]]
    if spec == "group_call":
        g = w.start(group_call, w["d"], members)
    elif spec == "conference":
        g = w.start(conference, w["d"], members)
    else:
        g = w.start(broadcast, members, dispatcher=w["d"])
    await w.run(1)
    ended = g.send("end")
    await g.result()
    assert await ended == "ended"
    await w.run(10)  # (the dispatcher, let go on its line, is collected after the grace)
    assert _member_dials(w, ("m1", "m2")) == []
    assert [w.sim.phones[m].calls for m in ("m1", "m2")] == [0, 0]
    w.assert_ok(quiescent=True)


@pytest.mark.parametrize("spec", ["group_call", "conference"])
@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_end_sent_while_the_dispatcher_rings_on_a_slow_switch_rings_nobody(
    spec: str, seed: int
) -> None:
    """On a slow switch the flow awaits the switch between the dispatcher's answer and its
    members' dials (the meeting, the claims, the ringback): an ``end`` sent while the
    dispatcher's phone still rang used to be read only after every member had been dialled —
    their phones rang for a moment, then were hung up. The flow now sees the queued ``end``
    before it rings anyone."""
    w = World("m1", "m2", "d", timing=Timing.real(seed=seed))
    w.behave("d", answers(2))
    members = [w["m1"], w["m2"]]
    g = w.start(group_call if spec == "group_call" else conference, w["d"], members)
    await w.run(1)
    assert w.state("d") in ("dialling", "ringing")
    ended = g.send("end")
    assert await g.result() == {"m1": "cancelled", "m2": "cancelled"}
    assert await ended == "ended"
    await w.run(10)
    assert _member_dials(w, ("m1", "m2")) == []
    assert [w.sim.phones[m].calls for m in ("m1", "m2")] == [0, 0]
    w.assert_ok(quiescent=True)


@pytest.mark.parametrize("spec", ["group_call", "conference"])
@pytest.mark.parametrize("seed", [2, 3, 4])
async def test_end_sent_while_a_busy_member_is_taken_rings_the_rest_of_nobody(
    spec: str, seed: int
) -> None:
    """Members are taken one by one; taking one busy in a call waits for the switch to clear
    it. An ``end`` sent meanwhile stops the inviting: the members after it are not rung."""
    w = World("m1", "m2", "m3", "x", timing=Timing.real(seed=seed))
    d = w.add("d", keep=True)
    await w.start(call, w["m1"], w["x"]).result()  # m1 busy, at a lower priority
    members = [w["m1"], w["m2"], w["m3"]]
    g = w.start(group_call if spec == "group_call" else conference, d, members)
    for _ in range(500):  # until the group has begun to take m1 (the dispatcher answered)
        if w.owner("m1") == g.name:
            break
        await w.run(0.01)
    assert w.owner("m1") == g.name and w.state("m2") == "idle"  # m1's line being cleared
    ended = g.send("end")
    fate = await g.result()
    assert await ended == "ended"
    assert (fate["m2"], fate["m3"]) == ("cancelled", "cancelled")
    await w.run(10)
    assert _member_dials(w, ("m2", "m3")) == []
    assert [w.sim.phones[m].calls for m in ("m2", "m3")] == [0, 0]
    w.assert_ok(quiescent=True)


@pytest.mark.parametrize("spec", ["group_call", "conference"])
@pytest.mark.parametrize("seed", [None, 1, 2])
async def test_end_sent_while_the_dispatcher_rings_stops_that_ringing_at_once(
    spec: str, seed: int | None
) -> None:
    """An ``end`` sent while the dispatcher's own phone rang was read only once it answered
    (or after 30 s): it rang on for a call that was over. It now stops that ringing when
    sent; nobody is rung."""
    w = World("m1", "m2", "d", timing=None if seed is None else Timing.real(seed=seed))
    w.behave("d", never_answers())
    g = w.start(group_call if spec == "group_call" else conference, w["d"], [w["m1"], w["m2"]])
    for _ in range(500):
        if w.state("d") == "ringing":
            break
        await w.run(0.01)
    assert w.state("d") == "ringing"
    sent = asyncio.get_running_loop().time()
    assert await g.send("end") == "ended"
    assert await g.result() == {"m1": "cancelled", "m2": "cancelled"}
    assert asyncio.get_running_loop().time() - sent < 5.0  # not the 30 s ring
    assert w.state("d") == "idle"
    assert [w.sim.phones[m].calls for m in ("m1", "m2")] == [0, 0]
    w.assert_ok(quiescent=True)


async def test_an_add_sent_while_the_dispatcher_rings_is_served_once_it_answers() -> None:
    w = World("m1", "m2", "d")
    w.behave("d", answers(5))
    g = w.start(conference, w["d"], [w["m1"]])
    await w.run(2)
    assert w.state("d") == "ringing"
    added = g.send("add", user="m2")
    assert await added == "ringing"  # served once the dispatcher answered, not refused
    await w.run(3)
    assert w.hears("d") == {"m1", "m2"}
    assert await g.send("end") == "ended"
    await g.result()
    await w.run(10)
    w.assert_ok(quiescent=True)
