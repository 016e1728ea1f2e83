"""Blind and attended transfers, and a barge-in landing during an attended transfer."""

from __future__ import annotations

import pytest

from baton.core import NoAnswer
from baton.flows import OnFail, TransferOutcome, attended_transfer, barge_in, blind_transfer, call
from baton.switch.sim import answers, never_answers
from baton.testing import World


async def _a_talks_to_b(w: World) -> None:
    await w.start(call, w["a"], w["b"]).result()


@pytest.mark.interaction("blind_transfer", "call")
async def test_blind_transfer() -> None:
    w = World("a", "b", "c")
    await _a_talks_to_b(w)
    f = w.start(blind_transfer, w["a"], w["b"], w["c"])
    await w.run(0.5)
    assert "tone:ringback" in w.hears("a")
    assert w.state("b") == "idle"  # the transferor left at once
    assert await f.result() is TransferOutcome.TRANSFERRED
    assert w.hears("a") == {"c"}
    w.assert_ok(quiescent=True)


async def test_blind_transfer_no_answer_recalls_the_transferor() -> None:
    w = World("a", "b", "c")
    await _a_talks_to_b(w)
    w.behave("c", never_answers())
    f = w.start(blind_transfer, w["a"], w["b"], w["c"], 20.0)
    assert await f.result() is TransferOutcome.RECALLED
    assert w.hears("a") == {"b"}


async def test_blind_transfer_no_answer_release_policy() -> None:
    w = World("a", "b", "c")
    await _a_talks_to_b(w)
    w.behave("c", never_answers())
    f = w.start(blind_transfer, w["a"], w["b"], w["c"], 20.0, OnFail.RELEASE)
    with pytest.raises(NoAnswer):
        await f.result()
    assert "tone:busy" in w.heard("a")
    assert w.state("a") == "idle"


@pytest.mark.interaction("attended_transfer", "call")
async def test_attended_transfer_complete() -> None:
    w = World("a", "b", "c")
    await _a_talks_to_b(w)
    f = w.start(attended_transfer, w["a"], w["b"], w["c"])
    await w.run(3)
    assert w.hears("b") == {"c"}  # consulting
    assert "tone:hold" in w.hears("a")
    assert "b" not in w.hears("a")
    assert await f.send("complete") == "completed"
    assert await f.result() is TransferOutcome.TRANSFERRED
    assert w.hears("a") == {"c"}
    assert w.state("b") == "idle"
    w.assert_ok(quiescent=True)


async def test_attended_transfer_cancel() -> None:
    w = World("a", "b", "c")
    await _a_talks_to_b(w)
    f = w.start(attended_transfer, w["a"], w["b"], w["c"])
    await w.run(3)
    await f.send("cancel")
    assert await f.result() is TransferOutcome.CANCELLED
    assert w.hears("a") == {"b"}
    assert w.state("c") == "idle"


async def test_attended_transfer_transferor_hangs_up_completes() -> None:
    w = World("a", "b", "c")
    await _a_talks_to_b(w)
    f = w.start(attended_transfer, w["a"], w["b"], w["c"])
    await w.run(3)
    w.sim.hang_up("b")
    assert await f.result() is TransferOutcome.TRANSFERRED
    assert w.hears("a") == {"c"}


async def test_attended_transfer_target_busy_goes_back() -> None:
    w = World("a", "b", "c")
    await _a_talks_to_b(w)
    w.behave("c", answers(100))
    f = w.start(attended_transfer, w["a"], w["b"], w["c"], 10.0)
    assert await f.result() is TransferOutcome.CANCELLED
    assert w.hears("a") == {"b"}


@pytest.mark.interaction("barge_in", "attended_transfer")
async def test_barge_in_during_attended_transfer() -> None:
    """A supervisor barges into the consultation: the transfer is off, the held party is told
    and released, and when the supervisor leaves the consultation becomes a normal call."""
    w = World("a", "b", "c")
    sup = w.add("sup", keep=True)
    await _a_talks_to_b(w)
    t = w.start(attended_transfer, w["a"], w["b"], w["c"])
    await w.run(3)
    bi = w.start(barge_in, sup, w["b"])
    await w.run(1)
    assert w.hears("b") == {"c", "sup"}
    assert await t.result() is TransferOutcome.PREEMPTED
    await w.run(4)
    assert "tone:preemption" in w.heard("a")
    assert w.state("a") == "idle"
    await bi.send("leave")
    await bi.result()
    assert w.hears("b") == {"c"}
    w.assert_ok()


async def test_attended_transfer_left_by_both_others_is_abandoned_whatever_their_names() -> None:
    """The transferor and the target hang up in the same instant: the held party is told and
    released, and the outcome is ABANDONED — decided by what interrupted the transfer (a
    hang-up), not by the words of a message that happens to name a user "preempted-line"."""
    w = World("a", "preempted-line", "c")
    await w.start(call, w["a"], w["preempted-line"]).result()
    f = w.start(attended_transfer, w["a"], w["preempted-line"], w["c"])
    await w.run(3)
    assert w.hears("c") == {"preempted-line"}  # consulting
    w.sim.hang_up("preempted-line")
    w.sim.hang_up("c")
    assert await f.result() is TransferOutcome.ABANDONED
    await w.run(5)
    assert "tone:preemption" in w.heard("a")
    assert w.state("a") == "idle"
    w.assert_ok()
