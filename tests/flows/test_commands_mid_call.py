"""Commands sent to a running flow, landing while the switch is busy or a party leaves: found
by the wide random mix (tests/flows/test_random_mix_wide.py), which sends every command a flow
takes, with its arguments, at random moments. Each test pins what docs/flows.md promises —
nobody left in silence — and the World's watch checks every invariant at every step.
"""

from __future__ import annotations

import asyncio

import pytest

from baton.flows import (
    call,
    conference,
    emergency_call,
    emergency_inbound,
    force_release,
    group_call,
)
from baton.switch.sim import answers
from baton.testing import World


@pytest.mark.parametrize("how", ["hangs up", "dies"])
async def test_a_redial_broken_by_a_hang_up_leaves_the_dispatcher_waiting_not_silent(
    how: str,
) -> None:
    """``redial`` on a connected emergency re-bridges the parties; the target hangs up while the
    switch carries the bridge out. The dispatcher is in the declared wait for redial or end
    (before: it sat on a silent line until the emergency ended — dead air)."""
    w = World("t", latency={"bridge": 0.5})
    d = w.add("d", keep=True)
    e = w.start(emergency_call, d, w["t"], ring=8.0)
    await w.run(4)
    assert w.hears("d") == {"t"}
    reply = e.send("redial")
    await w.run(0.2)  # the bridge is on its way
    if how == "hangs up":
        w.sim.hang_up("t")
    else:
        w.sim.kill("t")
    await w.run(20)
    assert reply.done() and reply.exception() is not None
    assert w.owner("d") == e.name
    w.assert_ok()  # no dead air for d
    again = e.send("redial")  # the target is called back and the emergency goes on
    await w.run(10)
    assert again.result() == "connected"
    assert w.hears("d") == {"t"}
    await e.send("end")
    await w.run(3)
    w.assert_ok(quiescent=True)


async def test_a_redial_of_an_inbound_emergency_broken_by_a_hang_up_is_not_dead_air() -> None:
    """The same on an inbound emergency: the caller hangs up as the redial bridges."""
    w = World("c", latency={"bridge": 0.5})
    d = w.add("d", keep=True)
    w.sim.call_in("c", "112")
    e = w.start(emergency_inbound, w["c"], [d], ring=6.0)
    await w.run(4)
    assert w.hears("d") == {"c"}
    reply = e.send("redial")
    await w.run(0.2)
    w.sim.hang_up("c")
    await w.run(20)
    assert reply.done() and reply.exception() is not None
    w.assert_ok()
    await e.send("end")
    await w.run(3)
    w.assert_ok(quiescent=True)


@pytest.mark.parametrize("command", ["kick", "mute", "listen"])
async def test_a_conference_dispatcher_left_hearing_nobody_waits_not_in_silence(
    command: str,
) -> None:
    """The dispatcher kicks, mutes or sets to listen the conference's only member: nobody is
    heard any more. The dispatcher is in the conference's declared wait (before: dead air
    until the conference ended); an ``unmute``/``speak`` or an ``add`` is heard again."""
    w = World("a", "b", behaviour=answers(1))
    d = w.add("d", keep=True)
    c = w.start(conference, d, [w["a"]], ring=8.0)
    await w.run(4)
    assert w.hears("d") == {"a"}
    assert await c.send(command, user="a") in ("kicked", "muted", "listen")
    await w.run(15)
    w.assert_ok()  # no dead air for d
    if command == "kick":
        await c.send("add", user="b")
        await w.run(4)
        assert w.hears("d") == {"b"}
    else:
        await c.send("speak", user="a")
        await w.run(1)
        assert w.hears("d") == {"a"}
    await c.send("end")
    await w.run(3)
    w.assert_ok(quiescent=True)


@pytest.mark.parametrize("spec", [conference, group_call])
@pytest.mark.parametrize("how", ["hangs up", "taken"])
async def test_a_dispatcher_lost_while_a_member_is_taken_ends_the_call(
    spec: object, how: str
) -> None:
    """The dispatcher is lost (hangs up, or an emergency takes it) while the call takes its
    first member from a P2P (the switch is slow to clear). The news is raised by the claim of
    the next member: it ends the call — before, it was swallowed as "the next member is busy"
    and the member who joined sat in a room with nobody until the conference was ended."""
    w = World("a", "p", "b", "t", latency={"clear": 0.6})
    d = w.add("d", keep=True)
    await w.start(call, w["a"], w["p"]).result()
    c = w.start(spec, d, [w["a"], w["b"]], ring=8.0)  # type: ignore[arg-type]
    await w.run(1.2)  # d is up; a is being taken from its call, its media being cleared
    assert w.owner("a") == c.name and not c.ended
    if how == "hangs up":
        w.sim.hang_up("d")
    else:
        w.start(emergency_call, d, w["t"], ring=8.0)
    await w.run(5)
    assert c.ended and c.outcome == "completed"
    assert c.value is not None and c.value.get("b") != "busy"  # nobody passed over as busy
    assert w.sim.leg_of("a") is None and w.sim.leg_of("b") is None  # members hung up
    w.assert_ok()


@pytest.mark.parametrize("when", ["while taken", "as granted"])
async def test_force_release_whose_other_party_hangs_up_still_ends_the_targets_call(
    when: str,
) -> None:
    """The other party hangs up while the force release takes the call (or in the instant
    its claim is granted): the target's call is ended all the same — before, the claim (or
    the next operation) raised ``UserHungUp``, the flow failed and the target sat on the line
    in silence until the leak collector hung it up (found by ``baton check force_release``
    once the preemption's clear counted as an await point of the flow's own claim)."""
    w = World("f1", "f2", latency={"clear": 0.4} if when == "while taken" else None)
    await w.start(call, w["f1"], w["f2"]).result()
    f = w.start(force_release, w["f1"])
    if when == "while taken":
        await w.run(0.2)
    else:
        await asyncio.sleep(0)  # the claim is granted in this tick; the hang-up lands next
    w.sim.hang_up("f2")
    await w.run(1)
    assert f.outcome == "completed" and f.value == ["f2"]
    assert w.sim.leg_of("f1") is None  # ended by the force release, not by the collector
    await w.run(10)
    assert not w.kinds("leg.collected")
    w.assert_ok(quiescent=True)


async def test_a_redial_whose_dispatcher_hangs_up_while_the_target_rings_cancels_the_ring() -> None:
    """The target hung up; ``redial`` rings it while the dispatcher hears ringback; the
    dispatcher hangs up before the target answers. The target's ringing is cancelled — before,
    the call went on, the target answered and sat held by the emergency hearing nobody (dead
    air) until the emergency ended. A later ``redial`` calls both again."""
    w = World("t", behaviour=answers(3))
    d = w.add("d", keep=True)
    e = w.start(emergency_call, d, w["t"], ring=8.0)
    await w.run(8)
    assert w.hears("d") == {"t"}
    w.sim.hang_up("t")
    await w.run(1)
    reply = e.send("redial")
    await w.run(1)
    assert w.state("t") == "ringing" and w.hears("d") == {"tone:ringback"}
    w.sim.hang_up("d")
    await w.run(10)
    assert reply.done() and reply.exception() is not None
    assert w.state("t") == "idle"
    w.assert_ok()
    again = e.send("redial")
    await w.run(10)
    assert again.result() == "connected" and w.hears("d") == {"t"}
    await e.send("end")
    await w.run(3)
    w.assert_ok(quiescent=True)


async def test_an_emergency_whose_ringback_fails_keeps_the_dispatcher_waiting_not_silent() -> None:
    """The switch refuses the dispatcher's ringback while the target's phone rings (a call the
    emergency took over): the emergency waits for the target to answer, then for a redial.
    Meanwhile the dispatcher is in the declared wait — before, it sat on a silent line for the
    whole ring (dead air)."""
    w = World("t", "x", behaviour=answers(8))
    w.behave("x", answers(0.5))
    d = w.add("d", keep=True, behaviour=answers(0.5))
    w.start(call, w["x"], w["t"])  # t rings: a call the emergency takes over
    await w.run(2)
    assert w.state("t") == "ringing"
    e = w.start(emergency_call, d, w["t"], ring=8.0)
    await w.run(0.3)  # the call's preemption tone to x is out; d's line is being dialled
    w.sim.fail_next("play")  # d's ringback
    await w.run(12)
    assert w.state("t") == "connected"  # answered the call the emergency took over
    w.assert_ok()  # no dead air for d while t rang
    reply = e.send("redial")
    await w.run(8)
    assert reply.result() == "connected" and w.hears("d") == {"t"}
    await e.send("end")
    await w.run(3)
    w.assert_ok(quiescent=True)
