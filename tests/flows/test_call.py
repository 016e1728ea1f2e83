"""Individual calls, dispatcher- and user-initiated."""

from __future__ import annotations

import pytest

from baton.core import (
    Busy,
    Incompatible,
    NoAnswer,
    Preempted,
    Priority,
    Rejected,
    Unreachable,
    UserHungUp,
)
from baton.core.port import Cause
from baton.flows import call, emergency_call, inbound_call
from baton.switch.sim import answers, busy, incompatible, never_answers, rejects, unreachable
from baton.testing import World


async def test_call_connects_and_settles() -> None:
    w = World("disp", "field")
    f = w.start(call, w["disp"], w["field"])
    await w.run(1.5)
    assert "tone:ringback" in w.hears("disp")  # the dispatcher hears ringback while field rings
    await f.result()
    assert w.hears("disp") == {"field"}
    assert w.owner("field").startswith("p2p")
    w.sim.hang_up("field")
    await w.run(1)
    w.assert_ok(quiescent=True)


@pytest.mark.parametrize(
    ("behaviour", "error"),
    [
        (busy(), Busy),
        (never_answers(), NoAnswer),
        (rejects(), Rejected),
        (unreachable(), Unreachable),
        (incompatible(), Incompatible),
    ],
)
async def test_call_failure_tells_the_caller(behaviour: object, error: type) -> None:
    w = World("disp", "field", grace=2)
    w.behave("field", behaviour)  # type: ignore[arg-type]
    with pytest.raises(error):
        await w.start(call, w["disp"], w["field"], 20.0).result()
    assert "tone:busy" in w.heard("disp")
    await w.run(5)
    w.assert_ok(quiescent=True)


async def test_caller_hangs_up_while_callee_rings_cancels_the_callee() -> None:
    w = World("disp", "field")
    w.behave("field", never_answers())
    f = w.start(call, w["disp"], w["field"])
    await w.run(5)
    w.sim.hang_up("disp")
    with pytest.raises(UserHungUp):
        await f.result()
    assert w.state("field") == "idle"  # the ringing leg was cancelled at once
    assert w.sim.hangups[-1][1].value == "cancelled"
    w.assert_ok(quiescent=True)


async def test_inbound_call_rings_then_answers_the_caller() -> None:
    w = World("alice", "bob")
    leg = w.sim.call_in("alice", "bob")
    f = w.start(inbound_call, w["alice"], w["bob"])
    await w.run(0.5)
    assert w.sim.legs[leg].state == "ringing"  # not answered before bob answers
    await f.result()
    assert w.hears("alice") == {"bob"}


async def test_inbound_call_busy_ends_the_caller_with_busy() -> None:
    w = World("alice", "bob")
    w.behave("bob", busy())
    w.sim.call_in("alice", "bob")
    with pytest.raises(Busy):
        await w.start(inbound_call, w["alice"], w["bob"]).result()
    assert w.sim.hangups[-1][1].value == "busy"
    assert w.state("alice") == "idle"


async def test_inbound_call_to_a_phone_refusing_the_media_ends_the_caller_so() -> None:
    """The caller's phone learns why (on SIP, a 488 for the callee's 488), not 'no answer'."""
    w = World("alice", "bob")
    w.behave("bob", incompatible())
    w.sim.call_in("alice", "bob")
    with pytest.raises(Incompatible):
        await w.start(inbound_call, w["alice"], w["bob"]).result()
    assert w.sim.hangups[-1][1] is Cause.INCOMPATIBLE
    assert w.state("alice") == "idle"
    w.assert_ok(quiescent=True)


async def test_inbound_call_caller_hanging_up_cancels_the_ringing_callee_at_once() -> None:
    """Before, the callee rang on, answered into silence and was hung up by the leak collector
    seconds later."""
    w = World("alice", "bob")
    w.sim.call_in("alice", "bob")
    f = w.start(inbound_call, w["alice"], w["bob"], ring=20)
    await w.run(0.3)
    w.sim.hang_up("alice")
    with pytest.raises(UserHungUp):
        await f.result()
    assert [(leg, cause) for leg, cause, _ in w.sim.hangups] == [("L1", Cause.CANCELLED)]
    assert w.state("bob") == "idle"
    w.assert_ok()


async def test_inbound_call_callee_taken_while_ringing_ends_the_caller_preempted() -> None:
    """The callee is taken into an emergency while ringing: the caller's call ends at once,
    with the RFC 4411 cause, not seconds later by the leak collector."""
    w = World("alice", "bob", "disp")
    leg = w.sim.call_in("alice", "bob")
    f = w.start(inbound_call, w["alice"], w["bob"], ring=20)
    await w.run(0.05)
    w.start(emergency_call, w["disp"], w["bob"])
    with pytest.raises(Preempted):
        await f.result()
    assert (leg, Cause.PREEMPTED) in [(lg, cause) for lg, cause, _ in w.sim.hangups]
    assert w.state("alice") == "idle"
    w.assert_ok()


async def test_call_callee_taken_while_ringing_tells_the_caller_at_once() -> None:
    """The dispatcher heard ringback, then the callee was taken into an emergency: before, the
    dispatcher sat in silence until the leak collector hung the line up seconds later."""
    w = World("disp", "field", "sup")
    f = w.start(call, w["disp"], w["field"], ring=20)
    await w.run(1.5)
    w.start(emergency_call, w["sup"], w["field"])
    await w.run(0.5)
    assert "tone:preemption" in w.hears("disp")
    with pytest.raises(Preempted):
        await f.result()
    assert [cause for leg, cause, _ in w.sim.hangups] == [Cause.PREEMPTED]
    assert w.state("disp") == "idle"
    w.assert_ok()


async def test_switch_failure_during_call_is_contained() -> None:
    w = World("disp", "field", grace=2)
    w.sim.fail_next("bridge")
    f = w.start(call, w["disp"], w["field"])
    assert await f.wait() == "failed"
    assert "bridge" in str(f.error)
    await w.run(5)
    w.assert_ok(quiescent=True)


@pytest.mark.interaction("emergency_call", "call")
async def test_emergency_preempts_a_ringing_call() -> None:
    w = World("disp", "field", "boss", grace=2)
    w.behave("field", answers(10))
    f = w.start(call, w["disp"], w["field"])
    await w.run(3)
    e = w.start(emergency_call, w["boss"], w["field"])
    assert await f.wait() == "failed"
    await w.run(10)
    assert w.hears("field") == {"boss"}
    assert w.sim.phones["field"].calls == 1
    assert e.priority == Priority.EMERGENCY
    w.assert_ok()


async def test_a_dispatcher_left_behind_hears_nothing() -> None:
    """The callee is taken while ringing: the call flow ends, and the dispatcher's always-on
    line it leaves behind is connected-idle — its ringback stopped, not playing forever."""
    w = World("field", "boss")
    d = w.add("disp", keep=True)
    w.behave("field", answers(30))
    f = w.start(call, d, w["field"])
    await w.run(3)
    assert "tone:ringback" in w.hears("disp")
    e = w.start(emergency_call, w["boss"], w["field"])
    await f.wait()
    await w.run(1)
    assert w.hears("disp") == set()
    assert w.owner("disp") is None
    await e.send("end")
    w.assert_ok()


async def test_a_call_above_routine_whose_caller_hangs_up_as_it_takes_the_callee() -> None:
    """A call started above ROUTINE (a supervisor's) takes its callee out of another call; the
    caller hangs up while the switch clears the callee. The callee hears the preemption notice
    and is hung up — before, the failed claim released it onto a silent line until the leak
    collector hung it up."""
    w = World("a", "b", "x", "d", latency={"clear": 0.4})
    await w.start(call, w["a"], w["b"]).result()
    await w.start(call, w["x"], w["d"]).result()
    f = w.start(call, w["d"], w["b"], priority=Priority.FLASH)
    await w.run(0.2)
    w.sim.hang_up("d")
    await w.run(1)
    assert "tone:preemption" in w.hears("b")
    await w.run(3)
    assert f.ended
    await w.run(10)
    assert w.sim.leg_of("b") is None and not w.kinds("leg.collected")
    w.assert_ok(quiescent=True)
