"""Fan-out: the listeners of a one-speaker meeting (a push-to-talk group with a talker) are sent
the speaker's packets as they arrive, instead of a mix at the next tick.

Mixer rules (sans-IO), then the engine on real loopback UDP: who is fanned out and when it
stops; the granted talker's first packet reaches the listeners before the next tick; codecs are
translated; a listener's own audio is heard by nobody; a playback puts everyone back in the mix.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Coroutine
from typing import Any

import numpy as np
import pytest

from baton.core.port import MeetingMode, Member, Target, Tone
from baton.switch.media.dtmf import encode_event
from baton.switch.media.engine import MediaEngine
from baton.switch.media.mixer import FRAME, Mixer

from .phones import FakePhone, until

LISTEN, SPEAK, MUTED, WHISPER = (
    MeetingMode.LISTEN,
    MeetingMode.SPEAK,
    MeetingMode.MUTED,
    MeetingMode.WHISPER,
)
CANDIDATES = [400.0, 700.0, 1000.0, 1300.0]


# ---- the mixer ------------------------------------------------------------------------------


def ptt_room(*legs: str) -> Mixer:
    mixer = Mixer(fanout=True)
    for leg in legs:
        mixer.add_port(leg)
    mixer.create_meeting("g")
    for leg in legs:
        mixer.join("g", Member(leg, LISTEN))
    return mixer


def test_listeners_of_the_one_speaker_are_fanned_out_and_not_mixed() -> None:
    mixer = ptt_room("a", "b", "c", "d")
    assert mixer.take_fanout_changes() == {}  # nobody speaks: everyone is mixed (silence)
    mixer.join("g", Member("a", SPEAK))
    assert mixer.take_fanout_changes() == {"b": "a", "c": "a", "d": "a"}
    assert mixer.fanout_source("b") == "a"
    assert mixer.fanout_source("a") is None  # the talker hears the (silent) mix
    assert mixer.mixed_legs() == ["a"]
    out = mixer.tick({"a": np.full(FRAME, 1000, np.int16)})
    assert out.legs == ["a"] and not out.active.any()  # the talker hears nobody
    # The floor passes: a listens, d talks.
    mixer.join("g", Member("a", LISTEN))
    mixer.join("g", Member("d", SPEAK))
    assert mixer.take_fanout_changes() == {"a": "d", "b": "d", "c": "d", "d": None}
    # Released: nobody speaks, everyone back in the mix.
    mixer.join("g", Member("d", LISTEN))
    assert mixer.take_fanout_changes() == dict.fromkeys("abc", None)
    assert sorted(mixer.mixed_legs()) == ["a", "b", "c", "d"]


def test_muted_members_are_fanned_out_too() -> None:
    mixer = ptt_room("a", "b")
    mixer.join("g", Member("b", MUTED))
    mixer.join("g", Member("a", SPEAK))
    assert mixer.take_fanout_changes() == {"b": "a"}


@pytest.mark.parametrize(
    ("change", "back_in_the_mix"),
    [
        # a second speaker: listeners hear a mix of two
        (lambda m: m.join("g", Member("c", SPEAK)), {"b", "c", "d"}),
        # a whisper to anyone: the room is mixed
        (lambda m: m.join("g", Member("c", WHISPER, whisper_to="b")), {"b", "c", "d"}),
        # a playback to the room (the floor-idle tone): everyone hears it over the talker
        (lambda m: m.play(Target(meeting="g"), np.zeros(FRAME, np.int16)), {"b", "c", "d"}),
        # a recording of the room: it is the mix
        (lambda m: m.record(Target(meeting="g"), _Sink()), {"b", "c", "d"}),
        # a tone to one listener (the revoke tone): that one is mixed, the others are not
        (lambda m: m.play(Target(leg="c"), np.zeros(FRAME, np.int16)), {"c"}),
        # a listener also in another meeting, or in a bridge, hears more than the talker
        (lambda m: (m.create_meeting("h"), m.join("h", Member("c"))), {"c"}),
        (lambda m: m.bridge("c", "x"), {"c"}),
        # the talker leaves
        (lambda m: m.leave("g", "a"), {"b", "c", "d"}),
    ],
)
def test_what_puts_listeners_back_in_the_mix(
    change: Callable[[Mixer], object], back_in_the_mix: set[str]
) -> None:
    mixer = ptt_room("a", "b", "c", "d")
    mixer.add_port("x")
    mixer.join("g", Member("a", SPEAK))
    mixer.take_fanout_changes()
    change(mixer)
    changes = mixer.take_fanout_changes()
    assert {leg for leg, src in changes.items() if src is None} == back_in_the_mix
    assert set(mixer.mixed_legs()) >= back_in_the_mix


def test_a_finished_playback_fans_the_listeners_out_again() -> None:
    mixer = ptt_room("a", "b")
    mixer.join("g", Member("a", SPEAK))
    assert mixer.take_fanout_changes() == {"b": "a"}
    mixer.play(Target(meeting="g"), np.zeros(FRAME, np.int16))  # one frame
    assert mixer.take_fanout_changes() == {"b": None}
    mixer.tick({})  # the playback ends in this tick
    assert mixer.take_fanout_changes() == {"b": "a"}


def test_removing_a_fanned_out_port_reports_it() -> None:
    mixer = ptt_room("a", "b", "c")
    mixer.join("g", Member("a", SPEAK))
    mixer.take_fanout_changes()
    mixer.remove_port("b")
    assert mixer.take_fanout_changes() == {"b": None}
    mixer.remove_port("a")  # the talker goes: c is mixed again
    assert mixer.take_fanout_changes() == {"c": None}


def test_without_fanout_every_member_is_mixed() -> None:
    mixer = Mixer()
    for leg in "ab":
        mixer.add_port(leg)
    mixer.create_meeting("g")
    mixer.join("g", Member("a", SPEAK))
    mixer.join("g", Member("b", LISTEN))
    assert mixer.take_fanout_changes() == {}
    assert mixer.fanout_source("b") is None
    assert sorted(mixer.mixed_legs()) == ["a", "b"]


class _Sink:
    path = "mem"

    def write(self, pcm: object) -> None:
        pass

    def close(self) -> float:
        return 0.0


# ---- the engine on real sockets --------------------------------------------------------------


class Rig:
    def __init__(self, engine: MediaEngine) -> None:
        self.engine = engine
        self.phones: dict[str, FakePhone] = {}

    async def phone(self, leg: str, freq: float, *, codec: str = "PCMU") -> FakePhone:
        phone = await FakePhone.open(freq, codec=codec)
        self.phones[leg] = phone
        self.engine.allocate(leg)
        host, port = phone.address
        self.engine.set_remote(leg, host, port, payload_type=phone.pt, telephone_event=101)
        phone.target = self.engine.local_address(leg)
        return phone

    async def close(self) -> None:
        for phone in self.phones.values():
            await phone.close()
        await self.engine.close()


async def with_rig(body: Callable[[Rig], Coroutine[Any, Any, None]]) -> None:
    rig = Rig(MediaEngine(port_range=(42000, 43000)))
    try:
        await asyncio.wait_for(body(rig), timeout=20)
    finally:
        await rig.close()


async def group(
    rig: Rig, n: int = 3, codecs: tuple[str, ...] = (), freqs: tuple[float, ...] = ()
) -> list[FakePhone]:
    phones = [
        await rig.phone(
            f"m{i}", freqs[i] if freqs else CANDIDATES[i], codec=codecs[i] if codecs else "PCMU"
        )
        for i in range(n)
    ]
    rig.engine.create_meeting("g")
    for i in range(n):
        rig.engine.join("g", Member(f"m{i}", LISTEN))
    return phones


@pytest.mark.realtime
async def test_a_granted_talker_is_forwarded_to_listeners_before_the_next_tick() -> None:
    """The talker's first packet arrives, then the floor is granted: the listeners get that
    packet at once (it is not yet played), before the mixer's next tick; later packets are
    forwarded as they arrive, bit-exact, on each listener's own stream."""

    async def body(rig: Rig) -> None:
        # 1003 Hz: no two of the talker's frames are alike, so order and duplicates show.
        talker, a, b = await group(rig, freqs=(1003.0, 700.0, 1000.0))
        engine = rig.engine
        await until(lambda: len(a.audio()) > 2)  # the clock runs: listeners get silence
        talker.send_frame()  # pressing PTT, the phone starts talking
        while engine.leg_stats("m0").packets_in == 0:  # noqa: ASYNC110 - 1 ms: before a tick
            await asyncio.sleep(0.001)
        relayed = engine.metrics.relayed
        engine.join("g", Member("m0", SPEAK))  # the grant
        # Its first frame, not yet played, went to both listeners in the grant itself.
        assert engine.metrics.relayed == relayed + 2
        assert engine.leg_stats("m1").fanout_source == "m0"
        await until(lambda: any(p.payload == talker.sent[0] for p in a.audio()), within=1)
        talker.start_sending(engine.local_address("m0"), count=30)
        await until(lambda: len(a.audio()) >= 30 and len(b.audio()) >= 30)
        voice = [p for p in a.audio() if p.payload in talker.sent]
        assert voice[0].marker  # a new stream source for the listener
        got = [p.payload for p in voice]
        assert got == talker.sent[: len(got)]  # every frame, once, in order
        assert len(set(got)) == len(got)
        assert a.tones(CANDIDATES) == {1000.0}
        assert len({p.ssrc for p in a.audio()}) == 1 and voice[0].ssrc != talker.ssrc
        assert engine.metrics.relayed >= 50

    await with_rig(body)


@pytest.mark.realtime
async def test_listeners_are_not_heard_and_codecs_are_translated() -> None:
    async def body(rig: Rig) -> None:
        talker, a, b = await group(rig, codecs=("PCMU", "PCMA", "PCMU"))
        engine = rig.engine
        engine.join("g", Member("m0", SPEAK))
        for phone in (talker, a, b):  # the listeners' phones keep sending too
            phone.start_sending(phone.target or ("", 0))
        await until(lambda: len(a.audio()) >= 30 and len(b.audio()) >= 30)
        assert a.tones(CANDIDATES) == {400.0}  # PCMA, translated from the talker's PCMU
        assert b.tones(CANDIDATES) == {400.0}  # not a's 700 Hz
        assert {p.payload_type for p in a.audio()} == {8}
        # The talker hears nobody (its listeners are not heard): silence.
        await until(lambda: len(talker.audio()) >= 20)
        assert np.abs(talker.heard(10).astype(np.int32)).max() < 50

    await with_rig(body)


@pytest.mark.realtime
async def test_revoke_tone_to_one_listener_mixes_it_and_the_others_stay_forwarded() -> None:
    """The floor passes from m0 to m2; m0 hears its revoke tone over m2's voice (mixed), m1
    hears m2 (forwarded); when the tone ends m0 is forwarded again."""

    async def body(rig: Rig) -> None:
        m0, m1, m2 = await group(rig)
        engine = rig.engine
        for phone in (m0, m2):
            phone.start_sending(phone.target or ("", 0))
        engine.join("g", Member("m0", SPEAK))
        await until(lambda: len(m1.audio()) >= 10)
        engine.join("g", Member("m0", LISTEN))
        engine.join("g", Member("m2", SPEAK))
        await engine.play(Target(leg="m0"), Tone("floor_revoked"))
        assert engine.leg_stats("m0").fanout_source is None  # mixed while its tone plays
        assert engine.leg_stats("m1").fanout_source == "m2"
        have = len(m1.audio())
        await until(lambda: len(m1.audio()) >= have + 30)
        assert m1.tones(CANDIDATES) == {1000.0}
        await until(lambda: engine.leg_stats("m0").fanout_source == "m2", within=2)
        have = len(m0.audio())
        await until(lambda: len(m0.audio()) >= have + 25)
        assert m0.tones(CANDIDATES) == {1000.0}
        packets = m0.audio()
        assert len({p.ssrc for p in packets}) == 1  # one stream across mix and forward
        steps = {(n.sequence - p.sequence) & 0xFFFF for p, n in itertools.pairwise(packets)}
        assert steps <= {1, 2}, steps

    await with_rig(body)


@pytest.mark.realtime
async def test_release_of_a_fanned_out_listener_and_of_the_talker() -> None:
    async def body(rig: Rig) -> None:
        m0, m1, m2 = await group(rig)
        engine = rig.engine
        engine.join("g", Member("m0", SPEAK))
        m0.start_sending(m0.target or ("", 0))
        await until(lambda: len(m1.audio()) >= 5 and len(m2.audio()) >= 5)
        engine.release("m1")
        await until(lambda: len(m2.audio()) >= 15)
        engine.release("m0")  # the talker's leg goes: m2 back in the mix, hearing silence
        assert engine.leg_stats("m2").fanout_source is None
        have = len(m2.audio())
        await until(lambda: len(m2.audio()) >= have + 10)
        assert np.abs(m2.heard(5).astype(np.int32)).max() < 50

    await with_rig(body)


@pytest.mark.realtime
async def test_a_talkers_key_presses_are_not_forwarded_and_leave_no_gap() -> None:
    """A phone sends its audio and RFC 4733 events in one sequence space (a PTT phone pressing
    ``#``): the listeners get the audio only, numbered without gaps (a gap would read as a loss
    and make their phones conceal frames that were never missing)."""

    async def body(rig: Rig) -> None:
        talker, a, _ = await group(rig)
        engine = rig.engine
        engine.join("g", Member("m0", SPEAK))
        press_ts = 0
        for i in range(30):
            talker.send_frame()
            if i == 5:
                press_ts = talker.ts
            if 5 <= i < 15:  # a key press (one timestamp), interleaved as phones send it
                event = encode_event(11, end=i == 14, volume=10, duration=160 * (i - 4))
                talker.send(event, pt=101, ts=press_ts)
            await asyncio.sleep(0.02)
        await until(lambda: sum(p.payload in talker.sent for p in a.audio()) >= 28)
        voice = [p for p in a.audio() if p.payload in talker.sent]
        steps = {(n.sequence - p.sequence) & 0xFFFF for p, n in itertools.pairwise(voice)}
        assert steps == {1}, steps
        assert not [p for _, p in a.received if p.payload_type == 101]
        assert engine.metrics.dtmf_in == 1

    await with_rig(body)
