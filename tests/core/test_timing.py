"""Races that only a switch that takes time opens: a hang-up, a newer claim or a cancellation
landing *inside* the core's own awaits (a preemption's media clear, a makecall, a compensation).

Each test reproduces one interleaving found by trying Baton with real switch timing, and pins
the behaviour docs/design.md promises (invariants 2, 4, 10 and 12).
"""

from __future__ import annotations

import gc

import pytest
from core_flows import hold

from baton.core import (
    MeetingCall,
    NotOwner,
    Preempted,
    Priority,
    Session,
    Superseded,
    SwitchFailed,
    Tone,
    User,
    UserHungUp,
    flow,
)
from baton.core.events import FlowNotified, OpInterrupted
from baton.core.port import MeetingMode
from baton.switch.sim import Timing, answers, never_answers
from baton.testing import World

outcome: dict[str, object] = {}


@flow(priority=Priority.FLASH)
async def take_two(s: Session, dispatcher: User, target: User) -> None:
    """Claim a dispatcher line and a target; report how the claim ended; keep the dispatcher."""
    try:
        await s.claim(dispatcher, target)
        outcome[s.name] = "granted"
    except (UserHungUp, Preempted, Superseded) as exc:
        outcome[s.name] = type(exc).__name__
    await s.sleep(1)


async def test_claim_resolves_when_the_user_hangs_up_during_its_preemption() -> None:
    """The switch takes 0.5 s to clear media; the target hangs up 0.2 s into the preemption.
    The claim must resolve (told the user hung up) and the flow must end: before, the claimer
    stayed inside claim() forever, holding the dispatcher."""
    outcome.clear()
    w = World("d", "u", "b", latency={"clear": 0.5})
    w.start(hold, w["u"], w["b"])
    await w.run(3)
    f = w.start(take_two, w["d"], w["u"])
    await w.run(0.2)
    w.sim.hang_up("u")
    await w.run(5)
    assert f.ended, "the claim never returned"
    assert outcome[f.name] == "UserHungUp"
    assert w.owner("d") is None  # given back when the flow ended
    w.assert_ok()


async def test_claim_resolves_when_the_user_hangs_up_while_queued_behind_a_preemption() -> None:
    outcome.clear()

    @flow(priority=Priority.ROUTINE)
    async def patient(s: Session, u: User) -> None:
        try:
            await s.claim(u, wait=30)
            outcome[s.name] = "granted"
        except UserHungUp:
            outcome[s.name] = "UserHungUp"

    w = World("d", "u", "b", latency={"clear": 0.5})
    w.start(hold, w["u"], w["b"])
    await w.run(3)
    p = w.start(patient, w["u"])
    await w.run(0.1)
    w.sim.hang_up("u")
    await w.run(1)
    # the queued claim is served when the user is released: nothing to wait for any more
    assert p.ended and outcome[p.name] == "granted"
    w.assert_ok()


async def test_refused_meeting_sends_nothing() -> None:
    """``s.meeting(v, u)`` where the flow does not own ``u``: NotOwner, and no command reaches
    the switch — before, the meeting was created and ``v`` pulled out of its bridge first."""
    errors: list[BaseException] = []

    @flow(priority=Priority.ROUTINE)
    async def meet(s: Session, v: User, u: User) -> None:
        await s.claim(v)
        await s.dial(v)
        try:
            await s.meeting(v, u)
        except NotOwner as exc:
            errors.append(exc)

    w = World("v", "u", "x")
    w.start(hold, w["u"], w["x"])
    await w.run(3)
    before = len(w.sim.commands)
    f = w.start(meet, w["v"], w["u"])
    await w.run(3)
    assert f.ended and len(errors) == 1
    sent = [c for _, c, _ in w.sim.commands[before:]]
    assert "create_meeting" not in sent and "join" not in sent
    assert w.hears("u") == {"x"}
    w.assert_ok()


async def test_a_digit_left_unread_does_not_cross_to_the_next_owner() -> None:
    got: dict[str, str] = {}

    @flow(priority=Priority.ROUTINE)
    async def first(s: Session, u: User) -> None:
        await s.claim(u)
        await s.dial(u)
        await s.sleep(2)  # the user presses 5 now; nobody reads it

    @flow(priority=Priority.ROUTINE)
    async def second(s: Session, u: User) -> None:
        await s.claim(u)
        got[s.name] = await s.collect(u, timeout=1)

    w = World("u", grace=30)
    f = w.start(first, w["u"])
    await w.run(1.5)
    w.sim.press("u", "5")
    await f.wait()
    g = w.start(second, w["u"])
    await g.wait()
    assert got[g.name] == ""  # not the 5 pressed for the first flow
    w.assert_ok()


async def test_superseded_on_two_users_is_one_error_and_the_victim_names_the_taker() -> None:
    outcome.clear()
    w = World("a", "b", "c", latency={"clear": 1.0})
    x = w.start(hold, w["a"], w["b"])
    await w.run(3)

    @flow(priority=Priority.FLASH)
    async def pair(s: Session, a: User, b: User) -> None:
        try:
            await s.claim(a, b)
            outcome[s.name] = "granted"
        except Superseded as exc:
            outcome[s.name] = exc

    y = w.start(pair, w["a"], w["b"])
    await w.run(0.3)
    z = w.start(pair, w["a"], w["b"])
    await w.run(3)
    gc.collect()
    assert isinstance(outcome[y.name], Superseded)
    assert outcome[z.name] == "granted"
    assert isinstance(x.error, Preempted) and x.error.by == z.name
    told = [e for e in w.events if isinstance(e, FlowNotified) and e.flow == x.name]
    assert told and all(e.by == z.name for e in told)
    w.assert_ok()


async def test_superseded_future_is_retrieved(caplog: pytest.LogCaptureFixture) -> None:
    w = World("a", "b", latency={"clear": 1.0})
    w.start(hold, w["a"], w["b"])
    await w.run(3)

    @flow(priority=Priority.FLASH)
    async def pair(s: Session, a: User, b: User) -> None:
        await s.claim(a, b)

    w.start(pair, w["a"], w["b"])
    await w.run(0.3)
    w.start(pair, w["a"], w["b"])
    await w.run(3)
    gc.collect()
    assert "never retrieved" not in caplog.text


async def test_a_call_being_placed_survives_its_dialler_losing_the_user() -> None:
    """The originate is in flight (the switch takes 0.5 s) when another flow takes the user.
    The call is not dropped and re-dialled: the new owner inherits the same leg (invariant 4)."""

    @flow(priority=Priority.ROUTINE)
    async def dialler(s: Session, u: User) -> None:
        await s.claim(u)
        await s.dial(u)

    @flow(priority=Priority.FLASH)
    async def taker(s: Session, u: User) -> None:
        await s.claim(u)
        await s.dial(u)
        await s.sleep(5)

    w = World("u", latency={"originate": 0.5})
    w.behave("u", answers(2))
    d = w.start(dialler, w["u"])
    await w.run(0.2)
    t = w.start(taker, w["u"])
    await w.run(4)
    assert isinstance(d.error, Preempted)
    assert w.sim.phones["u"].calls == 1  # one call, inherited
    assert w.state("u") == "connected" and w.owner("u") == t.name
    assert len(w.sim.sent("originate")) == 1
    w.assert_ok()


async def test_an_originate_abandoned_by_a_cancelled_flow_is_collected() -> None:
    @flow(priority=Priority.ROUTINE)
    async def dialler(s: Session, u: User) -> None:
        await s.claim(u)
        await s.dial(u)

    w = World("u", latency={"originate": 0.5}, grace=2)
    w.behave("u", never_answers())
    d = w.start(dialler, w["u"])
    await w.run(0.2)
    d.cancel("test")
    await w.run(10)
    assert w.sim.leg_of("u") is None  # the switch's leg was hung up, not left ringing
    w.assert_ok(quiescent=True)


async def test_property_timing_model_keeps_per_leg_order() -> None:
    """A bridge issued before a clear lands before it, whatever latencies are drawn."""
    w = World("a", "b", timing=Timing(default=(0.0, 0.8), seed=7))

    @flow(priority=Priority.ROUTINE)
    async def meet(s: Session, a: User, b: User) -> None:
        await s.claim(a, b)
        await s.dial(a)
        await s.dial(b)
        await s.connect(a, b)
        m = await s.meeting(a, b)
        await s.join(m, b, MeetingMode.LISTEN)
        await s.clear(a)

    f = w.start(meet, w["a"], w["b"])
    await w.run(10)
    assert f.outcome == "completed"
    assert w.sim.room_of("a") is None


async def test_a_member_alone_in_an_open_room_hears_the_hold_tone() -> None:
    """A dial-in room (a MeetingCall with min_members=1): the one member waiting hears the hold
    tone — never silence (invariant 11) — until someone joins; when the other leaves, the one
    left hears it again."""

    @flow(priority=Priority.ROUTINE)
    async def open_room(s: Session, u: User) -> None:
        await s.claim(u)
        await s.dial(u)
        room = await s.meeting(u, id="room")
        s.settle(MeetingCall(room, min_members=1))

    @flow(priority=Priority.ROUTINE)
    async def join_room(s: Session, u: User) -> None:
        await s.claim(u)
        await s.dial(u)
        room = s.manager.meeting("room")
        await s.join(room, u)
        holder = room.holder
        assert isinstance(holder, MeetingCall)
        holder.adopt(s.flow, u)

    w = World("a", "b", timing=Timing(default=(0.1, 0.5), seed=3))
    await w.start(open_room, w["a"]).result()
    await w.run(2)
    assert w.hears("a") == {"tone:hold"}
    await w.start(join_room, w["b"]).result()
    await w.run(2)
    assert w.hears("a") == {"b"} and w.hears("b") == {"a"}
    w.sim.hang_up("b")
    await w.run(2)
    assert w.hears("a") == {"tone:hold"}
    w.assert_ok()


async def test_a_failed_hangup_is_retried_so_the_phone_does_not_stay_in_a_ghost_call() -> None:
    """The core ends a leg before the switch confirms; if the switch's hang-up fails, the phone
    would stay in a call the core has forgotten. The manager tries once more on its own."""

    @flow(priority=Priority.ROUTINE)
    async def cut(s: Session, u: User) -> None:
        await s.claim(u)
        await s.dial(u)
        await s.hangup(u)

    w = World("u")
    w.sim.fail_next("hangup")
    f = w.start(cut, w["u"])
    await f.wait()
    assert f.outcome == "failed"  # the flow is told the switch failed
    await w.run(1)
    assert w.sim.leg_of("u") is None  # and the retry hung the phone up
    w.assert_ok(quiescent=True)


async def test_a_collector_hangup_that_fails_is_tried_again() -> None:
    """The leak collector ends an ownerless leg; the switch fails the hang-up once. The phone
    must still be hung up (a second try), or its next call would meet a ghost leg."""

    @flow(priority=Priority.ROUTINE)
    async def leave_it(s: Session, u: User) -> None:
        await s.claim(u)
        await s.dial(u)

    w = World("u", grace=1)
    await w.start(leave_it, w["u"]).wait()
    w.sim.fail_next("hangup")
    await w.run(5)
    assert w.sim.leg_of("u") is None
    w.assert_ok(quiescent=True)


async def test_a_claim_its_own_flow_releases_mid_preemption_resolves() -> None:
    """A flow's child task claims a user (the preemption takes 0.5 s to clear media); the
    flow's main task releases that user meanwhile. The child's claim must resolve (NotOwner),
    not wait forever for a grant (found by the mutation run's survivor)."""
    seen: list[BaseException] = []

    @flow(priority=Priority.FLASH)
    async def taker(s: Session, u: User) -> None:
        async def grab() -> None:
            try:
                await s.claim(u)
            except NotOwner as exc:
                seen.append(exc)

        child = s.spawn(grab())
        await s.sleep(0.1)
        s.release(u)
        await s.wait(child)

    w = World("u", "b", latency={"clear": 0.5})
    w.start(hold, w["u"], w["b"])
    await w.run(3)
    f = w.start(taker, w["u"])
    await w.run(3)
    assert f.ended and f.outcome == "completed"
    assert len(seen) == 1
    w.assert_ok()


async def test_one_operation_on_two_users_taken_by_two_preemptions_is_reported_once() -> None:
    """A bridge of a and b is in flight (the switch takes 2 s); one flow preempts b, and in the
    same instant a second one takes a and b, superseding the first. Two preemptions complete
    for one loser, and both used to announce the one interrupted bridge: the second
    announcement landed after b's media clear, so the event history read as an operation
    unwinding after its user was cleared (invariant 3, found by ``baton check inbound_call``
    on a slow switch)."""

    @flow(priority=Priority.PRIORITY)
    async def take(s: Session, *users: User) -> None:
        try:
            await s.claim(*users)
        except Superseded:
            return
        await s.sleep(1)

    w = World("a", "b", latency={"bridge": 4.0, "clear": 0.4})
    w.start(hold, w["a"], w["b"])
    await w.run(3)
    w.start(take, w["b"])
    w.start(take, w["b"], w["a"])
    await w.run(5)
    interrupted = [e for e in w.events if isinstance(e, OpInterrupted)]
    assert [(e.op, e.users) for e in interrupted] == [("connect", ("a", "b"))]
    w.assert_ok()


async def test_a_command_racing_a_hang_up_tells_the_flow_the_user_hung_up() -> None:
    """b hangs up 0.8 s into a 1 s bridge; the hang-up's event takes 0.5 s to reach the core.
    The switch refuses the bridge (b's leg is gone) before the core hears of the hang-up: the
    flow used to get a switch failure, and library flows ended "failed" with it. The core now
    waits for the leg's end and the flow is told the user hung up (invariant 7)."""
    got: dict[str, str] = {}

    @flow(priority=Priority.ROUTINE)
    async def pair(s: Session, a: User, b: User) -> None:
        await s.claim(a, b)
        for u in (a, b):
            s.quiet(u, "waiting for the bridge")
        await s.dial(a)
        await s.dial(b)
        try:
            await s.connect(a, b)
            got["connect"] = "connected"
        except (UserHungUp, SwitchFailed) as exc:
            got["connect"] = type(exc).__name__

    w = World("a", "b", timing=Timing(commands={"bridge": 1.0}, events=0.5))
    w.start(pair, w["a"], w["b"])
    await w.run(3.8)  # both dialled by 3.0; the bridge lands at the switch at 4.0
    w.sim.hang_up("b")
    await w.run(3)
    assert got == {"connect": "UserHungUp"}
    w.assert_ok()


@flow(priority=Priority.ROUTINE)
async def _play_and_let_go(s: Session, u: User) -> None:
    """Leave ``u`` released with media on its line (a playback): the next claimer clears it."""
    await s.claim(u)
    await s.dial(u)
    await s.play(u, Tone("ringback"), loop=True)
    s.release(u)


@flow(priority=Priority.ROUTINE)
async def _claim_and_serve(s: Session, u: User) -> str:
    await s.claim(u)
    await s.play(u, Tone("confirm"))
    return "served"


async def test_a_claim_whose_clean_up_clear_fails_is_granted_not_failed_while_held() -> None:
    """A user let go with media on its line is cleared by the next claim. The switch failing
    that clear made the claim raise SwitchFailed while the claimer held the user — a flow
    told its claim failed does not serve the user, who sat in silence (found by the library
    state machine: a PTT group holding a member it believed unreachable). The claim is granted,
    as when a preemption's clear fails, and the failure is a problem event."""
    w = World("u")
    await w.start(_play_and_let_go, w["u"]).result()
    w.sim.fail_next("clear")
    assert await w.start(_claim_and_serve, w["u"]).result() == "served"
    assert any(ev.kind == "problem" for ev in w.events)
    w.assert_ok()


@flow(priority=Priority.ROUTINE)
async def _two_on_the_line(s: Session, a: User, b: User) -> list[str]:
    await s.claim(a, b)
    await s.dial(a)
    await s.dial(b)
    s.quiet(a, "waiting")
    s.quiet(b, "waiting")
    try:
        await s.command()
    except UserHungUp as exc:
        return [u.id for u in exc.users]
    return []


async def test_two_hang_ups_in_one_instant_are_told_together() -> None:
    """Two users of a flow hang up in the same instant: the second notice joins the first,
    which the flow's wait is already raising — but UserHungUp dropped it (only Preempted
    carried the users lost together), so the flow never learned of the second: a barge-in
    whose peer and dispatcher hung up at once waited on, its target in silence (found by
    baton check, seed 29). Invariant 6: no event delivered to a flow is lost."""
    w = World("a", "b")
    f = w.start(_two_on_the_line, w["a"], w["b"])
    await w.run(5)
    w.sim.hang_up("a")
    w.sim.hang_up("b")
    assert await f.result() == ["a", "b"]
    w.assert_ok()


@pytest.mark.parametrize("timing", [None, Timing(default=(0.2, 0.6), seed=3)])
async def test_a_bridge_or_join_the_switch_refuses_leaves_nobody_believed_talking(
    timing: Timing | None,
) -> None:
    """The switch refuses a bridge (or a join, or a join's mode change): the records say what
    the switch has — before, the two stayed ``talking`` in the core's book although the switch
    had not bridged them, and a flow that then settled them (an emergency ended, a call
    redialled) left both in a P2P hearing nobody: dead air the flow could not see."""
    seen: dict[str, object] = {}

    @flow(priority=Priority.ROUTINE)
    async def refused(s: Session, a: User, b: User) -> None:
        await s.claim(a, b)
        await s.dial(a)
        await s.dial(b)
        s.manager.switch.fail_next("bridge")  # type: ignore[attr-defined]
        with pytest.raises(SwitchFailed):
            await s.connect(a, b)
        seen["bridge"] = (s.state_of(a), s.partner_of(a), s.partner_of(b))
        room = await s.meeting(a)
        s.manager.switch.fail_next("join")  # type: ignore[attr-defined]
        with pytest.raises(SwitchFailed):
            await s.join(room, b)
        seen["join"] = (s.meeting_of(b), [u.id for u in room.members])
        s.manager.switch.fail_next("join")  # type: ignore[attr-defined]
        with pytest.raises(SwitchFailed):
            await s.join(room, a, MeetingMode.LISTEN)
        seen["mode"] = room.members[a].mode
        await s.hangup(a)
        await s.hangup(b)

    w = World("a", "b", timing=timing)
    f = w.start(refused, w["a"], w["b"])
    await w.run(10)
    assert f.outcome == "completed", f.error
    assert seen["bridge"] == ("connected", None, None)
    assert seen["join"] == (None, ["a"])
    assert seen["mode"] is MeetingMode.SPEAK
    w.assert_ok(quiescent=True)
