"""Set-ups: the library's flows caught in the middle of their work, on a standard pool of users.

``baton check`` needs them to exercise a flow that acts on a call already in progress (a
barge-in needs a call to barge into); the interaction tests (``tests/flows``) need them to
start a flow that another one then interrupts (an emergency taking a user from a hold, a
transfer, a ringing call). This module is the one table both read.

Rules
-----
* **Built at import.** :data:`SETUPS` is written out below as one literal table; importing this
  module is all it takes, nothing registers itself as a side effect of another import, and the
  module imports nothing of ``baton check`` (:mod:`baton.testing.check` imports it).
* **One pool.** Set-ups play on the users of :data:`FIELD` (field users) and
  :data:`DISPATCHERS` (always-on lines, added with ``keep=True``) of a
  :class:`~baton.testing.world.World`; they may change how a phone behaves.
* **A set-up returns the flow's keyword arguments**; whoever uses it starts the flow
  (:attr:`SetUp.flow`) with them. Randomness comes only from the ``rng`` it is given, so a
  seeded run is reproducible.
* **``baton check`` uses a set-up only where it needs one** (:attr:`SetUp.check`): a flow that
  can start from scratch is explored with arguments drawn from its type hints, which reach
  further than any one set-up. The others exist for the interaction tests.

Theory of operation
-------------------
:func:`check_setup_for` is ``baton check``'s lookup by flow name. A flow author registers a
set-up for their own flow with :func:`baton.testing.check.check_setup`, which adds it to the same
table (docs/guide.md). :attr:`SetUp.focus` names the argument that holds the user the scenario
turns on — the one an interrupting flow takes.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from baton.core.model import User
from baton.flows import DispatcherQueue, call, queued_call
from baton.switch.sim import answers, never_answers
from baton.testing.world import World

__all__ = ["DISPATCHERS", "FIELD", "SETUPS", "Prepare", "SetUp", "check_setup_for"]

FIELD = ("f1", "f2", "f3", "f4", "f5")
DISPATCHERS = ("d1", "d2")

#: Prepare the world (calls to act on, a caller dialling in) and return the flow's arguments.
Prepare = Callable[[World, random.Random], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class SetUp:
    """How to start ``flow`` in the middle of things."""

    flow: str  # the flow it starts
    prepare: Prepare
    #: the argument holding the user the scenario turns on (a user, or a list: its first)
    focus: str | None = None
    #: ``baton check`` starts ``flow`` this way (else from its type hints)
    check: bool = True
    #: the scenario begins once the flow has returned (a settled call)
    settled: bool = False

    def focus_user(self, args: dict[str, Any]) -> User:
        """The user the scenario turns on, among the prepared ``args``."""
        assert self.focus is not None, f"{self.flow}: no focus"
        value = args[self.focus]
        user = value[0] if isinstance(value, list) else value
        assert isinstance(user, User)
        return user


async def _talking(w: World, a: str, b: str) -> None:
    await w.start(call, w[a], w[b]).wait()


# ---- flows acting on a call in progress (baton check needs these)


async def _listen_in(w: World, rng: random.Random) -> dict[str, Any]:
    await _talking(w, "f1", "f2")
    return {"dispatcher": w["d1"], "target": w[rng.choice(["f1", "f2"])]}


async def _cut(w: World, rng: random.Random) -> dict[str, Any]:
    await _talking(w, "f1", "f2")
    return {"target": w["f1"]}


async def _hold(w: World, rng: random.Random) -> dict[str, Any]:
    await _talking(w, "f1", "f2")
    return {"holder": w["f1"], "held": w["f2"]}


async def _transfer(w: World, rng: random.Random) -> dict[str, Any]:
    await _talking(w, "f1", "f2")
    return {"party": w["f1"], "transferor": w["f2"], "target": w["f3"]}


async def _pickup(w: World, rng: random.Random) -> dict[str, Any]:
    w.behave("f1", never_answers())
    w.start(call, w["d2"], w["f1"])
    await w.run(2)
    return {"picker": w["d1"], "ringing": w["f1"]}


async def _inbound(w: World, rng: random.Random) -> dict[str, Any]:
    w.sim.call_in("f1", "f2")
    return {"caller": w["f1"], "callee": w["f2"]}


async def _queued(w: World, rng: random.Random) -> dict[str, Any]:
    w.sim.call_in("f1", "110")
    queue = DispatcherQueue("q", w.manager, [w["d1"], w["d2"]], timeout=20.0)
    return {"caller": w["f1"], "queue": queue}


async def _take(w: World, rng: random.Random) -> dict[str, Any]:
    queue = DispatcherQueue("q", w.manager, [w["d1"], w["d2"]], auto_assign=False)
    w.sim.call_in("f1", "110")
    w.start(queued_call, w["f1"], queue)
    await w.run(1)
    return {"dispatcher": w["d1"], "queue": queue}


async def _emergency_in(w: World, rng: random.Random) -> dict[str, Any]:
    w.sim.call_in("f1", "112")
    return {"caller": w["f1"], "dispatchers": [w["d1"], w["d2"]]}


# ---- flows that start from scratch, caught in a given state (the interaction tests')


async def _call_ringing(w: World, rng: random.Random) -> dict[str, Any]:
    w.behave("f1", never_answers())
    return {"caller": w["d1"], "callee": w["f1"]}


async def _call(w: World, rng: random.Random) -> dict[str, Any]:
    return {"caller": w["d1"], "callee": w["f1"]}


async def _queued_waiting(w: World, rng: random.Random) -> dict[str, Any]:
    queue = DispatcherQueue("q", w.manager, [w["d1"]], auto_assign=False)
    w.sim.call_in("f1", "100")
    return {"caller": w["f1"], "queue": queue}


async def _transfer_ringing(w: World, rng: random.Random) -> dict[str, Any]:
    await _talking(w, "f1", "f2")
    w.behave("f3", answers(30))
    return {"party": w["f1"], "transferor": w["f2"], "target": w["f3"]}


async def _group(w: World, rng: random.Random) -> dict[str, Any]:
    return {"dispatcher": w["d1"], "members": [w["f1"], w["f2"]]}


async def _broadcast(w: World, rng: random.Random) -> dict[str, Any]:
    return {"members": [w["f1"], w["f2"]], "dispatcher": w["d1"]}


async def _roll_call(w: World, rng: random.Random) -> dict[str, Any]:
    w.behave("f1", answers(1))
    return {"members": [w["f1"], w["f2"]], "digit": "1", "ring": 20.0, "confirm_within": 30.0}


async def _polling(w: World, rng: random.Random) -> dict[str, Any]:
    w.behave("f1", never_answers())
    return {"dispatcher": w["d1"], "members": [w["f1"], w["f2"]], "ring": 20.0}


#: set-up name → set-up. A name is the flow's, or the flow's with the state it is caught in.
SETUPS: dict[str, SetUp] = {
    "barge_in": SetUp("barge_in", _listen_in, "target"),
    "monitor": SetUp("monitor", _listen_in, "target"),
    "whisper": SetUp("whisper", _listen_in, "target"),
    "force_release": SetUp("force_release", _cut, "target"),
    "hold": SetUp("hold", _hold, "held"),
    "blind_transfer": SetUp("blind_transfer", _transfer, "target"),
    "attended_transfer": SetUp("attended_transfer", _transfer, "target"),
    "pickup": SetUp("pickup", _pickup, "ringing"),
    "inbound_call": SetUp("inbound_call", _inbound, "caller"),
    "queued_call": SetUp("queued_call", _queued, "caller"),
    "take_call": SetUp("take_call", _take),
    "emergency_inbound": SetUp("emergency_inbound", _emergency_in, "caller"),
    "call": SetUp("call", _call_ringing, "callee", check=False),
    "call(settled)": SetUp("call", _call, "callee", check=False, settled=True),
    "queued_call(waiting)": SetUp("queued_call", _queued_waiting, "caller", check=False),
    "blind_transfer(ringing)": SetUp("blind_transfer", _transfer_ringing, "target", check=False),
    "group_call": SetUp("group_call", _group, "members", check=False),
    "conference": SetUp("conference", _group, "members", check=False),
    "broadcast": SetUp("broadcast", _broadcast, "members", check=False),
    "roll_call": SetUp("roll_call", _roll_call, "members", check=False),
    "polling": SetUp("polling", _polling, "members", check=False),
}


def check_setup_for(flow: str) -> SetUp | None:
    """The set-up ``baton check`` starts ``flow`` with, if it needs one."""
    setup = SETUPS.get(flow)
    return setup if setup is not None and setup.check and setup.flow == flow else None
