"""The watch's dead-air check (invariant 11) on a switch that takes time: what a phone hears
changes when a slow command lands or a tone ends, with no core event. The watch samples then
too — else a notice heard between two events goes unseen, and the silences before and after it
are counted as one (a false dead air, found by an adversarial run on hold: the holder's
preemption notice played in full between two checks)."""

from __future__ import annotations

from baton.core import Priority, Session, Tone, User, flow
from baton.testing import World


@flow(priority=Priority.ROUTINE)
async def tone_between_silences(s: Session, u: User, tone: bool = True) -> None:
    """Up at t≈1; 1.5 s of silence; a 1 s tone (the switch takes 0.5 s to start it); 1.5 s of
    silence; hung up. No silence reaches 3 s — unless the tone is left out."""
    await s.claim(u)
    await s.dial(u)
    await s.sleep(1.0)
    if tone:
        await s.play(u, Tone("confirm", 1.0))
        await s.sleep(2.5)
    else:
        await s.sleep(3.0)
    await s.hangup(u)


async def test_a_tone_heard_between_two_events_breaks_the_silence() -> None:
    w = World("u", latency={"play": 0.5}, dead_air=3.0)
    await w.start(tone_between_silences, w["u"]).result()
    await w.run(5)
    assert "tone:confirm" in w.heard("u")
    assert w.problems() == []


async def test_the_same_silence_without_the_tone_is_dead_air() -> None:
    w = World("u", latency={"play": 0.5}, dead_air=3.0)
    await w.start(tone_between_silences, w["u"], tone=False).result()
    assert any(p.startswith("inv11: u, held by tone_between_silences") for p in w.problems())
