"""Races the contention storm (``test_random_mix_storm``: a heavy-tailed switch, two takes of
one user in one tick, phones dying inside a flow's clean-up, every command sent at random)
found in the library's flows. Each test pins the exact interleaving; each failed before its
fix with the flow crashing on ``NotOwner`` — a loss it had swallowed, or a second task of its
own on the same user — and its party left to the leak collector.
"""

from __future__ import annotations

from baton.core import NoAnswer, Preempted, Priority, Session, Tone, User, flow
from baton.flows import (
    DispatcherQueue,
    OnFail,
    blind_transfer,
    call,
    conference,
    emergency_call,
    monitor,
    queued_call,
    whisper,
)
from baton.flows._common import claim_call
from baton.switch.sim import never_answers
from baton.testing import World


@flow(priority=Priority.ROUTINE)
async def _play_and_let_go(s: Session, u: User) -> None:
    """Leave ``u`` released with media on its line: the next claimer clears it first."""
    await s.claim(u)
    await s.dial(u)
    await s.play(u, Tone("ringback"), loop=True)
    s.release(u)


@flow(priority=Priority.FLASH)
async def _grab(s: Session, u: User) -> None:
    await s.claim(u)
    await s.sleep(5)


async def test_a_call_whose_callee_is_taken_while_its_caller_is_cleared_tells_the_caller() -> None:
    """The caller's line, left with media on it, is being cleared by the call's claim when a
    higher flow takes the callee (storm seed 28). The claim returned as if it held both and
    the call crashed with NotOwner registering its clean-up for the callee, the caller
    released into silence. Now the claim raises the loss: the call ends Preempted, and the
    caller hears the preemption notice and is hung up."""
    w = World("caller", "callee", latency={"clear": 1.0})
    await w.start(_play_and_let_go, w["caller"]).result()
    f = w.start(call, w["caller"], w["callee"])
    await w.run(0.5)
    w.start(_grab, w["callee"])
    await w.run(6)
    assert f.ended and isinstance(f.error, Preempted)
    assert "tone:preemption" in w.heard("caller")
    assert w.sim.leg_of("caller") is None  # hung up after the notice, not collected
    assert not w.kinds("leg.collected")
    w.assert_ok()


async def test_a_blind_transfer_party_hanging_up_during_the_busy_tone_ends_it_cleanly() -> None:
    """The target does not answer, the transferor cannot be recalled (taken meanwhile), so the
    party hears the busy tone and is hung up — and hangs up itself during that tone (storm
    seed 691). The tone's best-effort play swallowed the hang-up, and the transfer then hung
    up a party it no longer held: NotOwner. It ends with the target's NoAnswer."""
    w = World("party", "transferor", "target")
    await w.start(call, w["party"], w["transferor"]).result()
    w.behave("target", never_answers())
    f = w.start(blind_transfer, w["party"], w["transferor"], w["target"], 3.0, OnFail.RELEASE)
    await w.run(4.0)  # the ring deadline passed: the party hears the busy tone
    assert "tone:busy" in w.hears("party")
    w.sim.hang_up("party")
    await w.run(3)
    assert f.ended and isinstance(f.error, NoAnswer)
    w.assert_ok(quiescent=True)


async def test_adding_a_member_already_ringing_does_not_ring_them_twice() -> None:
    """``add`` for a member the conference is already ringing started a second ringing task
    on the same call (storm seed 902). When the phone gave up, one task released the member
    and the other's dial learned it was given away: NotOwner, and the conference crashed.
    A member already ringing or in the room is left as it is; ``add`` says so."""
    w = World("m")
    chair = w.add("chair", keep=True)
    w.behave("m", never_answers())
    conf = w.start(conference, chair, [w["m"]], ring=4.0)
    await w.run(1)
    assert await conf.send("add", user="m") == "ringing"
    await w.run(5)  # the ring deadline passes
    assert not conf.ended
    await conf.send("end")
    assert await conf.result() == {"m": "no_answer"}
    w.assert_ok(quiescent=True)


async def test_a_queued_caller_taken_as_the_music_stops_ends_the_offer_cleanly() -> None:
    """A position answered and was bridged to the queued caller; the queue's music was being
    stopped when a higher flow took the caller (wide mix seed 300237). The stop swallowed the
    news and the flow settled a P2P with a caller it no longer held: NotOwner. Now the loss is
    the offer's like any other: the position is given back, and the flow ends Preempted."""
    w = World("c", latency={"stop_play": 1.0})
    d = w.add("d", keep=True)
    q = DispatcherQueue("q", w.manager, [d])
    w.sim.call_in("c", "100")
    f = w.start(queued_call, w["c"], q)
    await w.run(1.5)  # the position answered at 1 s: bridged; the music is being stopped
    assert w.hears("c") >= {"d"}
    w.start(_grab, w["c"])
    await w.run(2)
    assert f.ended and isinstance(f.error, Preempted)
    assert w.owner("d") is None  # the position is free for the next call
    w.assert_ok()


async def test_parties_pulled_out_of_a_call_by_a_failed_claim_are_told_at_once() -> None:
    """A monitor took both parties of a call and lost its dispatcher to an emergency in the
    same instant (``baton check call --seed 9002027016``: two takes of one user). The failed
    claim told the parties it had pulled out of their call one after the other — the second
    heard nothing while the first heard its three-second preemption notice: dead air. They
    hear it together, then are hung up."""
    w = World("a", "b", "f")
    d = w.add("d", keep=True)
    await w.start(call, w["a"], w["b"]).result()
    mon = w.start(monitor, d, w["a"])
    w.start(emergency_call, d, w["f"])
    await w.run(1)
    assert "tone:preemption" in w.hears("a")
    assert "tone:preemption" in w.hears("b")
    await w.run(5)
    assert mon.ended and w.sim.leg_of("a") is None and w.sim.leg_of("b") is None
    w.assert_ok()


async def test_an_always_on_line_pulled_out_by_a_failed_claim_is_let_go_at_once() -> None:
    """The same race with a dispatcher's always-on line among the parties (``baton check call
    --seed 9004027071``): a whisper took the dispatcher and its caller out of their call and lost
    its own dispatcher in the same instant. The line, not to be hung up, was kept — held by the
    failing whisper, in silence, while the other party heard its notice. It is let go at
    once: connected, idle, held by nobody."""
    w = World("f", "x", "g")
    d = w.add("d", keep=True)
    await w.start(call, d, w["f"]).result()
    wh = w.start(whisper, w["x"], d)
    w.start(emergency_call, w["x"], w["g"])
    await w.run(0.5)
    assert w.owner("d") is None and w.sim.leg_of("d") is not None
    assert "tone:preemption" in w.hears("f")
    await w.run(5)
    assert wh.ended
    w.assert_ok()


@flow(priority=Priority.ROUTINE)
async def _two_on_the_line(s: Session, a: User, b: User) -> None:
    await claim_call(s, a, b)
    await s.dial(a)
    await s.dial(b)
    s.quiet(a, "waiting")
    s.quiet(b, "waiting")
    await s.sleep(30)


async def test_a_slow_hang_up_of_one_party_does_not_strand_the_other() -> None:
    """A flow that failed or was cancelled hangs up the parties it still holds — one after the
    other, within one compensation step. On a heavy-tailed switch the first hang-up outlasted
    the step's deadline, the second was never sent, and that party was left to the leak
    collector (``baton check attended_transfer --seed 9005027036 ... ; heavy switch``). The
    hang-ups go out together."""
    w = World("a", "b", latency={"hangup": 6.0})
    f = w.start(_two_on_the_line, w["a"], w["b"])
    await w.run(3)
    f.cancel("test")
    await w.run(15)
    assert f.ended
    sent = [(t, legs) for t, c, legs in w.sim.commands if c == "hangup"]
    assert len(sent) == 2 and sent[0][0] == sent[1][0]  # both at once, by the flow
    assert not w.kinds("leg.collected")
    w.assert_ok()
