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
from baton.flows import call
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
