"""Monitor and whisper, on a two-party call and on a conference."""

from __future__ import annotations

import pytest

from baton.core import FlowUsageError
from baton.flows import call, conference, monitor, whisper
from baton.switch.sim import answers
from baton.testing import World


@pytest.mark.interaction("monitor", "call")
async def test_monitor_a_two_party_call_silently() -> None:
    w = World("a", "b")
    sup = w.add("sup", keep=True)
    await w.start(call, w["a"], w["b"]).result()
    m = w.start(monitor, sup, w["a"])
    await w.run(2)
    assert w.hears("sup") == {"a", "b"}
    assert w.hears("a") == {"b"} and w.hears("b") == {"a"}  # they hear nothing of it
    await m.send("leave")
    await m.result()
    assert w.owner("a").startswith("p2p")
    w.assert_ok()


@pytest.mark.interaction("whisper", "call")
async def test_whisper_is_heard_by_one_party_only() -> None:
    w = World("a", "b")
    sup = w.add("sup", keep=True)
    await w.start(call, w["a"], w["b"]).result()
    f = w.start(whisper, sup, w["a"])
    await w.run(2)
    assert w.hears("a") == {"b", "sup"}
    assert w.hears("b") == {"a"}
    await f.send("leave")
    await f.result()


@pytest.mark.interaction("monitor", "conference")
@pytest.mark.interaction("whisper", "conference")
@pytest.mark.interaction("monitor", "whisper")
async def test_monitor_and_whisper_on_a_conference() -> None:
    w = World("a", "b", "c")
    chair = w.add("chair", keep=True)
    sup = w.add("sup", keep=True)
    coach = w.add("coach", keep=True)
    conf = w.start(conference, chair, [w["a"], w["b"], w["c"]])
    await w.run(3)
    m = w.start(monitor, sup, w["a"])
    wh = w.start(whisper, coach, w["b"])
    await w.run(2)
    assert w.hears("sup") == {"a", "b", "c", "chair"}
    assert w.hears("b") == {"a", "c", "chair", "coach"}
    assert "coach" not in w.hears("a") and "sup" not in w.hears("a")
    assert w.owner("a") == conf.name  # members untouched
    await m.send("leave")
    await wh.send("leave")
    await w.run(1)
    assert w.hears("a") == {"b", "c", "chair"}
    await conf.send("end")
    w.assert_ok()


async def test_cannot_monitor_a_call_being_set_up() -> None:
    w = World("a", "b")
    sup = w.add("sup", keep=True)
    w.behave("b", answers(20))
    w.start(call, w["a"], w["b"])
    await w.run(3)
    with pytest.raises(FlowUsageError, match="not in a settled call"):
        await w.start(monitor, sup, w["a"]).result()
