"""``baton check`` set-ups for the library flows that act on a call already in progress."""

from __future__ import annotations

import random
from typing import Any

from baton.flows import DispatcherQueue, call, queued_call
from baton.switch.sim import never_answers
from baton.testing.check import check_setup
from baton.testing.world import World


async def _talking(w: World, a: str, b: str) -> None:
    await w.start(call, w[a], w[b]).wait()


@check_setup("barge_in")
@check_setup("monitor")
@check_setup("whisper")
async def _listen_in(w: World, rng: random.Random) -> dict[str, Any]:
    await _talking(w, "f1", "f2")
    return {"dispatcher": w["d1"], "target": w[rng.choice(["f1", "f2"])]}


@check_setup("force_release")
async def _cut(w: World, rng: random.Random) -> dict[str, Any]:
    await _talking(w, "f1", "f2")
    return {"target": w["f1"]}


@check_setup("hold")
async def _hold(w: World, rng: random.Random) -> dict[str, Any]:
    await _talking(w, "f1", "f2")
    return {"holder": w["f1"], "held": w["f2"]}


@check_setup("blind_transfer")
@check_setup("attended_transfer")
async def _transfer(w: World, rng: random.Random) -> dict[str, Any]:
    await _talking(w, "f1", "f2")
    return {"party": w["f1"], "transferor": w["f2"], "target": w["f3"]}


@check_setup("pickup")
async def _pickup(w: World, rng: random.Random) -> dict[str, Any]:
    w.behave("f1", never_answers())
    w.start(call, w["d2"], w["f1"])
    await w.run(2)
    return {"picker": w["d1"], "ringing": w["f1"]}


@check_setup("inbound_call")
async def _inbound(w: World, rng: random.Random) -> dict[str, Any]:
    w.sim.call_in("f1", "f2")
    return {"caller": w["f1"], "callee": w["f2"]}


@check_setup("queued_call")
async def _queued(w: World, rng: random.Random) -> dict[str, Any]:
    w.sim.call_in("f1", "110")
    queue = DispatcherQueue("q", w.manager, [w["d1"], w["d2"]], timeout=20.0)
    return {"caller": w["f1"], "queue": queue}


@check_setup("take_call")
async def _take(w: World, rng: random.Random) -> dict[str, Any]:
    queue = DispatcherQueue("q", w.manager, [w["d1"], w["d2"]], auto_assign=False)
    w.sim.call_in("f1", "110")
    w.start(queued_call, w["f1"], queue)
    await w.run(1)
    return {"dispatcher": w["d1"], "queue": queue}


@check_setup("emergency_inbound")
async def _emergency_in(w: World, rng: random.Random) -> dict[str, Any]:
    w.sim.call_in("f1", "112")
    return {"caller": w["f1"], "dispatchers": [w["d1"], w["d2"]]}
