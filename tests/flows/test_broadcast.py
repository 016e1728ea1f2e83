"""Broadcasts: a recorded message, or the dispatcher's voice; members listen only."""

from __future__ import annotations

import asyncio

import pytest

from baton.core import BatonError
from baton.core.port import Prompt
from baton.flows import broadcast
from baton.switch.sim import Timing, never_answers
from baton.testing import World


async def test_recorded_message_to_everyone_who_answered() -> None:
    w = World("m1", "m2", "m3")
    w.behave("m3", never_answers())
    w.sim.prompt_seconds["alert.wav"] = 5
    b = w.start(broadcast, [w["m1"], w["m2"], w["m3"]], None, Prompt("alert.wav"), 2, 10.0, 8.0)
    fate = await b.result()
    assert w.heard("m1") == ["prompt:alert.wav", "prompt:alert.wav"]
    assert fate == {"m1": "joined", "m2": "joined", "m3": "no_answer"}
    assert w.state("m1") == "idle"
    w.assert_ok(quiescent=True)


async def test_dispatcher_voice_members_listen_only() -> None:
    w = World("m1", "m2")
    d = w.add("d", keep=True)
    b = w.start(broadcast, [w["m1"], w["m2"]], d)
    await w.run(3)
    assert w.hears("m1") == {"d"}  # members hear the dispatcher, not each other
    assert w.hears("d") == set()  # nobody is heard
    await b.send("end")
    await b.result()


async def test_broadcast_needs_something_to_say() -> None:
    w = World("m1")
    with pytest.raises(BatonError, match="needs a message or a dispatcher"):
        await w.start(broadcast, [w["m1"]]).result()


@pytest.mark.parametrize("when", [3.0, 12.0])  # while gathering the members; while it plays
@pytest.mark.parametrize("seed", [None, 1, 2])
async def test_end_stops_a_recorded_message_at_once(when: float, seed: int | None) -> None:
    """``end`` used to be accepted and never read: the message played on to its last repeat
    and the sender was told the broadcast ended before answering. It now stops the
    gathering or the message when sent; the members are hung up."""
    w = World("m1", "m2", timing=None if seed is None else Timing.real(seed=seed))
    w.sim.prompt_seconds["alert.wav"] = 20
    b = w.start(broadcast, [w["m1"], w["m2"]], None, Prompt("alert.wav"), 3, 10.0, 8.0)
    await w.run(when)
    if when > 10.0:
        assert "prompt:alert.wav" in w.hears("m1")
    loop = asyncio.get_running_loop()
    sent = loop.time()
    assert await b.send("end") == "ended"
    fate = await b.result()
    assert set(fate) == {"m1", "m2"} and set(fate.values()) <= {"joined", "ringing"}
    assert loop.time() - sent < 5.0  # not the 60 s of message
    assert w.state("m1") == "idle" and w.state("m2") == "idle"
    assert w.heard("m1").count("prompt:alert.wav") == (1 if when > 10.0 else 0)
    w.assert_ok(quiescent=True)


async def test_a_member_hanging_up_leaves_the_message_playing_to_the_others() -> None:
    w = World("m1", "m2")
    w.sim.prompt_seconds["alert.wav"] = 20
    b = w.start(broadcast, [w["m1"], w["m2"]], None, Prompt("alert.wav"), 1, 5.0, 8.0)
    await w.run(10)
    w.sim.hang_up("m1")
    await w.run(5)
    assert "prompt:alert.wav" in w.hears("m2")
    await b.result()
    assert w.heard("m2") == ["prompt:alert.wav"]
    w.assert_ok(quiescent=True)


@pytest.mark.parametrize("seed", [None, 1, 2])
async def test_end_while_the_dispatchers_line_rings_stops_it_and_rings_nobody(
    seed: int | None,
) -> None:
    w = World("m1", "m2", "d", timing=None if seed is None else Timing.real(seed=seed))
    w.behave("d", never_answers())
    b = w.start(broadcast, [w["m1"], w["m2"]], w["d"])
    for _ in range(500):
        if w.state("d") == "ringing":
            break
        await w.run(0.01)
    assert w.state("d") == "ringing"
    sent = asyncio.get_running_loop().time()
    assert await b.send("end") == "ended"
    assert await b.result() == {"m1": "cancelled", "m2": "cancelled"}
    assert asyncio.get_running_loop().time() - sent < 5.0  # not the 30 s ring
    assert w.state("d") == "idle"
    assert [w.sim.phones[m].calls for m in ("m1", "m2")] == [0, 0]
    w.assert_ok(quiescent=True)
