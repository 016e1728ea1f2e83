"""The numbering plan, on the sim in virtual time: which flow an inbound call starts."""

from __future__ import annotations

from pathlib import Path

from baton.core import User
from baton.flows import LIBRARY, DispatcherQueue
from baton.service.config import Config
from baton.service.routing import Router, dialled_number
from baton.switch.sim import never_answers
from baton.testing import World

from .helpers import make_config


def world(tmp_path: Path) -> tuple[World, Config, list[tuple[str, str]]]:
    config = make_config(tmp_path)
    w = World()
    for u in config.users:
        w.add(User(u.id, name=u.display_name, numbers=u.numbers, keep=u.keep))
    positions = [w[u.id] for u in config.positions]
    queue = DispatcherQueue("dispatch", w.manager, positions, timeout=30)
    started: list[tuple[str, str]] = []
    w.manager.router = Router(
        config, LIBRARY, queue=lambda: queue, started=lambda f, who: started.append((f, who))
    )
    return w, config, started


def test_dialled_numbers() -> None:
    assert dialled_number("1001") == "1001"
    assert dialled_number("sip:1001@baton.local;user=phone") == "1001"
    assert dialled_number("tel:+4930123;phone-context=x") == "+4930123"


async def test_a_user_number_starts_an_inbound_call(tmp_path: Path) -> None:
    w, _, started = world(tmp_path)
    w.sim.call_in("unit1", "1002")
    await w.run(3)
    assert started == [("inbound_call#1", "phone:unit1")]
    assert w.hears("unit1") == {"unit2"} and w.state("unit2") == "talking"
    w.assert_ok()
    await w.close()


async def test_a_room_number_joins_the_room_until_the_last_leaves(tmp_path: Path) -> None:
    w, _, started = world(tmp_path)
    w.sim.call_in("unit1", "3000")
    w.sim.call_in("unit2", "sip:3000@baton")
    await w.run(1)
    assert [f for f, _ in started] == ["dial_in#1", "dial_in#2"]
    assert w.manager.meeting("ops").members.keys() == {w["unit1"], w["unit2"]}
    assert w.hears("unit1") == {"unit2"}
    w.sim.hang_up("unit1")
    await w.run(1)
    assert w.state("unit2") == "meeting" and w.owner("unit2") == "meetingcall#1"
    w.sim.hang_up("unit2")
    await w.run(1)
    assert w.manager.meetings() == []
    w.assert_ok(quiescent=True)
    await w.close()


async def test_a_room_number_needs_the_dial_in_permission(tmp_path: Path) -> None:
    # An observer ("sees the console, changes nothing": no permission at all) dialled the
    # operations room and joined it, talking and listening: the router checked every flow's
    # permission but the room's (dial_in: `call`). Now refused like any other number.
    w, _, started = world(tmp_path)
    w.sim.call_in("obs1", "3000")
    await w.run(1)
    assert started == [("unroutable#1", "phone:obs1")]
    assert w.sim.hangups[-1][1].value == "rejected"
    assert w.manager.meetings() == []
    w.assert_ok()
    await w.close()


async def test_group_numbers_need_the_group_call_permission(tmp_path: Path) -> None:
    w, _, started = world(tmp_path)
    w.sim.call_in("unit3", "801")  # a field unit may not start a group call: rejected
    await w.run(1)
    assert started == [("unroutable#1", "phone:unit3")]
    assert w.sim.hangups[-1][1].value == "rejected"
    w.sim.call_in("disp1", "801")  # a dispatcher may: answered, then the members are rung
    await w.run(3)
    assert started[-1] == ("group_dial_in#1", "phone:disp1")
    assert w.hears("disp1") == {"unit1", "unit2"}
    w.manager.flows["group_dial_in#1"].send("end", by="disp1")
    await w.run(1)
    assert w.state("unit1") == "idle" and "group_dial_in#1" not in w.manager.flows
    w.assert_ok()
    await w.close()


async def test_a_ptt_group_number_opens_a_push_to_talk_group_with_the_caller_talking(
    tmp_path: Path,
) -> None:
    w, _, started = world(tmp_path)
    w.sim.call_in("unit3", "802")  # field units may use PTT groups
    await w.run(3)
    assert started == [("ptt_dial_in#1", "phone:unit3")]
    assert w.hears("unit1") == set() and w.state("unit1") == "meeting"  # everyone listens
    w.sim.press("unit3", "*")  # the PTT button
    await w.run(1)
    assert w.hears("unit1") >= {"unit3"} and w.hears("unit2") >= {"unit3"}
    assert "unit1" not in w.hears("unit3")  # the others listen: one talker at a time
    granted = [e for e in w.events if e.kind == "floor.granted"]
    assert granted and granted[0].to_dict()["user"] == "unit3"
    w.assert_ok()
    await w.close()


async def test_unknown_numbers_are_unreachable(tmp_path: Path) -> None:
    w, _, started = world(tmp_path)
    w.sim.call_in("unit1", "999")
    await w.run(1)
    assert started == [("unroutable#1", "phone:unit1")]
    assert w.sim.hangups[-1][1].value == "unreachable"
    assert w.state("unit1") == "idle"
    w.assert_ok(quiescent=True)
    await w.close()


async def test_the_emergency_number_reaches_a_position_at_emergency_priority(
    tmp_path: Path,
) -> None:
    w, _, started = world(tmp_path)
    w.sim.call_in("unit3", "112")
    await w.run(3)
    assert started == [("emergency_inbound#1", "phone:unit3")]
    flow = w.manager.flows["emergency_inbound#1"]
    assert flow.priority == 50
    (partner,) = w.hears("unit3")
    assert partner in {"disp1", "disp2", "sup1"}
    flow.send("end", by="sup1")
    await w.run(1)
    w.assert_ok()
    await w.close()


async def test_the_dispatcher_number_queues_for_a_free_position(tmp_path: Path) -> None:
    w, _, started = world(tmp_path)
    w.sim.call_in("unit2", "100")
    await w.run(4)
    assert started == [("queued_call#1", "phone:unit2")]
    (partner,) = w.hears("unit2")
    assert partner in {"disp1", "disp2", "sup1"}
    w.assert_ok()
    await w.close()


async def test_a_precedence_asked_by_the_call_is_capped_by_the_callers_role(tmp_path: Path) -> None:
    w, _, _ = world(tmp_path)
    w.behave("unit2", never_answers())
    w.sim.call_in("unit1", "1002", priority=50)  # a field unit asks for EMERGENCY …
    await w.run(1)
    assert w.manager.flows["inbound_call#1"].priority == 10  # … and gets its cap, PRIORITY
    w.sim.call_in("disp1", "1003", priority=30)  # a dispatcher may ask for FLASH
    await w.run(0.5)
    assert w.manager.flows["inbound_call#2"].priority == 30
    await w.close()


async def test_demo_activity_makes_field_units_call_in(tmp_path: Path) -> None:
    import asyncio
    import random
    from types import SimpleNamespace

    from baton.service.sim.activity import run_activity

    w, config, started = world(tmp_path)
    config = config.model_copy(
        update={"sim": config.sim.model_copy(update={"activity_every": 5.0})}
    )
    fake = SimpleNamespace(sim=w.sim, config=config, manager=w.manager)
    task = asyncio.get_running_loop().create_task(run_activity(fake, rng=random.Random(7)))  # type: ignore[arg-type]
    await w.run(60)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    callers = {who for _, who in started}
    assert started and callers <= {"phone:unit1", "phone:unit2", "phone:unit3", "phone:unit4"}
    w.assert_ok()
    await w.close()


async def test_demo_activity_follows_users_removed_while_it_runs(tmp_path: Path) -> None:
    import asyncio
    import random
    from types import SimpleNamespace

    from baton.service.sim.activity import run_activity

    w, config, started = world(tmp_path)
    config = config.model_copy(
        update={"sim": config.sim.model_copy(update={"activity_every": 5.0})}
    )
    fake = SimpleNamespace(sim=w.sim, config=config, manager=w.manager)
    task = asyncio.get_running_loop().create_task(run_activity(fake, rng=random.Random(7)))  # type: ignore[arg-type]
    await w.run(1)  # before its first call: every phone is idle
    # Provisioning removes unit1 (from the core too); the activity carries on without it.
    fake.config = config.model_copy(
        update={"users": tuple(u for u in config.users if u.id != "unit1")}
    )
    w.manager.remove_user(w.manager.user("unit1"))
    await w.run(120)
    assert not task.done(), task
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    callers = {who for _, who in started}
    assert callers and "phone:unit1" not in callers
    await w.close()
