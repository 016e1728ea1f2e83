"""The dispatcher queue: priority then FIFO, free positions, explicit takes, races, overflow."""

from __future__ import annotations

import asyncio

import pytest

from baton.core import Priority, User
from baton.flows import AlreadyTaken, DispatcherQueue, Overflow, queued_call, take_call
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
