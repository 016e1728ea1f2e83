"""Library flows against each other under real switch timing: the interleavings found by trying
Baton with a switch whose commands take time (0.2–0.8 s) and whose events land mid-operation.

Each test pins what docs/flows.md promises — nobody dropped, nobody left in silence, no crash —
and the World's watch checks every invariant (liveness, dead air and clean hand-over included)
at every step.
"""

from __future__ import annotations

import gc

import pytest

from baton.core import FlowUsageError, NotOwner, Priority, Session, Tone, User, flow
from baton.flows import (
    TransferOutcome,
    attended_transfer,
    barge_in,
    blind_transfer,
    call,
    conference,
    emergency_call,
    group_call,
    monitor,
    pickup,
    polling,
    whisper,
)
from baton.flows.ptt import ptt_group
from baton.switch.sim import Timing, answers, busy, never_answers
from baton.testing import World

SLOW = Timing(default=(0.2, 0.8), events=(0.0, 0.3), seed=11)


async def _talking(w: World, a: str, b: str) -> None:
    await w.start(call, w[a], w[b]).result()


@pytest.mark.parametrize("spec", [monitor, whisper])
async def test_listening_in_on_a_call_that_just_lost_a_party_is_a_clear_error(spec: object) -> None:
    """The P2P's other party was just preempted (the one left alone hears its preemption tone):
    monitor and whisper refuse with a FlowUsageError that says so — not a bare IndexError."""
    w = World("a", "b", "boss", "d")
    await _talking(w, "a", "b")
    w.start(emergency_call, w["boss"], w["b"])
    await w.run(0.5)
    assert "tone:preemption" in w.hears("a")
    f = w.start(spec, w["d"], w["a"])  # type: ignore[arg-type]
    with pytest.raises(FlowUsageError, match="call is ending"):
        await f.result()
    w.assert_ok()


@pytest.mark.parametrize("how", ["taken", "hung up"])
@pytest.mark.interaction("monitor", "emergency_call")
async def test_a_party_lost_while_monitored_is_not_left_in_silence(how: str) -> None:
    """While a dispatcher monitors a-b, b is taken by an emergency (or hangs up): a is not left
    in the monitor's meeting hearing nobody — it hears the notice and is released, and the
    monitoring ends."""
    w = World("a", "b", "boss", "d")
    await _talking(w, "a", "b")
    m = w.start(monitor, w["d"], w["a"])
    await w.run(3)
    assert w.hears("d") == {"a", "b"}
    if how == "taken":
        w.start(emergency_call, w["boss"], w["b"])
    else:
        w.sim.hang_up("b")
    await m.wait()
    await w.run(5)
    assert "tone:preemption" in w.heard("a")
    assert w.state("a") == "idle"
    w.assert_ok()


async def test_blind_transfer_target_hanging_up_while_ringing_recalls_the_transferor() -> None:
    w = World("a", "b", "c")
    await _talking(w, "a", "b")
    w.behave("c", answers(10))
    f = w.start(blind_transfer, w["a"], w["b"], w["c"])
    await w.run(2)
    w.sim.hang_up("c")  # the target declines by hanging up while it rings
    assert await f.result() is TransferOutcome.RECALLED
    assert w.hears("a") == {"b"}
    w.assert_ok()


async def test_blind_transfer_recall_keeps_the_party_hearing_ringback() -> None:
    w = World("a", "b", "c")
    await _talking(w, "a", "b")
    w.behave("c", never_answers())
    w.behave("b", answers(4))  # the transferor takes a while to answer the recall
    f = w.start(blind_transfer, w["a"], w["b"], w["c"], 5.0)
    await w.run(6.5)  # the target gave up at 5 s; the transferor rings
    assert w.state("b") == "ringing"
    assert "tone:ringback" in w.hears("a")
    assert await f.result() is TransferOutcome.RECALLED
    w.assert_ok()


@pytest.mark.interaction("blind_transfer", "emergency_call")
async def test_a_transfer_superseded_half_way_tells_the_party() -> None:
    """The transfer is taking a and b out of their call (the switch takes 1 s to clear) when an
    emergency claims b: the transfer is superseded. a — already out of its call — hears the
    preemption notice and is released, instead of sitting in silence until collected."""
    w = World("a", "b", "c", "boss", latency={"clear": 1.0})
    await _talking(w, "a", "b")
    t = w.start(blind_transfer, w["a"], w["b"], w["c"])
    await w.run(0.3)
    w.start(emergency_call, w["boss"], w["b"])
    await t.wait()
    await w.run(6)
    assert "tone:preemption" in w.heard("a")
    assert w.state("a") == "idle"
    w.assert_ok()


@pytest.mark.interaction("attended_transfer", "emergency_call")
async def test_attended_transfer_transferor_taken_during_consultation_completes() -> None:
    """docs/flows.md: the transferor leaving — hung up, or taken alone — completes the
    transfer: the party is put through rather than dropped."""
    w = World("a", "b", "c", "boss")
    await _talking(w, "a", "b")
    t = w.start(attended_transfer, w["a"], w["b"], w["c"])
    await w.run(3)
    assert w.hears("b") == {"c"}
    w.start(emergency_call, w["boss"], w["b"])
    assert await t.result() is TransferOutcome.TRANSFERRED
    assert w.hears("a") == {"c"}
    w.assert_ok()


async def test_attended_transfer_transferor_taken_while_the_target_rings() -> None:
    """Before: FlowUsageError ('has no connected call') and the party dropped. Now the party
    hears ringback and is put through when the target answers."""
    w = World("a", "b", "c", "boss")
    await _talking(w, "a", "b")
    w.behave("c", answers(5))
    t = w.start(attended_transfer, w["a"], w["b"], w["c"])
    await w.run(2)
    w.start(emergency_call, w["boss"], w["b"])
    await w.run(1)
    assert "tone:ringback" in w.hears("a")
    assert await t.result() is TransferOutcome.TRANSFERRED
    assert w.hears("a") == {"c"}
    w.assert_ok()


async def test_attended_transfer_complete_racing_a_preemption_of_the_target() -> None:
    """``complete`` and an emergency on the target in the same instant: no NotOwner escapes,
    nobody is dropped — the party is back with the transferor."""
    w = World("a", "b", "c", "boss")
    await _talking(w, "a", "b")
    t = w.start(attended_transfer, w["a"], w["b"], w["c"])
    await w.run(3)
    w.start(emergency_call, w["boss"], w["c"])
    done = t.send("complete")
    done.add_done_callback(lambda f: f.cancelled() or f.exception())
    outcome = await t.result()
    assert outcome == "cancelled"
    assert w.hears("a") == {"b"}
    assert not isinstance(t.error, NotOwner)
    w.assert_ok()


async def test_pickup_caller_hears_ringback_while_the_picker_rings() -> None:
    w = World("field", "picker")
    d = w.add("disp", keep=True)
    w.behave("field", never_answers())
    w.behave("picker", answers(4))
    w.start(call, d, w["field"])
    await w.run(2)
    p = w.start(pickup, w["picker"], w["field"])
    await w.run(2)
    assert w.state("picker") == "ringing"
    assert "tone:ringback" in w.hears("disp")
    assert await p.result() == "disp"
    assert w.hears("disp") == {"picker"}
    w.assert_ok()


async def test_group_call_dispatcher_hears_ringback_until_someone_joins() -> None:
    w = World("m1", "m2")
    d = w.add("disp", keep=True)
    w.behave("m1", answers(5))
    w.behave("m2", answers(8))
    g = w.start(group_call, d, [w["m1"], w["m2"]])
    await w.run(3)
    assert "tone:ringback" in w.hears("disp")
    await w.run(3)
    assert w.hears("disp") == {"m1"}
    await g.send("end")
    await g.wait()
    w.assert_ok()


async def test_polling_dispatcher_hears_ringback_while_members_ring() -> None:
    w = World("u1", "u2", "d")
    w.behave("u1", never_answers())
    w.behave("u2", answers(3))
    p = w.start(polling, w["d"], [w["u1"], w["u2"]], 4.0)
    await w.run(3)
    assert "tone:ringback" in w.hears("d")
    assert await p.result() == "u2"
    w.assert_ok()


async def test_emergency_dispatcher_hears_ringback_while_the_target_rings() -> None:
    w = World("field")
    boss = w.add("boss", keep=True)
    w.behave("field", answers(6))
    e = w.start(emergency_call, boss, w["field"])
    await w.run(3)
    assert "tone:ringback" in w.hears("boss")
    await w.run(5)
    assert w.hears("boss") == {"field"}
    await e.send("end")
    await e.wait()
    w.assert_ok()


@pytest.mark.interaction("emergency_call", "call")
async def test_emergency_target_hanging_up_mid_preemption_does_not_hang_the_claim() -> None:
    """The switch takes 0.5 s to clear media; the target hangs up 0.2 s into the emergency's
    preemption. Before, the claim never returned and ``end`` was ignored. Now the emergency is
    told the target hung up, holds (the dispatcher waits, declared), and ends on ``end``."""
    w = World("a", "b", latency={"clear": 0.5})
    boss = w.add("boss", keep=True)
    await _talking(w, "a", "b")
    e = w.start(emergency_call, boss, w["a"])
    await w.run(0.2)
    w.sim.hang_up("a")
    await w.run(3)
    assert not e.ended  # the emergency stands
    assert w.state("boss") == "connected" and w.owner("boss") == e.name
    assert await e.send("end") == "ended"
    assert await e.wait() == "completed"
    w.assert_ok()


async def test_ptt_member_hanging_up_as_the_group_ends_leaves_no_unretrieved_future(
    caplog: pytest.LogCaptureFixture,
) -> None:
    w = World("m1", "m2", "m3")
    d = w.add("disp", keep=True)
    g = w.start(ptt_group, [w["m1"], w["m2"], w["m3"]], [d])
    await w.run(3)
    end = g.send("end")
    w.sim.hang_up("m2")  # in the same loop tick as `end`
    await end
    await g.wait()
    await w.run(1)
    gc.collect()
    assert "never retrieved" not in caplog.text
    w.assert_ok()


@pytest.mark.parametrize("seed", range(8))
async def test_library_mix_under_a_slow_switch(seed: int) -> None:
    """A seeded mix of flows on shared users with a slow switch: every invariant, liveness and
    dead air included, holds at every step; everything ends."""
    timing = Timing(default=(0.2, 0.8), events=(0.0, 0.3), seed=seed)
    w = World("a", "b", "c", "e", timing=timing, grace=2)
    d = w.add("d", keep=True)
    boss = w.add("boss", keep=True)
    await _talking(w, "a", "b")
    flows = [
        w.start(monitor, d, w["a"]),
        w.start(blind_transfer, w["b"], w["a"], w["c"]),
    ]
    await w.run(0.3 * (seed % 4))
    flows.append(w.start(emergency_call, boss, w["a"], priority=Priority.EMERGENCY))
    if seed % 2:
        w.sim.hang_up("b")
    await w.run(10)
    for f in flows:
        if not f.ended:
            for cmd in ("end", "leave"):
                if cmd in f.spec.commands:
                    f.send(cmd).add_done_callback(lambda x: x.cancelled() or x.exception())
    await w.run(10)
    assert all(f.ended for f in flows)
    w.assert_ok()


async def test_a_callee_already_on_the_line_hears_ringback_while_the_caller_rings() -> None:
    w = World("f")
    d = w.add("disp", keep=True)
    w.behave("disp", answers(0.5))
    w.behave("f", busy())
    assert await w.start(polling, d, [w["f"]], 10.0).result() is None  # disp's line stays up
    w.behave("f", answers(4))
    c = w.start(call, w["f"], d)
    await w.run(2)
    assert w.state("f") == "ringing"
    assert "tone:ringback" in w.hears("disp")
    await c.result()
    assert w.hears("disp") == {"f"}
    w.assert_ok()


async def test_a_call_taking_over_a_ringing_callee_reaches_it_first() -> None:
    """A higher-priority call takes a callee whose phone already rings (the same leg: never
    re-dialled). The callee answers before the caller's phone does: it hears ringback until the
    caller answers — not silence (found by the core state machine)."""
    w = World("f", "a", "b")
    w.behave("f", answers(4))
    w.behave("b", answers(8))
    w.start(call, w["a"], w["f"])
    await w.run(2)
    c = w.start(call, w["b"], w["f"], priority=Priority.PRIORITY)
    await w.run(4)
    assert w.state("f") == "connected" and w.state("b") == "ringing"
    assert "tone:ringback" in w.hears("f")
    await c.result()
    assert w.hears("f") == {"b"} and w.sim.phones["f"].calls == 1
    w.assert_ok()


async def test_blind_transfer_goes_on_when_the_transferor_is_taken_after_leaving() -> None:
    """The transferor has left (hung up) and is then taken by another flow (it calls an
    emergency number) while the target rings: that is no loss of the target. The party still
    hears ringback and is put through when the target answers (found by the library state
    machine: the transfer took it for the target and left the target in silence)."""
    w = World("a", "b", "c")
    w.add("d", keep=True)
    await _talking(w, "a", "b")
    w.behave("c", answers(5))
    t = w.start(blind_transfer, w["a"], w["b"], w["c"])
    await w.run(1)
    assert w.state("b") == "idle"
    w.start(emergency_call, w["d"], w["b"])
    assert await t.result() is TransferOutcome.TRANSFERRED
    assert w.hears("a") == {"c"}
    w.assert_ok()


@flow(priority=Priority.ROUTINE)
async def _ringback_on(s: Session, d: User) -> None:
    """Hold ``d`` and start a playback on its line (the switch is slow to carry it out)."""
    await s.claim(d)
    await s.dial(d)
    await s.sleep(1)
    await s.play(d, Tone("ringback"), loop=True)
    await s.sleep(100)


@pytest.mark.interaction("emergency_call", "call")
async def test_emergency_target_hanging_up_then_rung_again_is_reached_not_left_silent() -> None:
    """The target hangs up while the emergency takes it; before the emergency's second claim
    (it waits for the dispatcher's slow preemption) another call rings the target again; that
    claim takes the ringing call over. The target was treated as gone: it answered into a
    line nobody bridged (dead air). It is reached like any target now."""
    w = World("a", "d", "t", "x", latency={"clear": 0.3, "play": 1.5})
    await _talking(w, "a", "t")
    w.start(_ringback_on, w["d"])
    await w.run(2.2)  # the playback on d is in flight: d's preemption clear queues behind it
    e = w.start(emergency_call, w["d"], w["t"], ring=8.0)
    await w.run(0.1)
    w.sim.hang_up("t")
    await w.run(0.4)
    w.behave("t", answers(2))
    w.start(call, w["t"], w["x"])  # t is rung again (it is this call's caller)
    await w.run(5)
    assert w.owner("t") == e.name
    assert w.hears("t") == {"d"}
    w.assert_ok()


@pytest.mark.interaction("group_call", "barge_in")
async def test_group_dispatcher_is_not_left_silent_when_a_barging_dispatcher_leaves() -> None:
    """A supervisor barged into a group call's room; the last member hangs up (the group
    dispatcher still hears the supervisor, so it declared nothing); then the supervisor
    leaves: the group dispatcher sat in silence, told by nobody (found by a seeded mix on a
    slow switch). The group call counts only its own members when it decides what its
    dispatcher hears."""
    w = World("d", "m", "sup")
    g = w.start(group_call, w["d"], [w["m"]])
    await w.run(3)
    assert w.hears("d") == {"m"}
    b = w.start(barge_in, w["sup"], w["m"])
    await w.run(3)
    assert w.hears("d") == {"m", "sup"}
    w.sim.hang_up("m")
    await w.run(1)
    await b.send("leave")
    await w.run(10)
    assert not g.ended
    assert w.problems() == []
    g.send("end")
    await g.result()
    w.assert_ok()


async def test_a_conference_listing_its_dispatcher_as_a_member_still_sees_it_leave() -> None:
    """baton check (seed 31) started a conference whose dispatcher was also in its member
    list; the member's loss handler took the news when the dispatcher was taken (or hung up),
    the conference never learned its dispatcher had left, and the other member sat in the room
    hearing nobody. The dispatcher is the dispatcher only."""
    w = World("d", "m")
    c = w.start(conference, w["d"], [w["d"], w["m"]])
    await w.run(5)
    assert w.hears("m") == {"d"}
    w.sim.hang_up("d")
    await w.run(5)
    assert c.ended
    assert w.state("m") == "idle"
    w.assert_ok()
