"""The dispatcher queue: priority then FIFO, free positions, explicit takes, races, overflow."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from baton.core import Flow, Priority, User
from baton.core.port import Cause
from baton.flows import (
    AlreadyTaken,
    DispatcherQueue,
    Overflow,
    emergency_call,
    queued_call,
    take_call,
)
from baton.switch.sim import Behaviour, answers, busy, never_answers, rejects, unreachable
from baton.testing import World


def _world(*callers: str, **queue_kw: object) -> tuple[World, DispatcherQueue]:
    w = World(*callers)
    d1 = w.add("d1", keep=True)
    d2 = w.add("d2", keep=True)
    q = DispatcherQueue("ops", w.manager, [d1, d2], **queue_kw)  # type: ignore[arg-type]
    return w, q


async def test_a_free_position_takes_the_call() -> None:
    w, q = _world("c1")
    w.sim.call_in("c1", "100")
    f = w.start(queued_call, w["c1"], q)
    assert await f.result() is w["d1"]
    assert w.hears("c1") == {"d1"}
    w.assert_ok()


async def test_callers_wait_by_priority_then_arrival_and_hear_music() -> None:
    w, q = _world("c1", "c2", "c3", "c4", auto_assign=False)
    flows = {}
    for c, prio in (("c1", 0), ("c2", 0), ("c3", 20), ("c4", 0)):
        w.sim.call_in(c, "100")
        flows[c] = w.start(queued_call, w[c], q, prio)
        await w.run(0.1)
    assert [e.caller.id for e in q.waiting()] == ["c3", "c1", "c2", "c4"]
    assert q.position_of(w["c2"]) == 3
    assert "tone:hold" in w.hears("c2")
    assert q.take(w["d1"]) is w["c3"]
    await flows["c3"].result()
    assert w.hears("d1") == {"c3"}
    w.assert_ok()


@pytest.mark.interaction("take_call", "queued_call")
async def test_two_dispatchers_racing_for_the_same_call() -> None:
    w, q = _world("c1", auto_assign=False)
    w.sim.call_in("c1", "100")
    f = w.start(queued_call, w["c1"], q)
    await w.run(0.5)
    t1 = w.start(take_call, w["d1"], q, w["c1"])
    t2 = w.start(take_call, w["d2"], q, w["c1"])  # same tick
    results = await asyncio.gather(t1.wait(), t2.wait())
    assert sorted(results) == ["completed", "failed"]
    loser = t1 if t1.outcome == "failed" else t2
    assert isinstance(loser.error, AlreadyTaken)
    winner = w["d1"] if loser is t2 else w["d2"]
    assert await f.result() is winner
    assert w.hears("c1") == {winner.id}
    w.assert_ok()


@pytest.mark.parametrize("overflow", [Overflow.BUSY, Overflow.MESSAGE, Overflow.TRANSFER])
async def test_overflow_after_timeout(overflow: Overflow) -> None:
    w = World("c1", "night")
    d1 = w.add("d1", keep=True)
    q = DispatcherQueue(
        "ops",
        w.manager,
        [d1],
        timeout=30,
        overflow=overflow,
        overflow_to=w["night"] if overflow is Overflow.TRANSFER else None,
        auto_assign=False,
    )
    w.sim.call_in("c1", "100")
    f = w.start(queued_call, w["c1"], q)
    await w.run(30.5)
    if overflow is Overflow.BUSY:
        assert await f.result() is None
        assert "tone:busy" in w.heard("c1")
        assert w.state("c1") == "idle"
    elif overflow is Overflow.MESSAGE:
        assert w.sim.is_recorded("c1")
        w.sim.hang_up("c1")
        assert await f.result() is None
        assert not w.sim.recordings
    else:
        await f.result()
        assert w.hears("c1") == {"night"}
    w.assert_ok()


async def test_caller_hangs_up_while_queued_leaves_the_queue() -> None:
    w, q = _world("c1", auto_assign=False)
    w.sim.call_in("c1", "100")
    f = w.start(queued_call, w["c1"], q)
    await w.run(2)
    w.sim.hang_up("c1")
    assert await f.wait() == "failed"
    assert q.waiting() == []
    w.assert_ok(quiescent=True)


@pytest.mark.interaction("call", "queued_call")
async def test_busy_positions_are_not_assigned() -> None:
    from baton.flows import call

    w, q = _world("c1", "x")
    await w.start(call, w["d1"], w["x"]).result()  # d1 talks to x
    w.sim.call_in("c1", "100")
    f = w.start(queued_call, w["c1"], q)
    assert await f.result() is w["d2"]


@pytest.mark.interaction("emergency_call", "queued_call")
async def test_emergency_preempts_a_queued_caller() -> None:
    from baton.flows import emergency_call

    w, q = _world("c1", auto_assign=False)
    boss = w.add("boss")
    w.sim.call_in("c1", "100")
    f = w.start(queued_call, w["c1"], q)
    await w.run(2)
    e = w.start(emergency_call, boss, w["c1"])
    await w.run(5)
    assert f.outcome == "failed"
    assert q.waiting() == []
    assert w.hears("c1") == {"boss"}
    assert await e.send("end", by="d1") == "ended"
    assert await e.result() == "ended"
    w.assert_ok()


def test_queue_validates_its_configuration() -> None:
    from baton.core import FlowUsageError

    w = World()
    with pytest.raises(FlowUsageError, match="overflow_to"):
        DispatcherQueue("q", w.manager, [User("d")], overflow=Overflow.TRANSFER)
    assert Priority.ROUTINE == 0


# ---- no queued caller is ever dropped (issue 13; issue 11 items 7 and 10)
#
# Each case runs twice: switch commands completing at once, and taking time as on a real
# switch. The watch checks, every 50 ms of virtual time, that the caller is never connected in
# silence once the music started, and the flow's result says who took the call.

SLOW = {
    "originate": 0.3,
    "answer": 0.2,
    "bridge": 0.2,
    "play": 0.2,
    "stop_play": 0.2,
    "hangup": 0.3,
    "clear": 0.3,
}
LATENCIES = [pytest.param(None, id="instant"), pytest.param(SLOW, id="latency")]


def _positions(
    latency: dict[str, float] | None, *behaviours: Behaviour | None, **queue_kw: Any
) -> tuple[World, DispatcherQueue]:
    w = World("c1", "c2", "boss", latency=latency)
    ds = [w.add(f"d{i}", b, keep=True) for i, b in enumerate(behaviours, 1)]
    q = DispatcherQueue("ops", w.manager, ds, **queue_kw)
    return w, q


async def _watch(w: World, f: Flow, caller: str, *, limit: float = 200.0) -> list[str]:
    """Run until ``f`` ends; fail if ``caller`` sits connected in silence after the music
    started. Returns the set of things the caller heard, in order of first hearing."""
    heard: list[str] = []
    end = w.manager.now() + limit
    while f.outcome is None:
        assert w.manager.now() < end, f"{f.name} still running after {limit} s"
        await w.run(0.05)
        now = w.hears(caller)
        leg = w.manager.leg_of(w[caller])
        if heard and leg is not None and leg.connected:
            assert now, f"{caller} hears nothing at t={w.manager.now():.2f}"
        heard += [x for x in sorted(now) if x not in heard]
    return heard


def _queue_notes(w: World) -> list[str]:
    return [e.text for e in w.kinds("flow.note")]  # type: ignore[attr-defined]


@pytest.mark.parametrize("latency", LATENCIES)
async def test_a_position_with_no_phone_registered_passes_the_call_on(
    latency: dict[str, float] | None,
) -> None:
    w, q = _positions(latency, unreachable(), answers(2))
    w.sim.call_in("c1", "100")
    f = w.start(queued_call, w["c1"], q)
    heard = await _watch(w, f, "c1")
    assert await f.result() is w["d2"]
    assert heard[0] == "tone:hold" and "d2" in heard
    assert w.hears("c1") == {"d2"}
    assert "d1 has no phone registered: c1 keeps their place in queue ops" in _queue_notes(w)
    assert q.snapshot().offers_failed == 1 and q.snapshot().answered == 1
    w.assert_ok()


@pytest.mark.parametrize("latency", LATENCIES)
async def test_the_only_position_unreachable_keeps_the_caller_queued_until_overflow(
    latency: dict[str, float] | None,
) -> None:
    w, q = _positions(latency, unreachable(), timeout=40, retry_after=5)
    t0 = w.manager.now()
    w.sim.call_in("c1", "100")
    f = w.start(queued_call, w["c1"], q)
    await w.run(20)
    assert w.hears("c1") == {"tone:hold"}  # still waiting, offers retried every 5 s
    assert q.snapshot().offers_failed >= 3
    heard = await _watch(w, f, "c1")
    assert await f.result() is None  # the overflow policy, and only it, ended the call
    assert "tone:busy" in heard
    busy_at = w.sim.phones["c1"].heard[-1][0] - t0
    assert busy_at == pytest.approx(40, abs=0.5)  # not before the queue's timeout
    assert q.snapshot().overflowed == 1
    w.assert_ok()


@pytest.mark.parametrize("latency", LATENCIES)
async def test_a_busy_phone_passes_the_call_on(latency: dict[str, float] | None) -> None:
    w, q = _positions(latency, busy(), answers(1))
    w.sim.call_in("c1", "100")
    f = w.start(queued_call, w["c1"], q)
    await _watch(w, f, "c1")
    assert await f.result() is w["d2"]
    assert "d1 was busy: c1 keeps their place in queue ops" in _queue_notes(w)
    w.assert_ok()


@pytest.mark.parametrize("latency", LATENCIES)
async def test_a_position_not_ready_is_not_offered_calls(
    latency: dict[str, float] | None,
) -> None:
    ready = {"d1": False, "d2": False}
    w, q = _positions(latency, answers(1), answers(1), ready=lambda d: ready[d.id])
    w.sim.call_in("c1", "100")
    f = w.start(queued_call, w["c1"], q)
    await w.run(10)
    assert w.hears("c1") == {"tone:hold"}
    assert w.state("d1") == w.state("d2") == "idle"  # nobody's phone rang
    ready["d2"] = True
    q.dispatch()  # the service does this when a position goes ready
    await _watch(w, f, "c1")
    assert await f.result() is w["d2"]
    assert w.state("d1") == "idle"
    w.assert_ok()


@pytest.mark.parametrize("latency", LATENCIES)
async def test_no_answer_passes_the_call_on_and_reports_the_miss(
    latency: dict[str, float] | None,
) -> None:
    missed: list[tuple[str, Cause]] = []
    w, q = _positions(
        latency,
        never_answers(),
        answers(1),
        ring_timeout=15,
        on_missed=lambda d, cause: missed.append((d.id, cause)),
    )
    w.sim.call_in("c1", "100")
    f = w.start(queued_call, w["c1"], q)
    heard = await _watch(w, f, "c1")
    assert await f.result() is w["d2"]
    assert heard[0] == "tone:hold"
    assert missed == [("d1", Cause.NO_ANSWER)]
    assert w.state("d1") == "idle"  # its ringing call was ended
    w.assert_ok()


@pytest.mark.parametrize("latency", LATENCIES)
async def test_a_declined_offer_goes_back_to_the_queue_keeping_the_callers_place(
    latency: dict[str, float] | None,
) -> None:
    w, q = _positions(latency, rejects(2), retry_after=3)
    w.sim.call_in("c1", "100")
    f1 = w.start(queued_call, w["c1"], q)
    await w.run(0.5)
    w.sim.call_in("c2", "100")
    f2 = w.start(queued_call, w["c2"], q)
    await w.run(3)  # d1 declined c1
    assert [e.caller.id for e in q.callers()] == ["c1", "c2"]
    assert w.hears("c1") == {"tone:hold"} and w.hears("c2") == {"tone:hold"}
    w.behave("d1", answers(1))
    await _watch(w, f1, "c1")
    assert await f1.result() is w["d1"]  # c1 first: they kept their place
    assert f2.outcome is None and w.hears("c2") == {"tone:hold"}
    w.assert_ok()


@pytest.mark.interaction("emergency_call", "queued_call")
@pytest.mark.parametrize("latency", LATENCIES)
async def test_an_emergency_taking_the_position_while_it_rings_requeues_the_caller(
    latency: dict[str, float] | None,
) -> None:
    w, q = _positions(latency, answers(6), answers(6))
    w.sim.call_in("c1", "100")
    f = w.start(queued_call, w["c1"], q)
    await w.run(2)  # d1 rings for c1
    assert q.offered_to(w["d1"]) is w["c1"]
    e = w.start(emergency_call, w["d1"], w["boss"])
    heard = await _watch(w, f, "c1")
    assert await f.result() is w["d2"]  # the next position took the call
    assert heard[0] == "tone:hold" and heard[-1] == "d2"
    assert "d1" not in heard  # never bridged to the position the emergency took
    assert w.owner("d1") == e.name
    assert "d1 was taken by another flow: c1 keeps their place in queue ops" in _queue_notes(w)
    assert await e.send("end", by="d1") == "ended"
    w.assert_ok()


@pytest.mark.interaction("emergency_call", "queued_call")
@pytest.mark.parametrize("latency", LATENCIES)
async def test_a_caller_waiting_for_a_position_an_emergency_holds_hears_music_and_stays(
    latency: dict[str, float] | None,
) -> None:
    w, q = _positions(latency, answers(1), timeout=300)
    e = w.start(emergency_call, w["d1"], w["boss"])
    await w.run(5)
    w.sim.call_in("c1", "100")
    f = w.start(queued_call, w["c1"], q)
    await w.run(60)
    assert w.hears("c1") == {"tone:hold"} and f.outcome is None
    assert await e.send("end", by="d1") == "ended"
    w.sim.hang_up("boss")  # the emergency's call ends: d1 is free again
    heard = await _watch(w, f, "c1")
    assert await f.result() is w["d1"]
    assert heard == ["tone:hold", "d1"]
    w.assert_ok()


@pytest.mark.parametrize("latency", LATENCIES)
async def test_a_busy_dispatcher_taking_a_call_does_not_drop_it(
    latency: dict[str, float] | None,
) -> None:
    from baton.flows import call

    w, q = _positions(latency, answers(1), auto_assign=False)
    await w.start(call, w["d1"], w["boss"]).result()  # d1 talks to boss
    w.sim.call_in("c1", "100")
    f = w.start(queued_call, w["c1"], q)
    await w.run(2)
    await w.start(take_call, w["d1"], q).result()
    await w.run(5)
    assert f.outcome is None and w.hears("c1") == {"tone:hold"}
    assert w.hears("d1") == {"boss"}  # its call untouched
    assert [e.caller.id for e in q.waiting()] == ["c1"]
    w.assert_ok()


@pytest.mark.parametrize("latency", LATENCIES)
async def test_a_position_freed_by_its_call_takes_the_next_caller(
    latency: dict[str, float] | None,
) -> None:
    from baton.flows import call

    w, q = _positions(latency, answers(1))
    await w.start(call, w["d1"], w["boss"]).result()
    w.sim.call_in("c1", "100")
    f = w.start(queued_call, w["c1"], q)
    await w.run(10)
    assert f.outcome is None
    w.sim.hang_up("boss")  # d1's call ends; its always-on line stays up
    await _watch(w, f, "c1")
    assert await f.result() is w["d1"]
    assert w.hears("c1") == {"d1"}
    figures = q.snapshot()
    assert (figures.answered, figures.answered_within, figures.waiting) == (1, 1, 0)
    w.assert_ok()


@pytest.mark.parametrize("latency", LATENCIES)
async def test_the_caller_hanging_up_while_a_position_rings_stops_the_ringing(
    latency: dict[str, float] | None,
) -> None:
    w, q = _positions(latency, never_answers())
    w.sim.call_in("c1", "100")
    f = w.start(queued_call, w["c1"], q)
    await w.run(3)
    assert w.state("d1") == "ringing"
    w.sim.hang_up("c1")
    assert await f.wait() == "failed"
    await w.run(2)
    assert w.state("d1") == "idle"
    assert q.callers() == [] and q.snapshot().abandoned == 1
    w.assert_ok(quiescent=True)


@pytest.mark.parametrize("latency", LATENCIES)
async def test_an_offer_withdrawn_while_it_rings_passes_the_call_on_at_once(
    latency: dict[str, float] | None,
) -> None:
    # The dispatcher logs out while a queued call rings at the position: the offer is taken
    # back at once (the phone stops ringing) and the next ready position is offered the call,
    # rather than the logged-out position ringing on until the ring timeout.
    missed: list[tuple[str, Cause]] = []
    w, q = _positions(
        latency,
        never_answers(),
        answers(1),
        ring_timeout=60,
        on_missed=lambda d, cause: missed.append((d.id, cause)),
    )
    d1_ready = True
    q.ready = lambda d: d is not w["d1"] or d1_ready
    w.sim.call_in("c1", "100")
    f = w.start(queued_call, w["c1"], q)
    await w.run(2)
    assert q.offered_to(w["d1"]) is w["c1"]
    assert w.state("d1") == "ringing"
    d1_ready = False
    assert q.withdraw(w["d1"]) is True
    assert q.withdraw(w["d2"]) is False  # nothing rings there
    heard = await _watch(w, f, "c1", limit=10)
    assert await f.result() is w["d2"]
    assert heard[0] == "tone:hold" and heard[-1] == "d2"
    assert w.state("d1") == "idle"  # its phone stopped ringing
    assert missed == []  # logging out is no missed call
    assert "d1 logged out while the call rang: c1 keeps their place in queue ops" in _queue_notes(w)
    w.assert_ok()
