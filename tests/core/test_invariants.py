"""One test per invariant of docs/design.md (plus the checks the World runs after every step)."""

from __future__ import annotations

import asyncio

import pytest
from core_flows import call, emergency, grab, hold

from baton.core import (
    P2P,
    CancelResult,
    ClaimDenied,
    NotOwner,
    Preempted,
    Priority,
    Session,
    User,
    UserHungUp,
    flow,
)
from baton.core.events import (
    CompensationRan,
    FlowNotified,
    MediaChanged,
    OpInterrupted,
    OwnerChanged,
    PreemptionCompleted,
)
from baton.core.port import Cause, EndReason, PreemptionCause, Prompt
from baton.switch.sim import answers, never_answers
from baton.testing import World


async def test_inv1_one_owner_equal_priority_cannot_take() -> None:
    w = World("a", "b")
    x = w.start(hold, w["a"], w["b"])
    await w.run(5)
    y = w.start(grab, w["a"])
    with pytest.raises(ClaimDenied, match="strictly higher priority"):
        await y.result()
    assert w.owner("a") == x.name
    owners = {u.id: o.name for o in [*w.manager.flows.values()] for u in o.users}
    assert owners == {"a": x.name, "b": x.name}
    await x.stop()
    w.assert_ok()


async def test_inv1_one_owner_through_a_preemption() -> None:
    """The ledger never lists two owners, even while a preemption is in progress."""
    w = World("a", "b", "d", latency={"clear": 0.5})
    x = w.start(hold, w["a"], w["b"])
    await w.run(5)
    e = w.start(emergency, w["d"], w["a"])
    await w.run(0.25)  # the preemption is in progress: the media clear takes 0.5 s
    assert w.manager.rec(w["a"]).preemption is not None
    assert w.owner("a") == e.name and w["a"] not in x.users
    await e.wait()
    assert e.outcome == "completed"
    await x.stop()
    w.assert_ok()


async def test_inv2_fenced_operation_sends_nothing() -> None:
    """After losing a user, an operation on it raises NotOwner and nothing reaches the switch."""
    seen: dict[str, BaseException] = {}

    @flow(priority=Priority.ROUTINE)
    async def stubborn(s: Session, a: User) -> None:
        await s.claim(a)
        await s.dial(a)
        s.quiet(a, "kept")
        try:
            await s.sleep(100)
        except Preempted:
            pass
        try:
            await s.play(a, "busy")
        except NotOwner as exc:
            seen["err"] = exc

    w = World("a", "d")
    x = w.start(stubborn, w["a"])
    await w.run(2)
    e = w.start(emergency, w["d"], w["a"])
    await w.run(5)
    await x.wait()
    err = seen["err"]
    assert isinstance(err, NotOwner)
    assert f"it was preempted by {e.name}" in str(err)
    assert "Claim it before operating on it" in str(err)
    assert w.sim.sent("play") == [(w.manager.leg_of(w["d"]).id,)]  # the ringback, not a's
    assert w.manager.violations == []
    w.assert_ok()


async def test_inv2_epoch_increases_on_every_hand_over() -> None:
    w = World("a", "d")
    epochs = []
    w.manager.events.subscribe(
        lambda ev: (
            epochs.append(ev.epoch) if isinstance(ev, OwnerChanged) and ev.user == "a" else None
        )
    )
    x = w.start(hold, w["a"])
    await w.run(2)
    w.start(emergency, w["d"], w["a"])
    await w.run(5)
    await x.wait()
    assert epochs == sorted(epochs) and len(set(epochs)) == len(epochs) >= 3


async def test_inv3_preemption_needs_strictly_higher_and_follows_the_order() -> None:
    """Interrupted op unwound → media cleared → loser told → claim returned."""
    returned: list[int] = []

    @flow(priority=Priority.FLASH)
    async def taker(s: Session, a: User) -> None:
        await s.claim(a)
        returned.append(s.manager.events.last_seq)

    @flow()
    async def announcing(s: Session, a: User, b: User) -> None:
        await s.claim(a, b)
        await s.dial(a)
        await s.dial(b)
        await s.connect(a, b)
        await s.play(a, Prompt("announcement.wav"))  # in flight when a is taken

    w = World("a", "b", latency={"clear": 0.2})
    w.sim.prompt_seconds["announcement.wav"] = 60
    x = w.start(announcing, w["a"], w["b"])
    await w.run(5)
    same = w.start(taker, w["a"], priority=Priority.ROUTINE)
    with pytest.raises(ClaimDenied):
        await same.result()
    y = w.start(taker, w["a"])
    await y.result()
    evs = w.events
    interrupted = next(e for e in evs if isinstance(e, OpInterrupted) and e.flow == x.name)
    cleared = next(
        e for e in evs if isinstance(e, MediaChanged) and e.command == "clear" and "a" in e.users
    )
    told = next(e for e in evs if isinstance(e, FlowNotified) and e.flow == x.name)
    done = next(e for e in evs if isinstance(e, PreemptionCompleted))
    assert interrupted.seq < cleared.seq < told.seq < done.seq <= returned[0]
    assert interrupted.op == "play"
    assert isinstance(x.error, Preempted)
    assert w.sim.is_idle("a")  # connected-idle: out of the bridge
    assert w.sim.leg_of("a") is not None  # the leg itself stays up
    await x.stop()
    w.assert_ok()


async def test_inv4_ringing_call_survives_preemption() -> None:
    w = World("c", "d")
    w.behave("c", answers(after=20))
    x = w.start(hold, w["c"])  # dials c, which rings for 20 s
    await w.run(3)
    assert w.state("c") == "ringing"
    e = w.start(emergency, w["d"], w["c"])
    await e.wait()
    assert e.outcome == "completed"
    assert w.sim.phones["c"].calls == 1  # never re-dialled
    assert w.sim.hears("c") == {"d"}
    assert x.outcome == "failed" and isinstance(x.error, Preempted)
    w.assert_ok()


async def test_inv5_compensation_is_owner_checked_lifo_and_bounded() -> None:
    order: list[str] = []

    @flow(priority=Priority.ROUTINE)
    async def comp(s: Session, a: User, b: User) -> None:
        await s.claim(a, b)
        await s.dial(a)
        await s.dial(b)

        async def touch_a() -> None:
            order.append("a")
            await s.play(a, "busy")

        async def touch_b() -> None:
            order.append("b")
            await s.hangup(b)

        async def forever() -> None:
            order.append("forever")
            await asyncio.Event().wait()

        s.quiet(a, "kept")
        s.quiet(b, "kept")
        s.compensate(touch_a, a)
        s.compensate(touch_b, b)
        s.compensate(forever)
        s.on_preempted(a, lambda exc: asyncio.sleep(0))
        await s.sleep(1000)

    w = World("a", "b", "d")
    w.manager.compensation_timeout = 3.0
    x = w.start(comp, w["a"], w["b"])
    await w.run(5)
    w.start(emergency, w["d"], w["a"])
    await w.run(5)
    await x.stop()
    assert order == ["forever", "b"]  # LIFO; the step on the lost user never ran
    outcomes = {e.step: e.outcome for e in w.events if isinstance(e, CompensationRan)}
    assert outcomes == {"forever": "timeout", "touch_b": "ran", "touch_a": "skipped"}
    assert w.sim.sent("play") == [(w.manager.leg_of(w["d"]).id,)]  # the ringback, not a's
    w.assert_ok()


async def test_inv6_cancel_is_idempotent_and_stop_waits_for_compensation() -> None:
    ran: list[float] = []

    @flow()
    async def slow_undo(s: Session, a: User) -> None:
        await s.claim(a)

        async def undo() -> None:
            await asyncio.sleep(2)
            ran.append(s.now())

        s.compensate(undo)
        await s.sleep(100)

    w = World("a")
    f = w.start(slow_undo, w["a"])
    await w.run(1)
    assert f.cancel("test") is CancelResult.CANCELLED
    assert f.cancel("again") is CancelResult.ALREADY_CANCELLING
    await w.idle()
    assert f.cancel("while finishing") is CancelResult.ALREADY_FINISHING
    assert await f.stop() == "cancelled"
    assert ran == [pytest.approx(3.0)]
    assert f.cancel() is CancelResult.ALREADY_ENDED
    w.assert_ok()


async def test_inv6_one_flows_crash_never_touches_another() -> None:
    @flow()
    async def crash(s: Session, a: User) -> None:
        await s.claim(a)
        await s.dial(a)
        raise RuntimeError("boom")

    w = World("a", "b", "c")
    healthy = w.start(call, w["b"], w["c"])
    bad = w.start(crash, w["a"])
    assert await bad.wait() == "failed"
    assert isinstance(bad.error, RuntimeError)
    assert await healthy.wait() == "completed"
    with pytest.raises(RuntimeError, match="boom"):
        await bad.result()
    ended = [e for e in w.events if e.kind == "flow.ended" and e.flow == bad.name]
    assert ended and "boom" in (ended[0].error or "")
    assert all(t.get_name() != "" for t in w.manager.tasks)
    w.assert_ok()


async def test_inv7_hangup_is_an_event_and_releases_the_user() -> None:
    got: list[BaseException] = []

    @flow()
    async def waiter(s: Session, a: User, b: User) -> None:
        await s.claim(a, b)
        await s.dial(a)
        try:
            await s.dial(b, timeout=60)  # a hangs up while b rings
        except UserHungUp as exc:
            got.append(exc)
            assert not s.owns(a)

    w = World("a", "b")
    w.behave("b", never_answers())
    f = w.start(waiter, w["a"], w["b"])
    await w.run(3)
    w.sim.hang_up("a")
    await f.result()
    assert isinstance(got[0], UserHungUp) and got[0].user is w["a"]
    assert w.owner("a") is None and w.state("a") == "idle"
    w.assert_ok()


async def test_inv7_hangup_handler() -> None:
    told: list[str] = []

    @flow()
    async def keeper(s: Session, a: User, b: User) -> None:
        await s.claim(a, b)
        await s.dial(a)
        await s.dial(b)

        async def gone(exc: BaseException) -> None:
            told.append(str(exc))

        s.on_hangup(b, gone)
        s.quiet(a, "kept")
        s.quiet(b, "kept")
        await s.wait_hangup(a)

    w = World("a", "b")
    f = w.start(keeper, w["a"], w["b"])
    await w.run(5)
    w.sim.hang_up("b")
    await w.run(1)
    assert told and "'b' hung up" in told[0]
    assert f.state.value == "running"  # the flow goes on with a
    w.sim.hang_up("a")
    assert await f.wait() == "completed"
    w.assert_ok(quiescent=True)


async def test_inv8_no_leaks_ownerless_legs_are_collected_after_grace() -> None:
    @flow()
    async def leave_behind(s: Session, a: User, k: User) -> None:
        await s.claim(a, k)
        await s.dial(a)
        await s.dial(k)

    w = World("a", grace=5.0)
    w.add("k", keep=True)  # an always-on dispatcher line
    f = w.start(leave_behind, w["a"], w["k"])
    await f.result()
    assert w.state("a") == "connected"
    await w.run(4.9)
    assert w.state("a") == "connected"  # still within grace
    await w.run(0.2)
    assert w.state("a") == "idle"
    assert any(e.kind == "leg.collected" and e.user == "a" for e in w.events)
    assert w.state("k") == "connected"  # keep: never collected
    w.assert_ok(quiescent=True)


async def test_inv8_claim_within_grace_keeps_the_leg() -> None:
    @flow()
    async def first(s: Session, a: User) -> None:
        await s.claim(a)
        await s.dial(a)

    w = World("a", grace=5.0)
    await w.start(first, w["a"]).result()
    await w.run(2)
    f2 = w.start(hold, w["a"])
    await w.run(10)
    assert w.state("a") == "connected" and w.owner("a") == f2.name
    assert w.sim.phones["a"].calls == 1
    await f2.stop()
    await w.run(6)
    assert w.state("a") == "idle"
    w.assert_ok(quiescent=True)


async def test_inv9_every_hand_over_is_an_event_replaying_to_the_ledger() -> None:
    w = World("a", "b", "c", "d")
    w.start(call, w["a"], w["b"])
    x = w.start(hold, w["c"])
    await w.run(3)
    w.start(emergency, w["d"], w["c"])
    await w.run(3)
    w.sim.hang_up("a")
    await w.run(3)
    await x.wait()
    replay: dict[str, tuple[str | None, int]] = {}
    seqs = [e.seq for e in w.events]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # gap-free sequence
    for e in w.events:
        if isinstance(e, OwnerChanged):
            replay[e.user] = (e.new, e.epoch)
    for rec in w.manager.ledger.records.values():
        owner = rec.owner.name if rec.owner else None
        assert replay.get(rec.user.id, (None, 0)) == (owner, rec.epoch)
    w.assert_ok()


async def test_settled_p2p_partner_hears_preemption_tone_then_is_released() -> None:
    w = World("a", "b", "d")
    w.start(call, w["a"], w["b"])
    await w.run(5)
    assert w.owner(
        "a",
    ) is not None and w.owner("a").startswith("p2p")
    e = w.start(emergency, w["d"], w["a"])
    await w.run(1)
    assert "tone:preemption" in w.hears("b")
    await w.run(5)
    assert w.state("b") == "idle"
    _leg, cause, reason = w.sim.hangups[-1]
    assert cause is Cause.PREEMPTED
    assert reason == EndReason(e.name, PreemptionCause.UA)  # the switch is told who took "a"
    assert w.hears("a") == {"d"}
    w.assert_ok()


async def test_p2p_partner_hung_up_when_one_party_hangs_up() -> None:
    w = World("a", "b")
    await w.start(call, w["a"], w["b"]).result()
    w.sim.hang_up("b")
    await w.run(1)
    assert w.state("a") == "idle" and not w.manager.callinfos
    w.assert_ok(quiescent=True)


def test_p2p_needs_two_users() -> None:
    u = User("x")
    with pytest.raises(Exception, match="two different users"):
        P2P(u, u)


async def test_inv8_an_always_on_line_ringing_for_nobody_is_collected() -> None:
    # keep spares an always-on line that is up; a flow gone while it still rang left the
    # phone ringing for ever (emergency_inbound did, before it cancelled the ringing itself).
    @flow()
    async def walk_away(s: Session, a: User, k: User) -> None:
        await s.claim(a, k)
        await s.dial(a)
        await s.dial(k)  # k never answers; a hangs up meanwhile: UserHungUp escapes

    w = World("a", grace=5.0)
    w.add("k", keep=True, behaviour=never_answers())
    f = w.start(walk_away, w["a"], w["k"])
    await w.run(2)
    assert w.state("k") == "ringing"
    w.sim.hang_up("a")
    await f.wait()
    await w.run(4.9)
    assert w.state("k") == "ringing"  # within grace: a flow may still claim it
    await w.run(0.2)
    assert w.state("k") == "idle"
    assert any(e.kind == "leg.collected" and e.user == "k" for e in w.events)
    w.assert_ok(quiescent=True)
