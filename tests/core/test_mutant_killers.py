"""Behaviour the mutation run found unpinned (docs/mutants.md): each test kills a seeded fault
that the rest of the suite let through, and names it."""

from __future__ import annotations

from collections.abc import Callable

from core_flows import call, hold

from baton.core import ClaimDenied, NotOwner, Priority, Session, User, flow
from baton.core.events import LegStateChanged
from baton.testing import World

outcome: dict[str, object] = {}


@flow(priority=Priority.ROUTINE)
async def take_pair(s: Session, a: User, b: User) -> None:
    """Claim two users, waiting a second for the busy one; report what the flow holds."""
    try:
        await s.claim(a, b, wait=1)
        outcome["claim"] = "granted"
    except ClaimDenied:
        outcome["claim"] = "denied"
    outcome["holds"] = sorted(u.id for u in s.users)


async def test_a_claim_denied_half_way_gives_back_what_it_took() -> None:
    """Kills ``failed_claim_keeps_users``: a claim is all or nothing; one that waited for a busy
    user and was denied does not keep the free user it took meanwhile."""
    outcome.clear()
    w = World("a", "b")
    w.start(hold, w["b"])
    await w.run(1)
    f = w.start(take_pair, w["a"], w["b"])
    await w.run(3)
    assert f.ended
    assert outcome == {"claim": "denied", "holds": []}
    assert w.owner("a") is None
    w.assert_ok()


@flow(priority=Priority.ROUTINE)
async def play_and_let_go(s: Session, u: User) -> None:
    """Leave ``u`` behind with a tone playing (released, not cleared)."""
    await s.claim(u)
    await s.dial(u)
    await s.play(u, "hold", loop=True)
    s.release(u)


@flow(priority=Priority.ROUTINE)
async def take_and_listen(s: Session, u: User, probe: Callable[[], set[str]]) -> None:
    """Claim ``u`` and note what it hears the moment the claim returns."""
    await s.claim(u)
    outcome["hears"] = probe()
    await s.hangup(u)


async def test_a_user_released_with_media_reaches_its_next_claimer_connected_idle() -> None:
    """Kills ``claimed_user_not_cleaned``: the next claimer starts from a clean user, not from
    the hold tone the last owner left playing (invariant 12)."""
    outcome.clear()
    w = World("u")
    await w.start(play_and_let_go, w["u"]).wait()
    assert w.hears("u") == {"tone:hold"}
    f = w.start(take_and_listen, w["u"], lambda: w.hears("u"))
    await w.run(1)
    assert f.ended
    assert outcome["hears"] == set()
    w.assert_ok()


async def test_a_hang_up_is_published_as_the_leg_ending() -> None:
    """Kills ``leg_end_not_published``: consoles and traces learn of a hang-up from the
    ``leg.state ended`` event (invariant 9: everything is observable)."""
    w = World("a", "b")
    await w.start(call, w["a"], w["b"]).wait()
    w.sim.hang_up("a")
    await w.run(1)
    ended = [
        e for e in w.kinds("leg.state") if isinstance(e, LegStateChanged) and e.state == "ended"
    ]
    assert {e.user for e in ended} == {"a", "b"}
    w.assert_ok()


@flow(priority=Priority.ROUTINE)
async def crashes_in_a_child(s: Session) -> None:
    async def child() -> None:
        raise RuntimeError("a bug in a child task")

    s.spawn(child())
    await s.sleep(10)


async def test_a_crash_fails_its_own_flow_and_nobody_else() -> None:
    """Kills ``crash_cancels_other_flows``: the supervisor reports a crash; it never
    propagates to other flows (invariant 6)."""
    w = World("a")
    bystander = w.start(hold, w["a"])
    await w.run(1)
    crashed = w.start(crashes_in_a_child)
    await w.run(1)
    assert await crashed.wait() == "failed"
    assert not bystander.ended
    assert w.owner("a") == bystander.name
    assert w.state("a") == "connected"
    w.assert_ok()


@flow(priority=Priority.ROUTINE)
async def slow_undo(s: Session, u: User) -> None:
    """Hold ``u`` with a two-second compensation."""
    await s.claim(u)
    await s.dial(u)

    async def undo() -> None:
        outcome["undo"] = "started"
        await s.sleep(2)
        outcome["undo"] = "finished"

    s.compensate(undo)
    await s.sleep(10_000)


async def test_a_compensation_survives_a_cancellation_from_outside_the_core() -> None:
    """Kills ``compensation_not_shielded``: a flow's task cancelled while it compensates (a
    server shutting down cancels every task) still finishes its compensation (invariant 5)."""
    outcome.clear()
    w = World("u")
    f = w.start(slow_undo, w["u"])
    await w.run(1)
    f.cancel("stop")
    await w.run(0.5)
    assert outcome == {"undo": "started"}
    assert f.task is not None
    f.task.cancel()
    await w.run(5)
    assert outcome == {"undo": "finished"}
    assert f.ended
    w.assert_ok()


@flow(priority=Priority.FLASH)
async def claim_in_child_then_play(s: Session, u: User) -> None:
    """Claim ``u`` in a child task; meanwhile the main task tries to play to it."""

    async def take() -> None:
        await s.claim(u)
        outcome["claim"] = "granted"

    s.spawn(take())
    await s.sleep(0.1)  # the preemption is still clearing u's media
    outcome["owns"] = s.owns(u)
    try:
        await s.play(u, "confirm", wait=False)
        outcome["play"] = "sent"
    except NotOwner:
        outcome["play"] = "refused"
    await s.sleep(1)


async def test_a_claimer_cannot_operate_before_its_preemption_completes() -> None:
    """Kills ``fence_admits_claimer_in_progress``: while the switch is still clearing the user
    for it (steps 3-6), the claimer already holds the user in the ledger but is refused any
    operation on it: its commands would land before the clear and be wiped (invariant 3)."""
    outcome.clear()
    w = World("u", "b", latency={"clear": 0.5})
    w.start(hold, w["u"], w["b"])
    await w.run(3)
    assert w.hears("u") == {"b"}
    f = w.start(claim_in_child_then_play, w["u"])
    await w.run(3)
    assert outcome == {"owns": False, "play": "refused", "claim": "granted"}
    assert f.ended
    w.assert_ok()


@flow(priority=Priority.ROUTINE)
async def dtmf_then_reclaim(s: Session, u: User) -> None:
    """Register a digit callback for ``u``, give ``u`` away, take it back, collect a digit."""
    await s.claim(u)
    await s.dial(u)
    s.on_dtmf(u, lambda _, digit: outcome.setdefault("callback", digit))
    s.release(u)
    await s.claim(u)
    outcome["collected"] = await s.collect(u, max_digits=1, timeout=5)


async def test_a_digit_callback_does_not_survive_giving_the_user_away() -> None:
    """Kills ``handlers_survive_hand_over``: what a flow registered for a user (handlers, a
    digit callback) goes with the user when it is handed over; taken back, the user starts
    clean (invariant 12)."""
    outcome.clear()
    w = World("u")
    f = w.start(dtmf_then_reclaim, w["u"])
    await w.run(2)
    w.sim.press("u", "5")
    await w.run(3)
    assert outcome == {"collected": "5"}
    assert f.ended
    w.assert_ok()


@flow(priority=Priority.FLASH)
async def take_one(s: Session, u: User) -> None:
    await s.claim(u)
    outcome["granted_at"] = s.now()


async def test_a_preemption_is_not_held_by_a_switch_that_never_clears() -> None:
    """Kills ``preemption_clear_unbounded``: the media clear of a preemption is bounded by the
    manager's command timeout; a switch that never answers delays the claim, never holds it
    (invariant 10)."""
    outcome.clear()
    w = World("u", "b", latency={"clear": 1000})
    w.start(hold, w["u"], w["b"])
    await w.run(3)
    started = w.manager.now()
    f = w.start(take_one, w["u"])
    await w.run(w.manager.command_timeout + 1)
    assert f.ended
    granted_at = outcome["granted_at"]
    assert isinstance(granted_at, float)
    assert granted_at - started <= w.manager.command_timeout + 0.5
    assert any("clear took over" in str(e) for e in w.kinds("problem"))


@flow(priority=Priority.ROUTINE)
async def collect_in_child_then_release(s: Session, u: User) -> None:
    """A child task waits for a digit from ``u`` while the main task gives ``u`` away."""
    await s.claim(u)
    await s.dial(u)

    async def listen() -> None:
        try:
            outcome["child"] = await s.collect(u, max_digits=1, timeout=30)
        except NotOwner:
            outcome["child"] = "NotOwner"

    s.spawn(listen())
    await s.sleep(0.5)
    s.release(u)
    await s.sleep(10)


@flow(priority=Priority.ROUTINE)
async def collect_one(s: Session, u: User) -> None:
    await s.claim(u)
    s.quiet(u, "asked to press a digit")
    outcome["next owner"] = await s.collect(u, max_digits=1, timeout=5)


async def test_a_wait_on_a_user_given_away_stops_at_the_hand_over() -> None:
    """Kills ``released_waits_outlive_hand_over``: a flow that gives a user away while another
    of its tasks still waits on it (a digit collection) stops that wait with ``NotOwner``; the
    next owner's digits are its own (invariant 12)."""
    outcome.clear()
    w = World("u")
    w.start(collect_in_child_then_release, w["u"])
    await w.run(2)
    assert outcome == {"child": "NotOwner"}
    w.start(collect_one, w["u"])
    await w.run(0.5)
    w.sim.press("u", "7")
    await w.run(2)
    assert outcome == {"child": "NotOwner", "next owner": "7"}
    w.assert_ok()


@flow(priority=Priority.ROUTINE)
async def park_quietly(s: Session, u: User) -> None:
    """Hold ``u`` in a declared silence."""
    await s.claim(u)
    await s.dial(u)
    s.quiet(u, "parked on purpose")
    await s.sleep(10_000)


@flow(priority=Priority.FLASH)
async def take_and_forget(s: Session, u: User) -> None:
    """Take ``u`` and leave it connected in silence: dead air, which the watch must see."""
    await s.claim(u)
    await s.sleep(10)


async def test_a_declared_silence_does_not_cover_the_next_owner() -> None:
    """Kills ``quiet_survives_hand_over``: a wait in silence the last owner declared ends with
    the hand-over; the next owner leaving the user in silence is dead air (invariants 11, 12)."""
    w = World("u")
    w.start(park_quietly, w["u"])
    await w.run(3)
    assert w.problems() == []
    w.start(take_and_forget, w["u"])
    await w.run(5)
    assert any(p.startswith("inv11: u, held by take_and_forget") for p in w.problems())


@flow(priority=Priority.ROUTINE)
async def hold_a_room(s: Session, u: User) -> None:
    """Hold ``u`` in a meeting until cancelled (the meeting is destroyed when the flow ends)."""
    await s.claim(u)
    await s.dial(u)
    await s.meeting(u)
    await s.sleep(10_000)


async def test_a_flow_asked_to_end_ends_by_its_deadline_whatever_the_switch_does() -> None:
    """Kills ``end_deadline_unbounded``: a flow whose clean-up waits on a switch that never
    answers (the meeting's destruction) still ends by ``end_timeout`` (invariant 10)."""
    w = World("u", latency={"destroy_meeting": 1000})
    f = w.start(hold_a_room, w["u"])
    await w.run(3)
    f.cancel("stop")
    await w.run(w.manager.end_timeout + 1)
    assert f.ended
    assert w.owner("u") is None


@flow(priority=Priority.ROUTINE)
async def ring_back_and_return(s: Session, u: User) -> None:
    """End while ``u`` still hears a looping ringback."""
    await s.claim(u)
    await s.dial(u)
    await s.play(u, "ringback", loop=True)


async def test_a_flow_that_ends_leaves_its_users_connected_idle() -> None:
    """Kills ``ended_flow_leaves_media``: what a flow leaves behind is released connected-idle —
    an always-on line left by a flow does not hear its ringback forever."""
    w = World(User("d", keep=True))
    f = w.start(ring_back_and_return, w["d"])
    await w.run(3)
    assert f.ended
    assert w.owner("d") is None
    assert w.state("d") == "connected"
    assert w.hears("d") == set()
    w.assert_ok()
