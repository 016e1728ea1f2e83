"""Tests of the escort call, written with baton.testing (the guide's step 5)."""

from __future__ import annotations

from escort_flows import escort_call

from baton.core import Priority
from baton.flows import emergency_call
from baton.testing import (
    World,
    answers,
    assert_hears,
    assert_no_leaks,
    assert_owner,
    assert_played,
    assert_recorded,
    busy,
)
from baton.testing.check import check_flow, default_against, parse_schedule


def _world(world: World) -> World:
    for user in ("field", "sup", "boss"):
        world.add(user)
    world.add("disp", keep=True)
    return world


async def test_escort_records_and_brings_the_supervisor_in_on_9(world: World) -> None:
    w = _world(world)
    w.behave("field", answers(2).presses("9", after=5))
    f = w.start(escort_call, w["disp"], w["field"], w["sup"])
    await w.run(4)
    assert_hears(w, "field", {"disp"})
    assert_recorded(w, "field")
    assert_owner(w, "field", flow=f, priority=Priority.IMMEDIATE)
    await w.run(6)  # field pressed 9 at t=7; the supervisor answers a second later
    assert_hears(w, "field", {"disp", "sup"})
    assert_played(w, "sup", "tone:confirm")
    assert await f.send("end") == "ended"
    assert await f.result() == "ended"
    await w.run(6)
    assert_no_leaks(w)


async def test_busy_supervisor_the_escort_goes_on(world: World) -> None:
    w = _world(world)
    w.behave("field", answers(1).presses("9", after=2))
    w.behave("sup", busy())
    f = w.start(escort_call, w["disp"], w["field"], w["sup"])
    await w.run(6)
    assert_hears(w, "field", {"disp"})
    assert any("could not join: busy" in getattr(e, "text", "") for e in w.events)
    await f.send("end")


async def test_an_emergency_takes_the_field_user(world: World) -> None:
    w = _world(world)
    f = w.start(escort_call, w["disp"], w["field"], w["sup"])
    await w.run(4)
    e = w.start(emergency_call, w["boss"], w["field"])
    await w.run(3)
    assert_hears(w, "field", {"boss"})
    assert await f.result() == "ended"  # the escort ended cleanly, its recording stopped
    assert_recorded(w, "field", False)
    await e.send("end")


def test_escort_passes_baton_check() -> None:
    # What `baton check escort_flows:escort_call` runs (docs/guide.md, step 7): its defaults,
    # 200 schedules from seed 1 — the guide promises it says ok.
    report = check_flow(escort_call, default_against(escort_call))
    failure = report.first_failure()
    assert report.ok, failure and (str(failure.schedule), [f.message for f in failure.findings])
    assert report.runs == 200


def test_a_contending_flow_never_gets_one_user_in_two_roles() -> None:
    # `contend(f2, escort_call)` aims a second escort at f2 through its first user parameter;
    # here its field parameter had drawn f2 as well, and the checker started an escort of f2
    # by f2 (alone in its meeting: dead air) — a flow nobody contends with. Found by the CLI.
    schedule = parse_schedule(
        "@0 preempt(f1, whisper) ; @2 contend(d1, group_call) ; @4 contend(f2, escort_call) ;"
        " slow switch",
        seed=1000039,
    )
    report = check_flow(escort_call, default_against(escort_call), replay=schedule)
    failure = report.first_failure()
    assert report.ok, failure and [f.message for f in failure.findings]


async def test_the_dispatcher_hears_ringback_while_a_slow_field_phone_rings(world: World) -> None:
    # Invariant 11 (docs/design.md): the dispatcher's line is up while the field unit's phone
    # rings for six seconds; silence there is dead air, reported by the world fixture.
    w = _world(world)
    w.behave("field", answers(6))
    f = w.start(escort_call, w["disp"], w["field"], w["sup"])
    await w.run(3)
    assert w.sim.played_to("disp") and w.state("field") == "ringing"
    await w.run(5)
    assert_hears(w, "field", {"disp"})
    assert await f.send("end") == "ended"
    await w.run(6)
    assert_no_leaks(w)


async def test_a_busy_field_unit_leaves_the_dispatcher_line_idle(world: World) -> None:
    w = _world(world)
    w.behave("field", busy())
    f = w.start(escort_call, w["disp"], w["field"], w["sup"])
    await w.run(10)
    assert f.ended
    assert not w.sim.played_to("disp") and w.hears("disp") == set()
