"""An attended transfer's commands take effect while the target's phone rings: a ``cancel``
stops the ringing at once (not when the target answers or the ring times out), a
``complete`` lets the transferor go at once while the party hears ringback."""

from __future__ import annotations

import asyncio

import pytest

from baton.core import Cause
from baton.flows import TransferOutcome, attended_transfer, call
from baton.switch.sim import Timing, answers, never_answers
from baton.testing import World


def _timing(seed: int | None) -> Timing | None:
    return None if seed is None else Timing.real(seed=seed)


async def _ringing(w: World, user: str) -> None:
    for _ in range(500):
        if w.state(user) == "ringing":
            return
        await w.run(0.01)
    raise AssertionError(f"{user} never rang")


@pytest.mark.parametrize("seed", [None, 1, 2, 3])
async def test_cancel_while_the_target_rings_hangs_it_up_at_once(seed: int | None) -> None:
    w = World("a", "b", "c", timing=_timing(seed))
    await w.start(call, w["a"], w["b"]).result()
    w.behave("c", never_answers())
    f = w.start(attended_transfer, w["a"], w["b"], w["c"], 30.0)
    await _ringing(w, "c")
    loop = asyncio.get_running_loop()
    pressed = loop.time()
    assert await f.send("cancel") == "cancelled"
    assert await f.result() is TransferOutcome.CANCELLED
    assert loop.time() - pressed < 5.0  # not the 30 s ring
    assert w.state("c") == "idle"
    assert any(cause is Cause.CANCELLED for _, cause, _ in w.sim.hangups)
    assert w.hears("a") == {"b"} and w.hears("b") == {"a"}  # back together
    w.assert_ok(quiescent=True)


@pytest.mark.parametrize("seed", [None, 1, 2])
async def test_complete_while_the_target_rings_lets_the_transferor_go(seed: int | None) -> None:
    w = World("a", "b", "c", timing=_timing(seed))
    await w.start(call, w["a"], w["b"]).result()
    w.behave("c", answers(10))
    f = w.start(attended_transfer, w["a"], w["b"], w["c"], 30.0)
    await _ringing(w, "c")
    assert await f.send("complete") == "completed"
    await w.run(3)
    assert w.state("b") == "idle"  # left at once, not once the target answered
    assert "tone:ringback" in w.hears("a")  # the party waits for the target, not in silence
    assert await f.result() is TransferOutcome.TRANSFERRED
    assert w.hears("a") == {"c"}
    w.assert_ok(quiescent=True)


async def test_cancel_queued_before_the_target_is_dialled_rings_nobody() -> None:
    w = World("a", "b", "c", latency={"play": 0.5})
    await w.start(call, w["a"], w["b"]).result()
    f = w.start(attended_transfer, w["a"], w["b"], w["c"])
    await w.run(0.1)  # the party's hold music on its way: the target not rung yet
    assert w.state("c") == "idle"
    assert await f.send("cancel") == "cancelled"
    assert await f.result() is TransferOutcome.CANCELLED
    assert w.sim.phones["c"].calls == 0
    assert w.hears("a") == {"b"}
    w.assert_ok(quiescent=True)
