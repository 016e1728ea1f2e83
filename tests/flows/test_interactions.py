"""Flows meeting flows: an emergency preempting every other flow of the library.

Every test here and elsewhere that drives two library flows against each other carries
``@pytest.mark.interaction(a, b)``; ``test_the_interaction_matrix_in_the_docs_is_true`` checks
that docs/flows.md's matrix marks exactly those pairs.
"""

from __future__ import annotations

import importlib
import random
import re
from pathlib import Path

import pytest

from baton.flows import LIBRARY, emergency_call
from baton.testing import World
from baton.testing.setups import DISPATCHERS, FIELD, SETUPS

#: The set-ups (baton.testing.setups, shared with ``baton check``) an emergency interrupts.
VICTIMS = (
    "call",
    "call(settled)",
    "queued_call(waiting)",
    "group_call",
    "conference",
    "broadcast",
    "barge_in",
    "monitor",
    "whisper",
    "blind_transfer(ringing)",
    "attended_transfer",
    "hold",
    "roll_call",
    "polling",
)


@pytest.mark.parametrize(
    "victim",
    [
        pytest.param(name, marks=pytest.mark.interaction("emergency_call", SETUPS[name].flow))
        for name in VICTIMS
    ],
)
async def test_emergency_preempts(victim: str) -> None:
    """The emergency gets the target at once; the preempted flow compensates and the world
    stays consistent; once the emergency is over and grace has passed, nothing leaks."""
    w = World(*FIELD, "boss", grace=3.0)
    for d in DISPATCHERS:
        w.add(d, keep=True)
    setup = SETUPS[victim]
    args = await setup.prepare(w, random.Random(7))
    flow = w.start(LIBRARY[setup.flow], **args)
    if setup.settled:
        await flow.result()
    target = setup.focus_user(args)
    await w.run(4)
    if not setup.settled:  # the emergency strikes the flow in the middle of its work
        assert not flow.ended, (victim, flow.outcome)
    e = w.start(emergency_call, w["boss"], target)
    await w.run(2)
    if w.state(target.id) == "ringing":  # the emergency inherited the ringing call: pick up
        w.sim.answer_now(target.id)
    await w.run(1)
    assert w.hears(target.id) == {"boss"}, (victim, w.hears(target.id))
    assert w.owner(target.id) == e.name
    w.assert_ok()
    await e.send("end")
    await w.run(1)
    if not flow.ended:  # flows that go on without the target (conference, group call...)
        await flow.stop("test over")
    for f in list(w.manager.flows.values()):
        await f.stop("test over")
    w.sim.hang_up("boss")
    await w.run(5)
    w.assert_ok(quiescent=True)


MATRIX_ROW = re.compile(r"^\|\s*(\w+)\s*\|(.*)\|\s*$")


def _doc_matrix() -> set[frozenset[str]]:
    text = (Path(__file__).parents[2] / "docs" / "flows.md").read_text()
    section = text.split("## Interaction matrix", 1)[1]
    rows = [MATRIX_ROW.match(line) for line in section.splitlines()]
    rows = [r for r in rows if r]
    header = [c.strip() for c in rows[0].group(2).split("|")]
    marked: set[frozenset[str]] = set()
    for r in rows[1:]:
        if set(r.group(2).replace("|", "").strip()) <= {"-", ":", " "}:
            continue
        for col, cell in zip(header, r.group(2).split("|"), strict=False):
            if cell.strip() == "✓":
                marked.add(frozenset((r.group(1), col)))
    return marked


def _tested_pairs() -> set[frozenset[str]]:
    """Every ``interaction`` mark in tests/flows (on functions and on parametrised cases)."""
    pairs: set[frozenset[str]] = set()
    for path in sorted(Path(__file__).parent.glob("test_*.py")):
        module = importlib.import_module(path.stem)
        for name, fn in vars(module).items():
            if not name.startswith("test_"):
                continue
            for mark in getattr(fn, "pytestmark", []):
                if mark.name == "interaction":
                    pairs.add(frozenset(mark.args))
                elif mark.name == "parametrize":
                    for case in mark.args[1]:
                        for m in getattr(case, "marks", ()):
                            if m.name == "interaction":
                                pairs.add(frozenset(m.args))
    return pairs


def test_the_interaction_matrix_in_the_docs_is_true() -> None:
    tested = _tested_pairs()
    names = set(LIBRARY)
    assert all(pair <= names for pair in tested), [p for p in tested if not p <= names]
    documented = _doc_matrix()
    assert documented == tested, {
        "tested but not in the docs": sorted(map(sorted, tested - documented)),
        "in the docs but not tested": sorted(map(sorted, documented - tested)),
    }
