"""Force release: the target is cut with an RFC 4411 reason, the other party told."""

from __future__ import annotations

import pytest

from baton.core import Cause, EndReason, FlowUsageError, PreemptionCause
from baton.flows import DispatcherQueue, OtherParty, call, force_release
from baton.testing import World


@pytest.mark.interaction("force_release", "call")
async def test_force_release_cuts_the_target_and_releases_the_other() -> None:
    w = World("a", "b", "d")
    await w.start(call, w["a"], w["b"]).result()
    f = w.start(force_release, w["a"])
    assert await f.result() == ["b"]
    # the target with a UA preemption that says "force release"; the other party by the flow
    assert {(c, r) for _leg, c, r in w.sim.hangups} == {
        (Cause.PREEMPTED, EndReason("force release", PreemptionCause.UA)),
        (Cause.PREEMPTED, EndReason(f.name, PreemptionCause.UA)),
    }
    assert len(w.sim.hangups) == 2
    assert "tone:preemption" in w.heard("b")
    assert w.state("a") == w.state("b") == "idle"
    w.assert_ok(quiescent=True)


@pytest.mark.interaction("force_release", "queued_call")
async def test_force_release_returns_the_other_party_to_the_queue() -> None:
    w = World("a", "b")
    d1 = w.add("d1", keep=True)
    q = DispatcherQueue("ops", w.manager, [d1], auto_assign=False)
    await w.start(call, w["a"], w["b"]).result()
    await w.start(force_release, w["a"], OtherParty.QUEUE, q).result()
    await w.run(1)
    assert q.position_of(w["b"]) == 1
    assert "tone:hold" in w.hears("b")
    q.take(d1)
    await w.run(1)
    assert w.hears("b") == {"d1"}
    w.assert_ok()


async def test_queue_policy_needs_a_queue() -> None:
    w = World("a")
    with pytest.raises(FlowUsageError, match="needs a queue"):
        await w.start(force_release, w["a"], OtherParty.QUEUE).result()
