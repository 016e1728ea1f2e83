"""Races the contention storm (``tests/flows/test_random_mix_storm.py``: a heavy-tailed switch,
two takes of one user in one tick, phones dying inside compensations) found. Each test pins the
exact interleaving, on a switch whose latencies are fixed so that it replays.
"""

from __future__ import annotations

from baton.core import P2P, NotOwner, Preempted, Priority, Session, Superseded, Tone, User, flow
from baton.testing import World

outcome: dict[str, str] = {}


@flow(priority=Priority.ROUTINE)
async def _play_and_let_go(s: Session, u: User) -> None:
    """Leave ``u`` released with media on its line: the next claimer clears it first."""
    await s.claim(u)
    await s.dial(u)
    await s.play(u, Tone("ringback"), loop=True)
    s.release(u)


@flow(priority=Priority.ROUTINE)
async def _claim_and_register(s: Session, a: User, b: User) -> None:
    try:
        await s.claim(a, b)
        outcome["claim"] = "granted"

        async def undo() -> None:
            pass

        s.compensate(undo, a, b)
        outcome["compensate"] = "registered"
    except (Preempted, NotOwner) as exc:
        outcome["claim"] = type(exc).__name__


@flow(priority=Priority.FLASH)
async def _grab(s: Session, u: User) -> None:
    await s.claim(u)
    await s.sleep(5)


async def test_a_user_taken_while_the_claim_clears_another_is_raised_by_the_claim() -> None:
    """A claim of two users took the first at once and then cleared the second, which a
    previous holder had left with media on its line. A higher flow took the first user during
    that clear; the notice waited for the flow's next operation, and the claim returned as if
    both were held. The flow's next step — registering a compensation for both — then failed
    with NotOwner: the library's ``call`` crashed, and its caller was released into silence
    (storm seed 28). A claim does not return granted for a user it lost meanwhile: it raises
    that loss (Preempted), as any operation raises news pending about its users."""
    outcome.clear()
    w = World("a", "b", latency={"clear": 1.0})
    await w.start(_play_and_let_go, w["b"]).result()
    f = w.start(_claim_and_register, w["a"], w["b"])
    await w.run(0.5)  # the claim holds a and is clearing b
    w.start(_grab, w["a"])
    await w.run(2)
    assert f.ended
    assert outcome == {"claim": "Preempted"}
    w.assert_ok()


@flow(priority=Priority.ROUTINE)
async def _bridge_then_settle(s: Session, a: User, b: User) -> None:
    await s.claim(a, b)
    await s.dial(a)
    await s.dial(b)
    await s.connect(a, b)
    try:
        await s.play(a, Tone("confirm", 0.1))  # slow: b is taken meanwhile
        s.settle(P2P(a, b))
        outcome["settle"] = "settled"
    except (Preempted, NotOwner) as exc:
        outcome["settle"] = f"{type(exc).__name__} {exc.user.id}"


async def test_settling_a_user_being_taken_raises_the_preemption_not_not_owner() -> None:
    """A flow's operation on one party was in flight when a higher flow took the other party,
    whose media clear took time. The operation returned inside that preemption — the ledger
    had flipped, the flow was not told yet (step 6 comes after the clear) — and the flow
    settled a call with both: NotOwner, with no reason, and the flow crashed (the queued call
    of wide mix seed 301851). A synchronous call (settle, compensate, quiet) on a user being
    taken from the flow cannot wait for step 6 as an operation does: it raises the
    preemption there, and step 6 tells the flow nothing twice."""
    outcome.clear()
    w = World("a", "b", latency={"play": 1.0, "clear": 1.0})
    f = w.start(_bridge_then_settle, w["a"], w["b"])
    await w.run(2.5)  # both answered, bridged; the play on a is on its way
    assert w.hears("a") == {"b"}
    w.start(_grab, w["b"])  # b's clear takes a second: the play returns inside it
    await w.run(3)
    assert f.ended
    assert outcome == {"settle": "Preempted b"}
    # (told once: the flow, ended by then, is not told again at step 6)
    assert not [ev for ev in w.kinds("flow.notified") if ev.flow == f.name]
    w.assert_ok()


@flow(priority=Priority.ROUTINE)
async def _connect(s: Session, a: User, b: User) -> None:
    await s.claim(a, b)
    await s.dial(a)
    await s.dial(b)
    await s.connect(a, b)  # slow: both parties are taken while it is on its way
    await s.sleep(10)


@flow(priority=Priority.PRIORITY)
async def _take_a_then_b(s: Session, a: User, b: User) -> None:
    try:
        await s.claim(a)
    except Superseded:
        await s.claim(b)  # beaten to a: b instead, in the same instant
    await s.sleep(5)


async def test_a_second_preemption_of_an_operations_users_keeps_the_event_order() -> None:
    """Two flows take one party of a bridge in the same instant (the second supersedes the
    first), and the first, beaten, takes the other party at once (``baton check inbound_call
    --seed 9001027033``, the new ``race`` perturbation). The bridge had already unwound —
    stopped by the first preemption — so the second preemption cleared its user at once, and
    the operation's interruption was published after that clear: inv3 reported the events
    out of order. The interruption is published when the operation unwinds, before any
    clear of any of its users."""
    w = World("a", "b", latency={"bridge": 1.0, "clear": 0.5})
    w.start(_connect, w["a"], w["b"])
    await w.run(2.5)  # both answered; the bridge is on its way
    w.start(_take_a_then_b, w["a"], w["b"])
    w.start(_take_a_then_b, w["a"], w["b"])
    await w.run(8)
    assert w.owner("b") is None or w.owner("b").startswith("_take_a_then_b")
    w.assert_ok()


@flow(priority=Priority.ROUTINE)
async def _connect_and_report(s: Session, a: User, b: User) -> None:
    await s.claim(a, b)
    await s.dial(a)
    await s.dial(b)
    try:
        await s.connect(a, b)  # slow: both parties are taken by one claim meanwhile
    except Preempted as exc:
        outcome["lost"] = ",".join(sorted(u.id for u in exc.users))


@flow(priority=Priority.PRIORITY)
async def _take_both(s: Session, a: User, b: User) -> None:
    await s.claim(a, b)
    await s.sleep(5)


async def test_both_users_of_an_operation_taken_by_one_claim_are_raised_together() -> None:
    """One claim took both parties of a bridge in flight (the console's Hang up of a queued
    call being put through: wide mix seed 401061). The bridge raised the loss of the first
    only, while the second was marked told by that same operation: the flow, believing it
    still held the caller, played it music — NotOwner. The operation raises both."""
    outcome.clear()
    w = World("a", "b", latency={"bridge": 1.0})
    w.start(_connect_and_report, w["a"], w["b"])
    await w.run(2.5)  # both answered; the bridge is on its way
    w.start(_take_both, w["a"], w["b"])
    await w.run(3)
    assert outcome == {"lost": "a,b"}
    w.assert_ok()
