"""A flow that fails half-way — a party taken or gone in the middle of its set-up, under a switch
that takes time — does not leave the other parties on the line in silence until the leak
collector finds them (docs/flows.md, "Nobody waits in silence"): they hear the preemption notice
(or a busy tone) and are hung up, or the flow carries on without the one it lost.

Found by ``baton check``, which now reports a party a failed flow released and the collector
later hung up (``_stranded`` in baton.testing.check).
"""

from __future__ import annotations

import pytest

from baton.flows import (
    TransferOutcome,
    blind_transfer,
    call,
    conference,
    emergency_call,
    force_release,
    hold,
    polling,
    roll_call,
)
from baton.flows.group_call import OnLeave
from baton.switch.sim import answers
from baton.testing import World


async def _talking(w: World, a: str, b: str) -> None:
    await w.start(call, w[a], w[b]).result()


def _collected(w: World) -> list[str]:
    return [ev.user for ev in w.kinds("leg.collected")]  # type: ignore[attr-defined]


async def test_holder_taken_while_hold_is_set_up_tells_the_held_party() -> None:
    """The holder is taken by an emergency while the hold clears the held party's media: the
    held party hears the preemption notice and is hung up — not released into silence."""
    w = World("a", "b", "boss", "x", latency={"clear": 0.5})
    await _talking(w, "a", "b")
    h = w.start(hold, w["a"], w["b"])
    await w.run(1.2)  # the preemption's clears are done; hold's own clear of b is in flight
    w.start(emergency_call, w["boss"], w["a"])
    await h.wait()
    await w.run(10)
    assert "tone:preemption" in w.heard("b")
    assert w.state("b") == "idle"
    assert "b" not in _collected(w)
    w.assert_ok()


async def test_transferor_taken_as_it_leaves_does_not_stop_a_blind_transfer() -> None:
    """The transferor leaves at once anyway: taken by an emergency while the transfer hangs it
    up, the transfer goes on and the party talks to the target."""
    w = World("a", "b", "c", "boss", latency={"hangup": 0.5})
    await _talking(w, "a", "b")
    f = w.start(blind_transfer, w["a"], w["b"], w["c"])
    await w.run(0.2)  # the transferor's hang-up is in flight
    w.start(emergency_call, w["boss"], w["b"])
    assert await f.result() is TransferOutcome.TRANSFERRED
    assert w.hears("a") == {"c"}
    assert "a" not in _collected(w)
    w.assert_ok()


async def test_force_release_losing_its_target_still_tells_the_other_party() -> None:
    """An emergency takes the target while the force release hangs it up: the party left alone
    still hears the preemption notice and is hung up, not released into silence."""
    w = World("a", "b", "boss", latency={"hangup": 0.5})
    await _talking(w, "a", "b")
    f = w.start(force_release, w["a"])
    await w.run(0.2)
    w.start(emergency_call, w["boss"], w["a"])
    await f.wait()
    await w.run(10)
    assert "tone:preemption" in w.heard("b")
    assert w.state("b") == "idle"
    assert "b" not in _collected(w)
    w.assert_ok()


async def test_conference_dispatcher_taken_as_a_member_joins_goes_on_without_them() -> None:
    """The dispatcher is taken while a member's ringing task stops the dispatcher's ringback
    (the member just joined): that task does not crash the conference — the conference sees
    the dispatcher leave and, with ``CONTINUE``, the members talk on in a MeetingCall."""
    w = World("d", "m1", "m2", "x", "boss", latency={"stop_play": 0.5})
    w.behave("m1", answers(1))
    w.behave("m2", answers(1))
    c = w.start(conference, w["d"], [w["m1"], w["m2"]], on_leave=OnLeave.CONTINUE, ring=10.0)
    await w.run(2.2)  # both members joined; the ringback's stop is in flight
    w.start(emergency_call, w["boss"], w["d"])
    await c.result()
    await w.run(10)
    assert w.hears("m1") == {"m2"}
    assert _collected(w) == []
    w.assert_ok()


@pytest.mark.parametrize("how", ["taken", "hung up"])
async def test_held_party_leaving_ends_the_holders_call(how: str) -> None:
    """The held party is taken by an emergency (or hangs up): the holder, a field phone, hears
    the preemption notice (or a busy tone) and is hung up at once, as in the P2P they came
    from — not let go onto a silent line for the leak collector."""
    w = World("a", "b", "boss")
    await _talking(w, "a", "b")
    h = w.start(hold, w["a"], w["b"])
    await w.run(2)
    if how == "taken":
        w.start(emergency_call, w["boss"], w["b"])
    else:
        w.sim.hang_up("b")
    assert await h.result() == "held party left"
    await w.run(1)
    assert w.state("a") == "idle"
    assert ("tone:preemption" if how == "taken" else "tone:busy") in w.heard("a")
    assert "a" not in _collected(w)
    w.assert_ok()


async def test_an_always_on_holder_is_only_cleared_when_the_held_party_leaves() -> None:
    w = World("b", "boss")
    w.add("d", keep=True)
    await _talking(w, "d", "b")
    h = w.start(hold, w["d"], w["b"])
    await w.run(2)
    w.sim.hang_up("b")
    await h.result()
    await w.run(10)
    assert w.sim.leg_of("d") is not None
    assert w.owner("d") is None
    w.assert_ok()


async def test_an_emergency_ended_with_one_party_left_hangs_that_party_up() -> None:
    """The dispatcher hung up and was not redialled; the emergency is ended: the target left
    alone hears a busy tone and is hung up at once, not let go onto a silent line."""
    w = World("d", "t")
    e = w.start(emergency_call, w["d"], w["t"])
    await w.run(5)
    assert w.hears("t") == {"d"}
    w.sim.hang_up("d")
    await w.run(2)
    await e.send("end")
    assert await e.result() == "ended"
    await w.run(1)
    assert w.state("t") == "idle"
    assert "tone:busy" in w.heard("t")
    assert "t" not in _collected(w)
    w.assert_ok()


async def test_a_roll_call_cancelled_while_a_member_is_asked_hangs_the_member_up() -> None:
    w = World("m1", "m2")
    w.behave("m1", answers(1))
    f = w.start(roll_call, [w["m1"], w["m2"]], "1", 10.0, 30.0)
    await w.run(3)  # m1 is on the line, asked to press 1
    assert w.sim.leg_of("m1") is not None
    await f.stop("operator")
    await w.run(0.5)
    assert w.state("m1") == "idle"
    await w.run(10)
    assert _collected(w) == []
    w.assert_ok()


async def test_polling_cancelled_while_a_member_rings_ends_both_calls() -> None:
    w = World("d", "m")
    w.behave("m", answers(20))
    f = w.start(polling, w["d"], [w["m"]], 30.0)
    await w.run(3)  # the dispatcher hears ringback while m rings
    await f.stop("operator")
    await w.run(0.5)
    assert w.state("d") == "idle" and w.state("m") == "idle"
    await w.run(10)
    assert _collected(w) == []
    w.assert_ok()
