"""The sim keeps a real switch's order: commands on one leg take effect in the order they were
issued, and events of one leg arrive in order — also when two of them fall due at the same
instant (the event loop's timer heap does not keep equal deadlines in insertion order).

Found by the library state machine at scale: a PTT group's originate and the hang-up of its
clean-up were issued in one instant; the hang-up landed first, the originate after it, and the
phone was left in a call the core had ended (a ghost leg, and dead air for the next call)."""

from __future__ import annotations

import asyncio

import pytest

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
