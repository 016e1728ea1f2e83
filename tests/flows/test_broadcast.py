"""Broadcasts: a recorded message, or the dispatcher's voice; members listen only."""

from __future__ import annotations

import pytest

from baton.core import BatonError
from baton.core.port import Prompt
from baton.flows import broadcast
from baton.switch.sim import never_answers
from baton.testing import World


async def test_recorded_message_to_everyone_who_answered() -> None:
    w = World("m1", "m2", "m3")
    w.behave("m3", never_answers())
    w.sim.prompt_seconds["alert.wav"] = 5
    b = w.start(broadcast, [w["m1"], w["m2"], w["m3"]], None, Prompt("alert.wav"), 2, 10.0, 8.0)
    fate = await b.result()
    assert w.heard("m1") == ["prompt:alert.wav", "prompt:alert.wav"]
    assert fate == {"m1": "joined", "m2": "joined", "m3": "no_answer"}
    assert w.state("m1") == "idle"
    w.assert_ok(quiescent=True)


async def test_dispatcher_voice_members_listen_only() -> None:
    w = World("m1", "m2")
    d = w.add("d", keep=True)
    b = w.start(broadcast, [w["m1"], w["m2"]], d)
    await w.run(3)
    assert w.hears("m1") == {"d"}  # members hear the dispatcher, not each other
    assert w.hears("d") == set()  # nobody is heard
    await b.send("end")
    await b.result()


async def test_broadcast_needs_something_to_say() -> None:
    w = World("m1")
    with pytest.raises(BatonError, match="needs a message or a dispatcher"):
        await w.start(broadcast, [w["m1"]]).result()
