"""Emergency calls: the state holds until ended; hang-ups and redials; inbound emergencies."""

from __future__ import annotations

import pytest

from baton.core import FlowUsageError, Priority
from baton.flows import call, emergency_call, emergency_inbound
from baton.switch.sim import Timing, answers
from baton.testing import World


async def test_emergency_state_holds_until_ended() -> None:
    w = World("boss", "field")
    e = w.start(emergency_call, w["boss"], w["field"])
    await w.run(5)
    assert w.hears("field") == {"boss"}
    w.sim.hang_up("field")
    await w.run(5)
    assert e.state.value == "running"  # still declared
    assert await e.send("redial") == "connected"
    assert w.hears("field") == {"boss"}
    assert await e.send("end", by="supervisor") == "ended"
    assert await e.result() == "ended"
    assert w.owner("field").startswith("p2p")  # the conversation goes on as a normal call
    assert w.manager.owner_of(w["field"]).priority == Priority.ROUTINE  # type: ignore[union-attr]
    w.assert_ok()


@pytest.mark.interaction("emergency_call", "call")
@pytest.mark.parametrize("seed", [None, 0, 1, 2, 3])
async def test_emergency_state_holds_when_the_target_hangs_up_while_it_is_set_up(
    seed: int | None,
) -> None:
    # docs/flows.md: the emergency state holds whatever the parties do, until `end` — also
    # when the target, taken from a call, hangs up while the dispatcher's phone still rings.
    w = World("boss", "field", "x", timing=None if seed is None else Timing.real(seed))
    await w.start(call, w["x"], w["field"]).result()
    await w.run(2)
    w.behave("boss", answers(after=4))
    e = w.start(emergency_call, w["boss"], w["field"])
    await w.run(2.5)  # the field unit is the emergency's; the dispatcher's phone rings
    assert w.owner("field") == e.name and w.state("boss") == "ringing"
    w.sim.hang_up("field")
    await w.run(6)
    assert e.state.value == "running", e  # still declared
    assert await e.send("redial") == "connected"
    assert w.hears("field") == {"boss"}
    assert await e.send("end") == "ended"
    assert await e.result() == "ended"
    await w.run(10)
    w.assert_ok()


async def test_unknown_command_is_refused() -> None:
    w = World("boss", "field")
    e = w.start(emergency_call, w["boss"], w["field"])
    await w.run(3)
    with pytest.raises(FlowUsageError, match="accepts no command 'explode'"):
        e.send("explode")
    await e.send("end")


@pytest.mark.interaction("emergency_inbound", "call")
async def test_inbound_emergency_takes_a_free_dispatcher_or_preempts_the_least_busy() -> None:
    w = World("caller", "x", "y")
    d1 = w.add("d1", keep=True)
    d2 = w.add("d2", keep=True)
    await w.start(call, d1, w["x"]).result()  # d1 busy at ROUTINE
    hi = w.start(call, d2, w["y"], priority=Priority.FLASH)  # d2 busy at FLASH
    await hi.result()
    w.sim.call_in("caller", "112")
    e = w.start(emergency_inbound, w["caller"], [d2, d1])
    await w.run(3)
    assert w.hears("caller") == {"d1"}  # the ROUTINE call was preempted, not the FLASH one
    assert w.hears("d2") == {"y"}
    assert "tone:preemption" in w.heard("x")  # d1's partner was told
    await e.send("end")
    w.assert_ok()


@pytest.mark.interaction("emergency_call", "emergency_call")
async def test_emergency_beats_emergency_only_by_queueing() -> None:
    w = World("b1", "b2", "field")
    e1 = w.start(emergency_call, w["b1"], w["field"])
    await w.run(3)
    e2 = w.start(emergency_call, w["b2"], w["field"])
    assert await e2.wait() == "failed"  # equal priority: no preemption
    assert w.hears("field") == {"b1"}
    await e1.send("end")
