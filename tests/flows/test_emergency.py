"""Emergency calls: the state holds until ended; hang-ups and redials; inbound emergencies."""

from __future__ import annotations

import asyncio

import pytest

from baton.core import FlowOutcome, FlowUsageError, Priority, Superseded
from baton.core.events import LegStateChanged
from baton.flows import call, conference, emergency_call, emergency_inbound
from baton.switch.sim import Timing, answers, never_answers, unreachable
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


@pytest.mark.interaction("emergency_call", "call")
async def test_emergency_state_holds_when_the_target_hangs_up_as_it_is_bridged() -> None:
    # The hang-up lands at the switch while the bridge is on its way, and reaches the core
    # after the bridge failed on the leg that is gone: the emergency holds all the same.
    w = World("boss", "field", "x", timing=Timing(commands={"bridge": 0.6}, events=0.4))
    await w.start(call, w["x"], w["field"]).result()
    await w.run(2)
    w.behave("boss", answers(after=1))
    e = w.start(emergency_call, w["boss"], w["field"])
    await w.run(1.8)
    w.sim.hang_up("field")
    await w.run(6)
    assert e.state.value == "running", (e, e.error)
    assert await e.send("redial") == "connected"
    assert w.hears("field") == {"boss"}
    assert await e.send("end") == "ended"
    await w.run(10)
    w.assert_ok()


@pytest.mark.interaction("emergency_call", "conference")
@pytest.mark.parametrize("seed", [3, 11, 12, 24, 27])
async def test_a_member_taken_from_a_conference_hangs_up_and_both_go_on(seed: int) -> None:
    # On a slow switch, the member hangs up while the emergency reaches the dispatcher or
    # bridges them: the emergency holds (the dispatcher waits, declared, never in dead air)
    # and the conference goes on without the member, then ends cleanly.
    w = World("a", "b", "c", timing=Timing.real(seed), grace=3.0)
    w.add("disp", keep=True)
    w.add("boss", keep=True)
    conf = w.start(conference, w["disp"], [w["a"], w["b"], w["c"]])
    await w.run(8)
    e = w.start(emergency_call, w["boss"], w["b"])
    await w.run(2 + (seed % 7) * 0.3)
    w.sim.hang_up("b")
    await w.run(10)
    assert e.state.value == "running", (e, e.error)
    assert w.hears("a") >= {"disp", "c"}
    assert await e.send("end") == "ended"
    assert await conf.send("end") is not None
    await w.run(20)
    assert conf.ended
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


@pytest.mark.interaction("emergency_call", "call")
async def test_a_second_emergency_supersedes_one_still_taking_the_user() -> None:
    # docs/flows.md, after docs/design.md §Preemption step 2 (case (e)): while the first
    # emergency's preemption of the user is still clearing its media, an equal claim wins and
    # the first gets Superseded; once the first holds the user, the second fails instead.
    w = World("b1", "b2", "field", "x", latency={"clear": 0.5})
    await w.start(call, w["x"], w["field"]).result()
    e1 = w.start(emergency_call, w["b1"], w["field"])
    await w.run(0.1)  # e1's preemption is clearing the field unit's media
    e2 = w.start(emergency_call, w["b2"], w["field"])
    assert await e1.wait() == "failed" and isinstance(e1.error, Superseded)
    await w.run(5)
    assert w.hears("field") == {"b2"}
    await e2.send("end")
    await w.run(5)
    w.assert_ok()


async def test_inbound_emergency_passes_over_unreachable_positions_to_a_busy_one() -> None:
    """disp1 is busy in a routine call, disp2 and sup1 have no phone registered: the caller
    used to be dropped with Unreachable (disp2, free, was tried alone). Now the free but
    unreachable positions are passed over and disp1's routine call is preempted."""
    w = World("caller", "unit")
    disp1 = w.add("disp1", keep=True)
    disp2 = w.add("disp2", keep=True, behaviour=unreachable())
    sup1 = w.add("sup1", keep=True, behaviour=unreachable())
    await w.start(call, disp1, w["unit"]).result()
    w.sim.call_in("caller", "112")
    e = w.start(emergency_inbound, w["caller"], [disp2, sup1, disp1])
    await w.run(5)
    assert w.hears("caller") == {"disp1"}
    assert "tone:preemption" in w.heard("unit")
    assert w.owner("disp2") is None and w.owner("sup1") is None  # given back
    await e.send("end")
    w.assert_ok()


async def test_inbound_emergency_rings_on_until_a_position_answers() -> None:
    """Nobody answers at first: the caller hears ringback round after round (never silence,
    never dropped) and is put through as soon as a position can answer."""
    w = World("caller", timing=Timing.real(5))
    disp1 = w.add("disp1", keep=True, behaviour=never_answers())
    disp2 = w.add("disp2", behaviour=unreachable())
    w.sim.call_in("caller", "112")
    await w.run(1)  # the call reaches Baton (the router starts the flow on that event)
    e = w.start(emergency_inbound, w["caller"], [disp1, disp2], ring=10)
    await w.run(60)
    assert w.state("caller") != "idle"
    assert "tone:ringback" in w.hears("caller")
    w.behave("disp2", answers())
    await w.run(30)
    assert w.hears("caller") == {"disp2"}
    assert not e.ended
    await e.send("end")
    w.assert_ok()


async def test_a_position_stops_ringing_when_the_emergency_caller_hangs_up() -> None:
    """The caller gives up while a position rings (an always-on line not up yet, and then a
    plain one): the ringing is cancelled at once, not left for the dispatcher to answer a call
    that is gone (baton check warned of it: 'UserHungUp escaped the flow')."""
    for keep in (True, False):
        w = World("caller")
        disp1 = w.add("disp1", keep=keep, behaviour=never_answers())
        w.sim.call_in("caller", "112")
        await w.run(1)
        e = w.start(emergency_inbound, w["caller"], [disp1], ring=20)
        await w.run(2)
        assert w.state("disp1") == "ringing"
        w.sim.hang_up("caller")
        await w.run(0.5)
        assert e.ended
        assert w.state("disp1") == "idle" and w.owner("disp1") is None
        w.assert_ok()


def _ended(w: World, user: str) -> list[tuple[float, str | None]]:
    """When ``user``'s legs ended, and with what cause."""
    return [
        (e.t, e.cause)
        for e in w.kinds("leg.state")
        if isinstance(e, LegStateChanged) and e.user == user and e.state == "ended"
    ]


async def test_a_cancelled_emergency_tells_the_caller_waiting_and_stops_the_ringing() -> None:
    """docs/flows.md, "Letting go on a live line": an emergency cancelled while its caller
    waits (ringback) and a position rings used to let both go — the caller hearing nothing
    until the leak collector hung it up 5 s later, the position ringing for nobody as long.
    Now the ringing stops at once and the caller hears a busy tone (not ringback: nobody will
    answer), then is hung up."""
    w = World("caller")
    disp1 = w.add("disp1", behaviour=never_answers())
    w.sim.call_in("caller", "112")
    await w.run(1)
    e = w.start(emergency_inbound, w["caller"], [disp1], ring=20)
    await w.run(2)
    assert w.state("disp1") == "ringing" and w.hears("caller") == {"tone:ringback"}
    cancelled_at = w.manager.loop.time()
    e.cancel("a test call")
    await w.run(0.5)
    assert w.state("disp1") == "idle" and _ended(w, "disp1")[0][1] == "cancelled"
    assert w.hears("caller") == {"tone:busy"}
    await w.run(2)
    ((t, cause),) = _ended(w, "caller")
    assert cause == "normal" and t - cancelled_at < 2.5  # told, then hung up: not collected
    assert e.outcome is FlowOutcome.CANCELLED
    w.assert_ok(quiescent=True)


async def test_a_cancelled_emergency_leaves_the_parties_talking_in_an_ordinary_call() -> None:
    """Cancelled while the caller talks to a position, an emergency does what ``end`` does:
    the conversation goes on as a ROUTINE call (a cancel, like ``end``, needs the right to
    end emergencies; it must not cut a caller off mid-sentence, nor leave both in silence
    until the collector hangs the caller up)."""
    for spec in (emergency_inbound, emergency_call):
        w = World("caller")
        disp1 = w.add("disp1", keep=True)
        if spec is emergency_inbound:
            w.sim.call_in("caller", "112")
            await w.run(1)
            e = w.start(emergency_inbound, w["caller"], [disp1])
        else:
            e = w.start(emergency_call, disp1, w["caller"])
        await w.run(3)
        assert w.hears("caller") == {"disp1"}
        e.cancel()
        await w.run(10)
        assert w.hears("caller") == {"disp1"} and w.hears("disp1") == {"caller"}
        owner = w.manager.owner_of(w["caller"])
        assert owner is not None and owner.name.startswith("p2p")
        assert owner.priority == Priority.ROUTINE
        assert owner is w.manager.owner_of(disp1)
        w.assert_ok()


async def test_a_cancelled_emergency_tells_the_party_left_waiting_for_a_redial() -> None:
    """The target hung up; the dispatcher waits (declared) for a redial when the emergency is
    cancelled: a plain line hears a busy tone and is hung up, an always-on line is cleared
    and stays up — neither is left on a silent line for the collector."""
    for keep in (False, True):
        w = World("field")
        boss = w.add("boss", keep=keep)
        e = w.start(emergency_call, boss, w["field"])
        await w.run(3)
        w.sim.hang_up("field")
        await w.run(2)
        assert e.state.value == "running" and w.state("boss") == "connected"
        e.cancel()
        await w.run(0.5)
        if keep:
            assert w.state("boss") == "connected" and w.owner("boss") is None
            assert not _ended(w, "boss")
        else:
            assert w.hears("boss") == {"tone:busy"}
            await w.run(2)
            assert [c for _, c in _ended(w, "boss")] == ["normal"]
        w.assert_ok()


@pytest.mark.parametrize("seed", [None, 1, 2])
async def test_end_sent_while_a_redial_rings_stops_the_ringing_at_once(seed: int | None) -> None:
    """An ``end`` sent while a redialled party's phone rang was read only once it answered or
    the ring ran out (60 s): the phone rang on for an emergency that was over. It now stops
    the ringing when sent; the redial fails, the one left hears the busy tone and is hung
    up, as after any ``end``."""
    w = World("boss", "field", timing=None if seed is None else Timing.real(seed))
    e = w.start(emergency_call, w["boss"], w["field"])
    await w.run(5)
    assert w.hears("field") == {"boss"}
    w.sim.hang_up("field")
    await w.run(3)
    w.behave("field", never_answers())
    redial = e.send("redial")
    for _ in range(500):
        if w.state("field") == "ringing":
            break
        await w.run(0.01)
    assert w.state("field") == "ringing"
    assert "tone:ringback" in w.hears("boss")
    sent = asyncio.get_running_loop().time()
    assert await e.send("end") == "ended"
    with pytest.raises(FlowUsageError, match="ended before the party answered"):
        await redial
    assert await e.result() == "ended"
    assert asyncio.get_running_loop().time() - sent < 10.0  # not the 60 s ring
    assert w.state("field") == "idle"
    assert w.state("boss") == "idle"
    assert "tone:busy" in w.heard("boss")
    w.assert_ok(quiescent=True)


@pytest.mark.parametrize("who", ["boss", "field"])  # the dispatcher's line; the target's phone
@pytest.mark.parametrize("seed", [None, 1, 2])
async def test_end_sent_while_the_emergency_call_rings_stops_the_ringing_at_once(
    who: str, seed: int | None
) -> None:
    """An ``end`` sent while the emergency call was being set up was read only once both
    parties answered or a ring ran out (60 s). It now stops the ringing when sent; a party
    already on the line hears the busy tone and is hung up, as after any ``end``."""
    w = World("boss", "field", timing=None if seed is None else Timing.real(seed))
    w.behave(who, never_answers())
    e = w.start(emergency_call, w["boss"], w["field"])
    for _ in range(1000):
        if w.state(who) == "ringing":
            break
        await w.run(0.01)
    assert w.state(who) == "ringing"
    with pytest.raises(FlowUsageError, match="being set up"):  # answered now, not after
        await e.send("redial")
    sent = asyncio.get_running_loop().time()
    assert await e.send("end") == "ended"
    assert await e.result() == "ended"
    assert asyncio.get_running_loop().time() - sent < 10.0  # not the 60 s ring
    assert w.state("boss") == "idle" and w.state("field") == "idle"
    if who == "field":
        assert "tone:busy" in w.heard("boss")
    else:
        assert w.sim.phones["field"].calls == 0  # the target is rung only once the line is up
    w.assert_ok(quiescent=True)


@pytest.mark.parametrize("when", ["ringing", "pause"])  # a position rings; between two rounds
@pytest.mark.parametrize("seed", [None, 1, 2])
async def test_end_sent_while_an_inbound_emergency_is_put_through_acts_then(
    when: str, seed: int | None
) -> None:
    """An ``end`` sent while the positions were rung for an inbound emergency was read only
    once one answered — possibly never. It now stops the ringing (or the pause between two
    rounds) when sent: the caller hears the busy tone and is hung up, as after any ``end``."""
    w = World("caller", timing=None if seed is None else Timing.real(seed))
    d1 = w.add("d1", never_answers() if when == "ringing" else unreachable(), keep=True)
    w.sim.call_in("caller", "112")
    await w.run(1)  # the call reaches Baton (the router starts the flow on that event)
    e = w.start(emergency_inbound, w["caller"], [d1], ring=20.0)
    if when == "ringing":
        for _ in range(1000):
            if w.state("d1") == "ringing":
                break
            await w.run(0.01)
        assert w.state("d1") == "ringing"
    else:
        await w.run(3)  # d1 unreachable: the flow pauses 5 s before the next round
    async with asyncio.timeout(5.0):  # virtual seconds: the answers come now, not after
        with pytest.raises(FlowUsageError, match="put through"):
            await e.send("redial")
        assert await e.send("end") == "ended"
        assert await e.result() == "ended"
    assert w.state("d1") == "idle"
    assert "tone:busy" in w.heard("caller")
    assert w.state("caller") == "idle"
    w.assert_ok(quiescent=True)
