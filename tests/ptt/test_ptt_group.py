"""PTT group calls on the sim: who talks, who hears, tones, queue, revoke, emergency, races."""

from __future__ import annotations

import asyncio

from baton.flows import call, emergency_call, ptt_group
from baton.switch.sim import Timing, answers, never_answers
from baton.testing import World

MEMBERS = ("m1", "m2", "m3", "m4")


async def _group(**kw: object) -> tuple[World, object]:
    w = World(*MEMBERS, grace=2.0)
    d = w.add("disp", keep=True)
    g = w.start(ptt_group, [w[m] for m in MEMBERS], [d], **kw)
    await w.run(2)
    return w, g


def talkers(w: World) -> set[str]:
    """Who the group's members hear (the floor holder), tones aside."""
    ids = [u.id for u in w.manager.users()]
    in_group = [m for m in ids if w.state(m) == "meeting"]
    return {h for m in in_group for h in w.hears(m) if ":" not in h}


async def test_members_listen_until_one_takes_the_floor_by_dtmf() -> None:
    w, g = await _group()
    assert talkers(w) == set()
    w.sim.press("m1", "*")
    await w.run(0.5)
    assert talkers(w) == {"m1"}
    assert all("m1" in w.hears(m) for m in ("m2", "m3", "m4", "disp"))
    assert "tone:talk_permit" in w.heard("m1")
    granted = [e for e in w.events if e.kind == "floor.granted"]
    assert [(e.user, e.priority) for e in granted] == [("m1", 0)]
    w.sim.press("m1", "#")
    await w.run(0.5)
    assert talkers(w) == set()
    assert "tone:floor_idle" in w.heard("m2")
    await g.send("end")
    w.assert_ok()


async def test_queue_with_positions_and_release_passes_the_floor() -> None:
    w, g = await _group()
    await g.send("request", user="m1")
    await g.send("request", user="m2")
    await g.send("request", user="m3")
    queued = [e for e in w.events if e.kind == "floor.queued"][-1]
    assert queued.queue == (("m2", 1), ("m3", 2))
    await g.send("release", user="m1")
    assert talkers(w) == {"m2"}
    await g.send("end")


async def test_dispatcher_override_revokes_the_talker() -> None:
    w, g = await _group()
    await g.send("request", user="m1")
    await g.send("override", user="disp")
    assert talkers(w) == {"disp"}
    assert "tone:floor_revoked" in w.heard("m1")
    assert w.state("m1") == "meeting"  # still in the group, listening
    assert "disp" in w.hears("m1")  # the revoked talker stays in the call, listening
    revoked = [e for e in w.events if e.kind == "floor.revoked"]
    assert revoked[0].user == "m1" and revoked[0].by == "disp"
    await g.send("end")


async def test_denied_without_queueing_and_max_burst() -> None:
    w, g = await _group(max_burst=5.0)
    await g.send("request", user="m1")
    await w.run(5.5)
    assert talkers(w) == set()  # the burst was taken back
    assert any(e.kind == "floor.revoked" and "maximum" in e.reason for e in w.events)
    await g.send("end")


async def test_late_entry_hears_the_current_talker_at_once() -> None:
    w = World(*MEMBERS, "late", grace=2.0)
    w.behave("late", answers(6))
    g = w.start(ptt_group, [w[m] for m in (*MEMBERS, "late")])
    await w.run(2)
    await g.send("request", user="m1")
    await w.run(5)
    assert w.hears("late") == {"m1"}
    await g.send("end")


async def test_hang_time_ends_the_group_after_the_last_burst() -> None:
    w, g = await _group(hang_time=10.0)
    await g.send("request", user="m1")
    await w.run(3)
    await g.send("release", user="m1")
    await w.run(9.5)
    assert g.state.value == "running"
    assert await g.result() == "hang time"
    assert w.manager.now() >= 2 + 3 + 10
    await w.run(3)
    w.assert_ok(quiescent=True)


async def test_persistent_group_stays_up() -> None:
    w, g = await _group(hang_time=1.0, persistent=True)
    await w.run(60)
    assert g.state.value == "running"
    await g.send("end")


async def test_group_emergency_gives_the_raiser_the_floor_until_cleared() -> None:
    w, g = await _group()
    await g.send("override", user="disp")
    w.sim.press("m3", "9")
    await w.run(0.5)
    assert talkers(w) == {"m3"}
    await g.send("override", user="disp")  # FLASH cannot take an emergency burst
    assert talkers(w) == {"m3"}
    await g.send("clear_emergency", by="disp")
    events = [(e.on, e.by) for e in w.events if e.kind == "group.emergency"]
    assert events == [(True, "m3"), (False, "disp")]
    await g.send("end")


# ---- races on the sim --------------------------------------------------------------------


async def test_two_requests_in_the_same_tick() -> None:
    w, g = await _group()
    w.sim.press("m1", "*", 0.1)
    w.sim.press("m2", "*", 0.1)  # both DTMF events land in one tick
    await w.run(0.5)
    assert talkers(w) == {"m1"}
    assert [e for e in w.events if e.kind == "floor.queued"][-1].queue == (("m2", 1),)
    await g.send("end")


async def test_release_and_preempting_request_crossing() -> None:
    w, g = await _group()
    await g.send("request", user="m1")
    f1 = g.send("override", user="disp")
    f2 = g.send("release", user="m1")  # sent before m1 heard it was revoked
    await asyncio.gather(f1, f2)
    assert talkers(w) == {"disp"}  # m1's late release did not release the dispatcher
    await g.send("end")


async def test_talker_hangs_up_while_holding_the_floor() -> None:
    w, g = await _group()
    await g.send("request", user="m1")
    await g.send("request", user="m2")
    w.sim.hang_up("m1")
    await w.run(0.5)
    assert talkers(w) == {"m2"}
    await g.send("end")
    w.assert_ok()


async def test_burst_timer_firing_while_a_revoke_is_under_way() -> None:
    """The override lands in the same tick the burst timer is due: exactly one revoke, and the
    dispatcher keeps the floor."""
    w, g = await _group(max_burst=5.0)
    await g.send("request", user="m1")
    loop = asyncio.get_running_loop()
    loop.call_at(loop.time() + 5.0, lambda: g.send("override", user="disp"))
    await w.run(6)
    revokes = [e for e in w.events if e.kind == "floor.revoked"]
    assert len(revokes) == 1
    assert talkers(w) == {"disp"}
    await g.send("end")


async def test_queued_member_preempted_out_of_the_group() -> None:
    w, g = await _group()
    boss = w.add("boss")
    await g.send("request", user="m1")
    await g.send("request", user="m2")
    e = w.start(emergency_call, boss, w["m2"])
    await w.run(3)
    assert w.hears("m2") == {"boss"}
    assert [x for x in w.events if x.kind == "floor.queued"][-1].queue == ()
    await g.send("release", user="m1")
    assert talkers(w) == set()  # m2 was no longer waiting
    await e.send("end")
    await g.send("end")
    w.assert_ok()


async def test_initiator_talks_as_soon_as_it_answers() -> None:
    """The initiator's request is granted while its phone still rings: when it answers it joins
    as the talker, not as a listener."""
    w = World(*MEMBERS, grace=2.0)
    w.behave("m1", answers(3))
    g = w.start(ptt_group, [w[m] for m in MEMBERS], initiator=w["m1"])
    await w.run(4)
    assert talkers(w) == {"m1"}
    await g.send("end")


async def test_hang_time_ends_the_group_whatever_the_rounding() -> None:
    """Found by the property test: with the floor idle since t=1.1 and a hang time of 3.0,
    ``now - idle_since`` at the deadline is 2.9999999999999996; the flow must still end (it
    used to wait 0 s forever, in place)."""
    assert (1.1 + 3.0) - 1.1 < 3.0
    w = World(*MEMBERS, grace=2.0)
    await asyncio.sleep(1.1)
    g = w.start(ptt_group, [w[m] for m in MEMBERS], hang_time=3.0, ring=0.5)
    # every phone answers after 1 s: the floor is idle from t=1.1 on (no talk burst)
    assert await asyncio.wait_for(g.result(), timeout=30) == "hang time"


async def test_a_grant_cuts_the_floor_idle_tone_short() -> None:
    """The floor-idle beep must not keep the new talker waiting in the mix: a grant stops it."""
    w, g = await _group()
    await g.send("request", user="m1")
    await g.send("release", user="m1")  # floor idle: the beep starts for everyone
    assert "tone:floor_idle" in w.hears("m2")
    await g.send("request", user="m3")  # granted while the beep still plays
    assert "tone:floor_idle" not in w.hears("m2")
    assert talkers(w) == {"m3"}
    await g.send("end")


async def test_end_sent_while_a_member_is_taken_rings_the_rest_of_nobody() -> None:
    """The group takes its members one by one; taking one busy in a call waits for the switch
    to clear it. An ``end`` sent meanwhile is read in the step the later members are taken and
    their ringing tasks spawned: those tasks are stopped before they dial (docs/core.md,
    "Compensation and ending"), so no phone rings for a group that is over."""
    w = World("m1", "m2", "m3", "x", latency={"clear": 1.0})
    await w.start(call, w["m1"], w["x"]).result()  # m1 busy, at a lower priority
    g = w.start(ptt_group, [w["m1"], w["m2"], w["m3"]])
    await w.run(0.5)
    assert w.owner("m1") == g.name  # taken, its line still being cleared
    ended = g.send("end")
    assert await g.result() == "ended"
    assert await ended == "ended"
    await w.run(10)
    assert [w.sim.phones[m].calls for m in ("m2", "m3")] == [0, 0]
    assert w.state("m2") == w.state("m3") == "idle"
    w.assert_ok(quiescent=True)


async def test_an_add_with_an_end_queued_behind_it_takes_nobody() -> None:
    """An ``add`` read while the group's ``end`` already waits behind it does not take the
    member out of its call (nor ring it) for a group that is over: it answers
    ``cancelled``."""
    w = World("m1", "m2", "x", "y")
    await w.start(call, w["x"], w["y"]).result()  # x busy, at a lower priority
    g = w.start(ptt_group, [w["m1"], w["m2"]])
    await w.run(3)
    added = g.send("add", user="x")
    ended = g.send("end")
    assert await added == "cancelled"
    assert await ended == "ended"
    assert await g.result() == "ended"
    await w.run(10)
    assert w.hears("x") == {"y"}  # its call untouched
    assert w.sim.phones["x"].calls == 1  # only its own call
    taken = [e for e in w.kinds("owner.changed") if getattr(e, "user", None) == "x"]
    assert taken and all(getattr(e, "new", None) != g.name for e in taken)  # never the group's
    w.assert_ok(quiescent=True)


async def test_a_removed_member_is_let_go_and_can_be_added_back() -> None:
    """``remove`` hung the member up and kept it, idle, in the group's hands: a routine call to
    it was refused for as long as the group ran, and adding it back answered "in the group
    already". It is now let go with its hang-up; ``add`` rings it again."""
    w = World("m1", "m2", "m3", "x", grace=2.0)
    g = w.start(ptt_group, [w["m1"], w["m2"], w["m3"]], persistent=True)
    await w.run(2)
    assert w.owner("m2") == g.name and w.state("m2") == "meeting"
    await g.send("remove", user="m2")
    await w.run(0.5)
    assert w.owner("m2") is None and w.state("m2") == "idle"
    await g.send("add", user="m2")  # straight back
    await w.run(2)
    assert w.owner("m2") == g.name and w.state("m2") == "meeting"
    assert w.sim.phones["m2"].calls == 2
    await g.send("remove", user="m2")
    await w.run(0.5)
    c = w.start(call, w["x"], w["m2"])  # a routine call reaches the removed member
    await w.run(2)
    assert w.hears("m2") == {"x"}
    await g.send("end")
    c.cancel("done")
    await w.run(5)
    w.assert_ok(quiescent=True)


async def test_a_member_removed_while_ringing_is_let_go() -> None:
    """Removed before answering: its ringing stops, it is nobody's, and the group goes on."""
    w = World("m1", "m2", "m3", timing=Timing.real(seed=3))
    w.behave("m2", never_answers())
    g = w.start(ptt_group, [w["m1"], w["m2"], w["m3"]], persistent=True)
    await w.run(2)
    assert w.state("m2") == "ringing"
    await g.send("remove", user="m2")
    await w.run(1)
    assert w.owner("m2") is None and w.state("m2") == "idle"
    assert g.alive
    await g.send("end")
    await w.run(5)
    w.assert_ok(quiescent=True)
