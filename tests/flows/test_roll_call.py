"""Roll call and polling."""

from __future__ import annotations

from baton.flows import polling, roll_call
from baton.switch.sim import answers, busy, never_answers
from baton.testing import World


async def test_roll_call_reports_who_answered_and_confirmed() -> None:
    w = World("u1", "u2", "u3", "u4")
    w.behave("u1", answers(1).presses("1", after=1))
    w.behave("u2", answers(1))  # answers, never confirms
    w.behave("u3", busy())
    w.behave("u4", answers(1).presses("7", after=1))  # wrong digit
    r = w.start(roll_call, [w["u1"], w["u2"], w["u3"], w["u4"]])
    report = await r.result()
    assert report == {"u1": "confirmed", "u2": "answered", "u3": "busy", "u4": "answered"}
    starts = [t for t, c, legs in w.sim.commands if c == "originate"]
    assert starts == sorted(starts) and len(set(starts)) == 4  # one after another
    w.assert_ok(quiescent=True)


async def test_roll_call_member_hangs_up_midway() -> None:
    w = World("u1", "u2")
    w.behave("u1", answers(1).then_hangs_up(0.5))
    w.behave("u2", answers(1).presses("1", after=1))
    report = await w.start(roll_call, [w["u1"], w["u2"]]).result()
    assert report == {"u1": "hung up", "u2": "confirmed"}


async def test_polling_stops_at_the_first_answer() -> None:
    w = World("u1", "u2", "u3", "d")
    w.behave("u1", never_answers())
    w.behave("u2", busy())
    p = w.start(polling, w["d"], [w["u1"], w["u2"], w["u3"]], 10.0)
    assert await p.result() == "u3"
    assert w.hears("d") == {"u3"}
    w.assert_ok()


async def test_polling_nobody_answers() -> None:
    w = World("u1", "d", grace=1)
    w.behave("u1", never_answers())
    assert await w.start(polling, w["d"], [w["u1"]], 5.0).result() is None
    await w.run(2)
    w.assert_ok(quiescent=True)
