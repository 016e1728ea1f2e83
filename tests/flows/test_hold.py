"""Hold and resume."""

from __future__ import annotations

import pytest

from baton.core import FlowUsageError
from baton.core.port import Prompt
from baton.flows import call, hold
from baton.testing import World


@pytest.mark.interaction("hold", "call")
async def test_hold_and_resume() -> None:
    w = World("a", "b")
    await w.start(call, w["a"], w["b"]).result()
    h = w.start(hold, w["a"], w["b"])
    await w.run(1)
    assert w.hears("b") == {"tone:hold"}
    assert w.hears("a") == set()
    assert await h.send("resume") == "resumed"
    assert await h.result() == "resumed"
    assert w.hears("a") == {"b"}
    assert w.owner("a").startswith("p2p")
    w.assert_ok()


async def test_hold_with_music() -> None:
    w = World("a", "b")
    w.sim.prompt_seconds["moh.wav"] = 30
    await w.start(call, w["a"], w["b"]).result()
    h = w.start(hold, w["a"], w["b"], Prompt("moh.wav"))
    await w.run(1)
    assert w.hears("b") == {"prompt:moh.wav"}
    await h.send("resume")


async def test_held_party_hangs_up() -> None:
    w = World("a", "b", grace=2)
    await w.start(call, w["a"], w["b"]).result()
    h = w.start(hold, w["a"], w["b"])
    await w.run(1)
    w.sim.hang_up("b")
    assert await h.result() == "held party left"
    await w.run(3)
    w.assert_ok(quiescent=True)


async def test_holder_hangs_up_releases_the_held_party() -> None:
    w = World("a", "b")
    await w.start(call, w["a"], w["b"]).result()
    h = w.start(hold, w["a"], w["b"])
    await w.run(1)
    w.sim.hang_up("a")
    assert await h.result() == "holder left"
    assert "tone:busy" in w.heard("b")
    assert w.state("b") == "idle"


async def test_hold_needs_a_call_between_them() -> None:
    w = World("a", "b")
    with pytest.raises(FlowUsageError, match="not talking with"):
        await w.start(hold, w["a"], w["b"]).result()
