"""Library behaviour the mutation run found unpinned (docs/mutants.md): each test kills a
seeded fault that the rest of the suite let through, and names it."""

from __future__ import annotations

from baton.core import P2P, Priority
from baton.flows import call, hold
from baton.testing import World


async def test_resume_restores_the_call_at_its_own_priority() -> None:
    """Kills ``hold_resume_loses_priority``: a routine call put on hold (the hold flow runs at
    PRIORITY) comes back a routine call, not one that a PRIORITY flow can no longer take."""
    w = World("a", "b")
    await w.start(call, w["a"], w["b"]).result()
    h = w.start(hold, w["a"], w["b"])
    await w.run(1)
    assert await h.send("resume") == "resumed"
    await h.wait()
    restored = w.manager.owner_of(w["a"])
    assert isinstance(restored, P2P)
    assert restored.priority == Priority.ROUTINE
    assert w.manager.owner_of(w["b"]) is restored
    w.assert_ok()
