"""The cases Baton was built for (docs/design.md, Cases (a)–(f)), each reproduced as its interleaving."""

from __future__ import annotations

import asyncio

import pytest
from core_flows import emergency, hold, transfer

from baton.core import (
    P2P,
    CancelResult,
    MeetingCall,
    Preempted,
    Priority,
    Session,
    Superseded,
    User,
    flow,
)
from baton.core.events import (
    CompensationRan,
    FlowNotified,
    MediaChanged,
    OpInterrupted,
    PreemptionSuperseded,
)
from baton.core.port import Cause, MeetingMode, Prompt
from baton.switch.sim import answers
from baton.testing import World


async def test_a_transfer_target_taken_while_ringing() -> None:
    """A→B→C under way, C ringing; an emergency takes C. C's call is not dropped, the emergency
    gets C's leg when C answers, and the transfer ends cleanly (A and B restored)."""
    w = World("a", "b", "c", "d")
    w.behave("c", answers(after=10))
    t = w.start(transfer, w["a"], w["b"], w["c"])
    await w.run(3)
    assert w.state("c") == "ringing" and "tone:ringback" in w.hears("a")
    leg_before = w.manager.leg_of(w["c"])
    e = w.start(emergency, w["d"], w["c"])
    assert await t.result() == "restored"
    assert w.hears("a") == {"b"}  # back together, ringback stopped
    assert w.state("c") == "ringing"  # still ringing: not dropped
    await e.result()  # returns when C answers
    assert w.manager.now() == pytest.approx(2.0 + 10.0)  # C's own answer time, not a redial
    assert w.manager.leg_of(w["c"]) is leg_before
    assert w.sim.phones["c"].calls == 1
    assert w.hears("c") == {"d"} and w.hears("d") == {"c"}
    w.assert_ok()


async def test_b_barge_in_hold_then_user_taken_compensation_skips_it() -> None:
    """A barge-in puts A on hold; while held, A is pulled into an emergency. When the barge-in
    ends, its compensation does not touch A, and B (the other party) is handled by policy: it
    hears the preemption tone and is released."""

    @flow(priority=Priority.FLASH)
    async def barge_in(s: Session, d: User, a: User, b: User) -> None:
        p2p = s.callinfo_of(a)
        assert isinstance(p2p, P2P)
        await s.claim(d, a, b)
        await s.dial(d)
        room = await s.meeting(d, a, b)

        async def restore() -> None:  # compensation: give A and B their call back
            await s.leave(room, a)
            await s.leave(room, b)
            s.settle(P2P(a, b, priority=p2p.priority))

        s.compensate(restore, a, b, label="restore_p2p")

        async def a_taken(exc: BaseException) -> None:  # policy for the partner left alone
            s.quiet(d, "alone in the room until the dispatcher hangs up")
            await s.play(b, "preemption")
            await s.hangup(b, Cause.PREEMPTED)

        s.on_preempted(a, a_taken)
        await s.join(room, a, MeetingMode.MUTED)  # "hold": A out of the conversation
        await s.play(a, "hold", loop=True)
        await s.wait_hangup(d)

    @flow(priority=Priority.ROUTINE)
    async def call(s: Session, a: User, b: User) -> None:
        await s.claim(a, b)
        await s.dial(a)
        await s.dial(b)
        await s.connect(a, b)
        s.settle(P2P(a, b))

    w = World("a", "b", "d", "e")
    await w.start(call, w["a"], w["b"]).result()
    bi = w.start(barge_in, w["d"], w["a"], w["b"])
    await w.run(3)
    assert "tone:hold" in w.hears("a") and w.hears("b") == {"d"}
    em = w.start(emergency, w["e"], w["a"])
    await em.result()
    assert w.hears("a") == {"e"}
    await w.run(5)
    assert "tone:preemption" in w.heard("b") and w.state("b") == "idle"
    w.sim.hang_up("d")
    await bi.wait()
    comp = [e for e in w.events if isinstance(e, CompensationRan)]
    assert [(c.step, c.outcome) for c in comp] == [("restore_p2p", "skipped")]
    # nothing the barge-in sent after the emergency took A named A's leg
    a_leg = w.manager.leg_of(w["a"])
    assert a_leg is not None
    taken_at = next(
        e.seq for e in w.events if e.kind == "preemption.started" and e.claimer == em.name
    )
    after = [e for e in w.events if isinstance(e, MediaChanged) and e.seq > taken_at]
    assert not [e for e in after if e.by == bi.name and "a" in e.users]
    assert w.hears("a") == {"e"}
    w.assert_ok()


async def test_b2_barge_in_ends_normally_restores_the_call() -> None:
    """The same barge-in without interference: A and B get their P2P back."""

    @flow(priority=Priority.FLASH)
    async def barge_in(s: Session, d: User, a: User, b: User) -> None:
        p2p = s.callinfo_of(a)
        assert isinstance(p2p, P2P)
        await s.claim(d, a, b)
        await s.dial(d)
        room = await s.meeting(d, a, b)

        async def restore() -> None:
            await s.connect(a, b)
            s.settle(P2P(a, b, priority=p2p.priority))

        s.compensate(restore, a, b)
        await s.wait_hangup(d)
        assert room.members  # still a meeting until the end

    w = World("a", "b", "d")
    await w.start(_call(), w["a"], w["b"]).result()
    bi = w.start(barge_in, w["d"], w["a"], w["b"])
    await w.run(3)
    assert w.hears("a") == {"b", "d"}
    w.sim.hang_up("d")
    assert await bi.wait() == "completed"
    assert w.hears("a") == {"b"} and w.owner("a").startswith("p2p")
    w.assert_ok(quiescent=True)


def _call():  # a routine call settled into P2P, shared by the barge-in tests
    @flow()
    async def call(s: Session, a: User, b: User) -> None:
        await s.claim(a, b)
        await s.dial(a)
        await s.dial(b)
        await s.connect(a, b)
        s.settle(P2P(a, b))

    return call


async def test_c_cancel_a_flow_that_finished_but_is_not_reaped() -> None:
    undo: list[int] = []

    @flow()
    async def quick(s: Session, a: User) -> str:
        await s.claim(a)

        async def step() -> None:
            undo.append(1)

        s.compensate(step)
        return "done"

    w = World("a")
    f = w.start(quick, w["a"])
    task = f.task
    assert task is not None
    while f.state.value != "ended":  # noqa: ASYNC110 - step the loop one callback round at a time
        await asyncio.sleep(0)
    # ...but its task's done-callbacks have not necessarily run: cancel now.
    assert f.cancel("late") is CancelResult.ALREADY_ENDED
    assert await f.result() == "done"
    assert undo == [1]  # the compensation ran exactly once
    assert task.done() and not task.cancelled()
    assert not [e for e in w.events if e.kind == "problem"]
    w.assert_ok()


async def test_c2_cancel_while_finishing_is_a_no_op() -> None:
    @flow()
    async def slow(s: Session, a: User) -> None:
        await s.claim(a)

        async def step() -> None:
            await asyncio.sleep(1)

        s.compensate(step)

    w = World("a")
    f = w.start(slow, w["a"])
    await w.run(0.5)
    assert f.state.value == "finishing"
    assert f.cancel() is CancelResult.ALREADY_FINISHING
    assert await f.wait() == "completed"


async def test_d_answer_and_cancellation_in_the_same_tick() -> None:
    """C answers at t=5 and the flow is cancelled in the same loop tick: the answer is not
    lost — the leg is recorded connected and the flow's compensation hangs it up."""

    @flow()
    async def dialler(s: Session, c: User) -> None:
        await s.claim(c)

        async def hang_up_c() -> None:
            leg = s.leg_of(c)
            if leg is not None and leg.connected:  # the answer is visible to compensation
                await s.hangup(c)

        s.compensate(hang_up_c, c)
        await s.dial(c)
        await s.sleep(100)

    w = World("c")
    w.behave("c", answers(after=5))
    f = w.start(dialler, w["c"])
    await w.run(1)
    loop = asyncio.get_running_loop()
    # The sim's answer timer is due at t=5.0 and was scheduled first; this runs right after it,
    # before the flow's task can resume with the answer.
    loop.call_at(5.0, f.cancel, "same tick")
    assert await f.wait() == "cancelled"
    answered = [e for e in w.events if e.kind == "leg.state" and e.state == "connected"]
    assert answered and answered[0].t == pytest.approx(5.0)
    assert [c.outcome for c in w.events if isinstance(c, CompensationRan)] == ["ran"]
    assert w.sim.hangups and w.sim.hangups[0][1] is Cause.NORMAL
    assert w.state("c") == "idle"
    w.assert_ok(quiescent=True)


async def test_d2_answer_and_preemption_in_the_same_tick_goes_to_the_new_owner() -> None:
    w = World("c", "d")
    w.behave("c", answers(after=5))
    x = w.start(hold, w["c"])
    await w.run(1)
    loop = asyncio.get_running_loop()
    started = []
    loop.call_at(5.0, lambda: started.append(w.start(emergency, w["d"], w["c"])))
    await w.run(5)
    e = started[0]
    await e.result()
    assert w.hears("c") == {"d"} and w.sim.phones["c"].calls == 1
    assert x.outcome == "failed" and isinstance(x.error, Preempted)
    w.assert_ok()


async def test_e_two_preemptions_racing_newer_wins() -> None:
    outcomes: dict[str, object] = {}

    @flow()
    async def taker(s: Session, a: User) -> None:
        try:
            await s.claim(a)
            outcomes[s.name] = "granted"
        except Superseded as exc:
            outcomes[s.name] = exc

    w = World("a", "b", latency={"clear": 1.0})
    x = w.start(hold, w["a"], w["b"])  # a is bridged: clearing it takes the sim 1 s
    await w.run(3)
    y = w.start(taker, w["a"], priority=Priority.FLASH)
    await w.run(0.3)  # y's preemption is in progress (clearing takes 1 s)
    z = w.start(taker, w["a"], priority=Priority.FLASH)  # same priority, newer: supersedes
    await y.wait()
    await z.wait()
    assert isinstance(outcomes[y.name], Superseded)
    assert "superseded by " + z.name in str(outcomes[y.name])
    assert outcomes[z.name] == "granted"
    assert [e.new_claimer for e in w.events if isinstance(e, PreemptionSuperseded)] == [z.name]
    assert x.outcome == "failed" and isinstance(x.error, Preempted)
    w.assert_ok()


async def test_e2_older_higher_preemption_is_not_superseded() -> None:
    outcomes: dict[str, str] = {}

    @flow()
    async def taker(s: Session, a: User) -> None:
        try:
            await s.claim(a, wait=5)
            outcomes[s.name] = "granted"
        except Exception as exc:
            outcomes[s.name] = type(exc).__name__
            return
        s.quiet(a, "kept")
        await s.sleep(10)  # keep the user longer than the other claimer will wait

    w = World("a", "b", latency={"clear": 1.0})
    w.start(hold, w["a"], w["b"])
    await w.run(3)
    y = w.start(taker, w["a"], priority=Priority.EMERGENCY)
    await w.run(0.3)
    z = w.start(taker, w["a"], priority=Priority.FLASH)
    await y.wait()
    await z.wait()
    assert outcomes == {y.name: "granted", z.name: "ClaimDenied"}  # z waited, then gave up
    assert any(e.kind == "claim.queued" and e.claimer == z.name for e in w.events)
    w.assert_ok()


async def test_f_in_progress_connect_is_stopped_before_the_media_is_cleared() -> None:
    errors: list[BaseException] = []

    @flow()
    async def connector(s: Session, a: User, b: User) -> None:
        await s.claim(a, b)
        await s.dial(a)
        await s.dial(b)
        try:
            await s.connect(a, b)  # the sim takes 1 s to bridge
        except Preempted as exc:
            errors.append(exc)

    w = World("a", "b", "d", latency={"bridge": 1.0})
    x = w.start(connector, w["a"], w["b"])
    await w.run(2.5)  # connect issued at t=2, still in progress
    e = w.start(emergency, w["d"], w["a"])
    await x.wait()
    assert errors and errors[0].user is w["a"]
    evs = w.events
    stop = next(ev for ev in evs if isinstance(ev, OpInterrupted) and ev.op == "connect")
    told = next(ev for ev in evs if isinstance(ev, FlowNotified) and ev.flow == x.name)
    assert stop.users == ("a", "b")
    clear = [ev for ev in evs if isinstance(ev, MediaChanged) and ev.command == "clear"]
    assert clear and stop.seq < clear[0].seq < told.seq
    await e.result()
    assert w.sim.room_of("b") is None  # the half-done bridge never happened
    w.assert_ok()


async def test_f2_in_progress_playback_is_stopped_before_the_media_is_cleared() -> None:
    @flow()
    async def announcer(s: Session, a: User) -> None:
        await s.claim(a)
        await s.dial(a)
        await s.play(a, Prompt("long.wav"))

    w = World("a", "d")
    w.sim.prompt_seconds["long.wav"] = 30
    x = w.start(announcer, w["a"])
    await w.run(5)
    assert w.sim.played_to("a") == {"prompt:long.wav"}
    await w.start(emergency, w["d"], w["a"]).result()
    evs = w.events
    stop = next(ev for ev in evs if isinstance(ev, OpInterrupted))
    clear = next(ev for ev in evs if isinstance(ev, MediaChanged) and ev.command == "clear")
    done = next(ev for ev in evs if isinstance(ev, MediaChanged) and ev.command == "play.done")
    assert stop.op == "play" and stop.seq < clear.seq <= done.seq
    assert done.detail == "stopped"
    assert w.sim.played_to("a") == set()
    assert isinstance(x.error, Preempted)
    w.assert_ok()


async def test_meetingcall_survives_a_member_preempted() -> None:
    @flow()
    async def conf(s: Session, a: User, b: User, c: User) -> None:
        await s.claim(a, b, c)
        for u in (a, b, c):
            await s.dial(u)
        room = await s.meeting(a, b, c)
        s.settle(MeetingCall(room))

    w = World("a", "b", "c", "d")
    await w.start(conf, w["a"], w["b"], w["c"]).result()
    assert w.hears("a") == {"b", "c"}
    await w.start(emergency, w["d"], w["c"]).result()
    assert w.hears("a") == {"b"} and w.hears("c") == {"d"}
    w.sim.hang_up("b")
    await w.run(1)
    assert w.state("a") == "idle"  # fewer than two left: the meeting closed
    assert not w.manager.meetings()
    w.assert_ok()


async def test_victim_operating_on_a_user_mid_preemption_is_told_preempted() -> None:
    """Found by ``baton check``: the ledger flips to the claimer at once (step 3) but the loser
    is told only after the media is cleared (step 6). A loser that issues an operation on the
    user in between waits for the protocol to finish and gets Preempted — not a bare NotOwner —
    exactly once."""
    seen: list[BaseException] = []

    @flow()
    async def busy(s: Session, a: User, b: User) -> None:
        await s.claim(a, b)
        await s.dial(a)
        await s.dial(b)
        await s.connect(a, b)
        await asyncio.sleep(3.25)  # not a session wait: it cannot be told here
        try:
            await s.play(a, "confirm")  # issued while a's media is being cleared
        except Preempted as exc:
            seen.append(exc)
        await s.play(b, "confirm")  # and nothing more is pending about a

    w = World("a", "b", "d", latency={"clear": 0.5})
    x = w.start(busy, w["a"], w["b"])
    await w.run(5)
    w.start(emergency, w["d"], w["a"])
    assert await x.wait() == "completed"
    assert isinstance(seen[0], Preempted)
    clear = next(e for e in w.events if isinstance(e, MediaChanged) and e.command == "clear")
    told = next(e for e in w.events if isinstance(e, FlowNotified) and e.flow == x.name)
    assert clear.t < told.t or clear.seq < told.seq
    a_leg = w.manager.leg_of(w["a"]).id  # type: ignore[union-attr]
    b_leg = w.manager.leg_of(w["b"]).id  # type: ignore[union-attr]
    assert (b_leg,) in w.sim.sent("play") and (a_leg,) not in w.sim.sent("play")
    w.assert_ok()
