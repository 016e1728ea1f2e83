"""Flows meeting flows: an emergency preempting every other flow of the library.

Every test here and elsewhere that drives two library flows against each other carries
``@pytest.mark.interaction(a, b)``; ``test_the_interaction_matrix_in_the_docs_is_true`` checks
that docs/flows.md's matrix marks exactly those pairs.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from baton.core import Flow
from baton.flows import (
    LIBRARY,
    DispatcherQueue,
    attended_transfer,
    barge_in,
    blind_transfer,
    broadcast,
    call,
    conference,
    emergency_call,
    group_call,
    hold,
    monitor,
    polling,
    queued_call,
    roll_call,
    whisper,
)
from baton.switch.sim import answers, never_answers
from baton.testing import World

Setup = Callable[[World], Awaitable[Flow]]


async def _talking(w: World) -> None:
    await w.start(call, w["t"], w["p"]).result()


async def s_call_ringing(w: World) -> Flow:
    w.behave("t", never_answers())
    return w.start(call, w["d"], w["t"])


async def s_call_settled(w: World) -> Flow:
    f = w.start(call, w["d"], w["t"])
    await f.result()
    return f


async def s_queued(w: World) -> Flow:
    q = DispatcherQueue("q", w.manager, [w["d"]], auto_assign=False)
    w.sim.call_in("t", "100")
    return w.start(queued_call, w["t"], q)


async def s_group(w: World) -> Flow:
    return w.start(group_call, w["d"], [w["t"], w["p"]])


async def s_conference(w: World) -> Flow:
    return w.start(conference, w["d"], [w["t"], w["p"]])


async def s_broadcast(w: World) -> Flow:
    return w.start(broadcast, [w["t"], w["p"]], w["d"])


async def s_barge_in(w: World) -> Flow:
    await _talking(w)
    return w.start(barge_in, w["d"], w["t"])


async def s_monitor(w: World) -> Flow:
    await _talking(w)
    return w.start(monitor, w["d"], w["t"])


async def s_whisper(w: World) -> Flow:
    await _talking(w)
    return w.start(whisper, w["d"], w["t"])


async def s_blind_transfer(w: World) -> Flow:
    await w.start(call, w["p"], w["d"]).result()
    w.behave("t", answers(30))
    return w.start(blind_transfer, w["p"], w["d"], w["t"])


async def s_attended_transfer(w: World) -> Flow:
    await w.start(call, w["p"], w["d"]).result()
    return w.start(attended_transfer, w["p"], w["d"], w["t"])


async def s_hold(w: World) -> Flow:
    await _talking(w)
    return w.start(hold, w["p"], w["t"])


async def s_roll_call(w: World) -> Flow:
    w.behave("t", answers(1))
    return w.start(roll_call, [w["t"], w["p"]], "1", 20.0, 30.0)


async def s_polling(w: World) -> Flow:
    w.behave("t", never_answers())
    return w.start(polling, w["d"], [w["t"], w["p"]], 20.0)


SETUPS: dict[str, Setup] = {
    "call": s_call_ringing,
    "call(settled)": s_call_settled,
    "queued_call": s_queued,
    "group_call": s_group,
    "conference": s_conference,
    "broadcast": s_broadcast,
    "barge_in": s_barge_in,
    "monitor": s_monitor,
    "whisper": s_whisper,
    "blind_transfer": s_blind_transfer,
    "attended_transfer": s_attended_transfer,
    "hold": s_hold,
    "roll_call": s_roll_call,
    "polling": s_polling,
}


@pytest.mark.parametrize(
    "victim",
    [
        pytest.param(name, marks=pytest.mark.interaction("emergency_call", name.split("(")[0]))
        for name in SETUPS
    ],
)
async def test_emergency_preempts(victim: str) -> None:
    """The emergency gets the target at once; the preempted flow compensates and the world
    stays consistent; once the emergency is over and grace has passed, nothing leaks."""
    w = World("t", "p", "boss", grace=3.0)
    w.add("d", keep=True)
    flow = await SETUPS[victim](w)
    await w.run(4)
    e = w.start(emergency_call, w["boss"], w["t"])
    await w.run(2)
    if w.state("t") == "ringing":  # the emergency inherited the ringing call: t picks up
        w.sim.answer_now("t")
    await w.run(1)
    assert w.hears("t") == {"boss"}, (victim, w.hears("t"))
    assert w.owner("t") == e.name
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
