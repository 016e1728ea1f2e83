"""The sim keeps a real switch's order: commands on one leg take effect in the order they were
issued, and events of one leg arrive in order — also when two of them fall due at the same
instant (the event loop's timer heap does not keep equal deadlines in insertion order).

Found by the library state machine at scale: a PTT group's originate and the hang-up of its
clean-up were issued in one instant; the hang-up landed first, the originate after it, and the
phone was left in a call the core had ended (a ghost leg, and dead air for the next call)."""

from __future__ import annotations

import asyncio

import pytest

from baton.core import Priority, Session, User, flow
from baton.core.port import LegAnswered, LegRinging, SwitchEvent
from baton.flows import call, inbound_call
from baton.switch.sim import SimSwitch, Timing, answers
from baton.testing import World


@pytest.mark.parametrize("crowd", range(12))
async def test_a_hang_up_due_with_its_originate_lands_after_it(crowd: int) -> None:
    sim = SimSwitch(timing=Timing(commands={"originate": 0.5, "hangup": 0.2}))
    sim.set_listener(lambda ev: None)
    sim.add_phone("u", answers(0.1))
    loop = asyncio.get_running_loop()
    for _ in range(crowd):  # other timers due at the same instant reshuffle the heap
        loop.call_at(loop.time() + 0.5, lambda: None)
    await asyncio.gather(sim.originate("L1", "u"), sim.hangup("L1"))
    await asyncio.sleep(2)
    assert "L1" not in sim.legs


async def test_events_of_one_leg_due_at_one_instant_arrive_in_order() -> None:
    got: list[SwitchEvent] = []
    sim = SimSwitch(timing=Timing(events=0.3))
    sim.set_listener(got.append)
    sim.add_phone("u", answers(0.0))
    loop = asyncio.get_running_loop()
    for _ in range(7):
        loop.call_at(loop.time() + 0.4, lambda: None)
    await sim.originate("L1", "u")
    await asyncio.sleep(2)
    kinds = [type(ev) for ev in got if getattr(ev, "leg", None) == "L1"]
    assert kinds.index(LegRinging) < kinds.index(LegAnswered)


async def test_an_inbound_call_refused_while_the_switch_fails_is_refused_again() -> None:
    """A user on a call calls in again: the core refuses the second call (busy). The switch
    failing that refusal left the phone ringing in a call the core never knew of (found by the
    library state machine once the World looked for such ghosts at the switch)."""
    w = World("u", "v")
    await w.start(call, w["u"], w["v"]).result()
    w.sim.fail_next("hangup")
    second = w.sim.call_in("u", "112")
    await w.run(3)
    assert second not in w.sim.legs
    assert w.hears("u") == {"v"}
    for user in ("u", "v"):
        w.sim.hang_up(user)
    await w.run(10)
    w.assert_ok(quiescent=True)


async def test_the_watch_listens_on_the_call_the_core_knows_not_on_a_ghost() -> None:
    """The switch refused twice to end a ringing call (the core gave up and said so); that
    ghost call was answered later. The same phone's next call is the one the core knows: the
    watch must judge what the user hears on that call — on the ghost it heard nothing, a false
    dead air (found by the library state machine). The ghost, reported by the core, is no
    silent leak either."""
    w = World("u", "v", "x")
    w.behave("u", answers(3))
    f = w.start(call, w["x"], w["u"])
    await w.run(1.5)  # u rings
    w.sim.fail_next("hangup")
    w.sim.fail_next("hangup")
    await f.stop("operator")
    await w.run(5)  # the ghost was answered at the switch
    w.behave("u", answers(1))
    w.sim.call_in("u", "v")
    w.start(inbound_call, w["u"], w["v"])
    await w.run(10)
    leg = w.manager.ledger.records["u"].live_leg
    assert leg is not None and w.sim.hears_on(leg.id) == {"v"}
    assert w.sim.leg_of("u").id != leg.id  # type: ignore[union-attr]  # (the sim maps u to the ghost)
    assert w.problems() == []
    for user in ("u", "v", "x"):
        w.sim.hang_up(user)
    await w.run(10)
    assert not [p for p in w.problems(quiescent=True) if "unknown to the core" in p]


@flow(priority=Priority.ROUTINE)
async def _call_then_hang_up(s: Session, u: User) -> None:
    await s.claim(u)
    await s.dial(u)
    await s.hangup(u)
    await s.sleep(10)


async def test_a_hang_up_whose_issuer_is_cancelled_is_still_retried_if_the_switch_fails() -> None:
    """The core ends a leg, then tells the switch. The flow hanging up was cancelled while the
    switch carried the hang-up out — and the switch failed it: nobody was left to see the
    failure, no retry, and the phone stayed in a call the core had ended (found by the library
    state machine: a roll call cancelled as it hung up its member)."""
    w = World("u", latency={"hangup": 0.5})
    w.sim.fail_next("hangup")
    f = w.start(_call_then_hang_up, w["u"])
    await w.run(1.3)  # u answered at 1.1; the flow's hang-up lands at 1.6
    assert w.manager.ledger.records["u"].live_leg is None  # ended by the core already
    assert [leg.state for leg in w.sim.legs.values() if leg.user == "u"] == ["connected"]
    f.cancel("operator")
    await w.run(5)
    assert [leg.id for leg in w.sim.legs.values() if leg.user == "u"] == []
