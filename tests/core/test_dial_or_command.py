"""Session.dial_or_command: a dial that gives way to a command sent while the phone rings."""

from __future__ import annotations

import asyncio

from baton.core import Cause, Command, Leg, Session, User, flow
from baton.switch.sim import answers, never_answers
from baton.testing import World


@flow(commands={"stop": "stop ringing"})
async def ring_until_stopped(s: Session, user: User) -> str:
    await s.claim(user)
    got = await s.dial_or_command(user, timeout=30.0)
    if isinstance(got, Leg):
        await s.hangup(user)
        return "answered"
    assert isinstance(got, Command)
    ringing = s.state_of(user)
    got.reply("stopped")
    await s.hangup(user, Cause.CANCELLED)
    return f"{got.name} while {ringing}"


async def test_a_command_sent_while_the_phone_rings_is_returned_then() -> None:
    w = World("a")
    w.behave("a", never_answers())
    f = w.start(ring_until_stopped, w["a"])
    await w.run(2)
    assert w.state("a") == "ringing"
    loop = asyncio.get_running_loop()
    sent = loop.time()
    assert await f.send("stop") == "stopped"
    assert await f.result() == "stop while ringing"  # the phone rang on until hung up
    assert loop.time() - sent < 1.0
    assert w.state("a") == "idle"
    w.assert_ok(quiescent=True)


async def test_a_command_waiting_already_is_returned_before_anything_rings() -> None:
    w = World("a")
    f = w.start(ring_until_stopped, w["a"])
    f.send("stop")
    assert await f.result() == "stop while idle"
    assert w.sim.phones["a"].calls == 0


async def test_without_a_command_it_is_a_dial() -> None:
    w = World("a")
    w.behave("a", answers(3))
    f = w.start(ring_until_stopped, w["a"])
    assert await f.result() == "answered"
    w.assert_ok(quiescent=True)
