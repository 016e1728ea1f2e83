"""Pickup, including the race with the called user's own answer."""

from __future__ import annotations

import asyncio

import pytest

from baton.core import Preempted
from baton.flows import PickupFailed, call, emergency_call, pickup
from baton.switch.sim import answers, never_answers
from baton.testing import World


@pytest.mark.interaction("pickup", "call")
async def test_pickup_answers_a_ringing_call() -> None:
    w = World("a", "b", "c")
    w.behave("b", never_answers())
    f = w.start(call, w["a"], w["b"])
    await w.run(3)
    p = w.start(pickup, w["c"], w["b"])
    assert await p.result() == "a"
    assert w.hears("a") == {"c"}
    assert w.state("b") == "idle"
    assert f.outcome == "failed"
    w.assert_ok()


async def test_pickup_started_in_the_tick_of_the_answer_steps_aside() -> None:
    """b answers at t=5.0 and the pickup starts in the same instant, right after the answer
    event: there is no call to pick up any more, and a and b talk."""
    w = World("a", "b", "c")
    w.behave("b", answers(4.0))  # dialled at t=1.0 -> answers at t=5.0
    w.start(call, w["a"], w["b"])
    await w.run(2)
    started: list[object] = []
    loop = asyncio.get_running_loop()
    loop.call_at(5.0, lambda: started.append(w.start(pickup, w["c"], w["b"])))
    await w.run(5)
    with pytest.raises(PickupFailed, match="no call is ringing"):
        await started[0].result()  # type: ignore[attr-defined]
    assert w.hears("a") == {"b"}
    w.assert_ok()


@pytest.mark.interaction("pickup", "call")
async def test_answer_landing_while_the_pickup_takes_the_call() -> None:
    """The pickup is taking the call (clearing a's ringback takes the switch 0.5 s) when b
    answers: the pickup steps aside, connects a and b as the call would have, and fails."""
    w = World("a", "b", "c", latency={"clear": 0.5})
    w.behave("b", answers(4.0))
    w.start(call, w["a"], w["b"])
    await w.run(2)
    loop = asyncio.get_running_loop()
    started: list[object] = []
    loop.call_at(4.8, lambda: started.append(w.start(pickup, w["c"], w["b"])))
    await w.run(5)
    with pytest.raises(PickupFailed, match="answered first"):
        await started[0].result()  # type: ignore[attr-defined]
    assert w.hears("a") == {"b"}
    assert w.state("c") == "idle"
    assert w.owner("a").startswith("p2p")
    w.assert_ok()


async def test_pickup_just_before_the_answer_wins() -> None:
    w = World("a", "b", "c")
    w.behave("b", answers(4.0))
    w.start(call, w["a"], w["b"])
    await w.run(2)
    loop = asyncio.get_running_loop()
    started: list[object] = []
    loop.call_at(4.999, lambda: started.append(w.start(pickup, w["c"], w["b"])))
    await w.run(5)
    assert await started[0].result() == "a"  # type: ignore[attr-defined]
    assert w.hears("a") == {"c"}
    assert w.sim.phones["b"].calls == 1


async def test_nothing_to_pick_up() -> None:
    w = World("b", "c")
    with pytest.raises(PickupFailed, match="no call is ringing"):
        await w.start(pickup, w["c"], w["b"]).result()


async def test_a_picker_taken_while_its_phone_rings_leaves_nobody_waiting() -> None:
    """c picks up a's call to b, and while c's phone rings an emergency takes c: a (who was
    hearing ringback) is told at once — the preemption tone, then hung up — rather than left
    on the line for the leak collector (baton check warned: 'Preempted escaped the flow')."""
    w = World("a", "b", "c", "boss")
    w.behave("b", never_answers())
    w.start(call, w["a"], w["b"])
    await w.run(3)
    w.behave("c", never_answers())
    p = w.start(pickup, w["c"], w["b"])
    await w.run(2)
    assert w.state("c") == "ringing" and w.state("b") == "idle"
    w.start(emergency_call, w["boss"], w["c"])
    assert await p.wait() == "failed" and isinstance(p.error, Preempted)
    await w.run(3)
    assert "tone:preemption" in w.heard("a")
    assert w.state("a") == "idle" and w.owner("a") is None
    w.assert_ok()


async def test_the_called_user_hanging_up_while_the_pickup_takes_the_call_ends_the_caller() -> None:
    """The called user declines (hangs up) while the pickup takes the call: the caller, on an
    always-on line hearing ringback, hears the busy tone and its line is cleared — before, the
    failed claim let it go and it sat on its line in silence, owned by nobody."""
    w = World("b", latency={"clear": 0.4}, behaviour=never_answers())
    d = w.add("d", keep=True, behaviour=answers(0.5))
    x = w.add("x", keep=True, behaviour=answers(0.5))
    w.start(call, x, w["b"])
    await w.run(3)
    assert w.state("b") == "ringing"
    f = w.start(pickup, d, w["b"])
    await w.run(0.2)
    w.sim.hang_up("b")
    await w.run(3)
    assert f.ended
    assert "tone:busy" in w.heard("x")
    await w.run(5)
    assert w.owner("x") is None and "tone:ringback" not in w.hears("x")
    w.assert_ok(quiescent=True)


async def test_a_caller_hanging_up_while_the_pickup_takes_the_call_stops_the_ringing() -> None:
    """The caller hangs up while the pickup takes the call (the switch slow to clear the
    caller's ringback): the phone it rang stops ringing at once — before, the failed claim let
    it go and it rang on for nobody until the leak collector hung it up."""
    w = World("b", latency={"clear": 0.4}, behaviour=never_answers())
    d = w.add("d", keep=True, behaviour=answers(0.5))
    x = w.add("x", keep=True, behaviour=answers(0.5))
    w.start(call, x, w["b"])
    await w.run(3)
    assert w.state("b") == "ringing"
    f = w.start(pickup, d, w["b"])
    await w.run(0.2)
    w.sim.hang_up("x")
    await w.run(1)
    assert f.ended and w.sim.leg_of("b") is None  # cancelled by the pickup
    await w.run(10)
    assert not w.kinds("leg.collected")
    w.assert_ok(quiescent=True)
