"""Wideband legs (G.722, Opus) in the engine: the codecs, the converters, and a 16 kHz mix
with a G.711 leg in it — each hears the others, and the wideband legs hear above 4 kHz."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from baton.core.port import MeetingMode, Member
from baton.switch.media import analysis
from baton.switch.media.wideband import WIDE_FRAME, Resampler, WidebandCodec, WidebandError

from .test_engine import Rig, fresh_audio, with_rig


def tone(freq: float, rate: int, seconds: float = 0.5, amp: float = 8000.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def frames(pcm: np.ndarray, size: int) -> list[np.ndarray]:
    return [pcm[i : i + size] for i in range(0, len(pcm) - size + 1, size)]


def test_resamplers_keep_the_band_and_cut_what_would_alias() -> None:
    up = Resampler(up=2)
    wide = np.concatenate([up(f) for f in frames(tone(1000, 8000), 160)])
    assert len(wide) == 8000
    assert analysis.dominant_frequencies(wide[1600:], 1, rate=16000) == pytest.approx([1000], abs=5)
    down = Resampler(down=2)
    mixed = tone(1000, 16000) + tone(6000, 16000)
    narrow = np.concatenate([down(f) for f in frames(mixed, 320)])
    amps = analysis.sine_amplitudes(narrow[800:], [1000, 2000])  # 6 kHz would fold to 2 kHz
    assert amps[1000] > 6000
    assert amps[2000] < amps[1000] / 100  # > 40 dB down
    with pytest.raises(ValueError, match="integer ratio"):
        Resampler(up=2, down=2)


@pytest.mark.parametrize("codec", ["G722", "opus"])
def test_wideband_codecs_carry_frequencies_above_4_khz(codec: str) -> None:
    enc, dec = WidebandCodec(codec), WidebandCodec(codec)
    pcm = tone(700, 16000) // 2 + tone(6000, 16000) // 2
    payloads = [enc.encode(f) for f in frames(pcm, WIDE_FRAME)]
    assert all(0 < len(p) <= 200 for p in payloads)
    heard = np.concatenate([dec.decode(p) for p in payloads])
    assert len(heard) == len(pcm)
    assert analysis.tones_heard(heard[3200:], [700, 3000, 6000], rate=16000) == {700, 6000}
    assert not dec.decode(b"").any()  # nothing to decode is silence, not an error
    with pytest.raises(WidebandError):
        WidebandCodec("G729")


WB = [400.0, 700.0, 1300.0, 5000.0, 6000.0]


async def test_a_meeting_of_g722_opus_and_pcmu_mixes_at_16_khz() -> None:
    async def body(rig: Rig) -> None:
        u = await rig.phone("u", 400)  # G.711 µ-law
        g = await rig.phone("g", 700, codec="G722", high=5000)
        o = await rig.phone("o", 1300, codec="opus", high=6000)
        rig.engine.create_meeting("m")
        for leg in "ugo":
            rig.engine.join("m", Member(leg, MeetingMode.SPEAK))
        await fresh_audio(u, g, o, packets=40)
        assert rig.engine.mixer.wide
        assert u.tones(WB) == {700, 1300}  # nothing of the 5/6 kHz folds into its band
        assert g.tones(WB) == {400, 1300, 6000}
        assert o.tones(WB) == {400, 700, 5000}
        assert {p.payload_type for p in o.audio()} == {111}
        ts = [p.timestamp for p in o.audio()[-10:]]
        assert {(b - a) & 0xFFFFFFFF for a, b in itertools.pairwise(ts)} == {960}
        rig.engine.leave("m", "g")
        rig.engine.leave("m", "o")
        assert not rig.engine.mixer.wide  # no wideband leg mixed: back to the 8 kHz mix

    await with_rig(body)


async def test_same_codec_bridges_relay_and_mixed_codecs_are_converted() -> None:
    async def body(rig: Rig) -> None:
        a = await rig.phone("a", 700, codec="G722", high=5000)
        b = await rig.phone("b", 1300, codec="G722", high=6000)
        rig.engine.bridge("a", "b")
        await fresh_audio(a, b)
        assert rig.engine.leg_stats("a").direct_peer == "b"  # G.722 to G.722: as it is
        assert b.tones(WB) == {700, 5000}
        c = await rig.phone("c", 400, codec="PCMA")
        rig.engine.bridge("b", "c")  # G.722 to A-law: decoded, converted, encoded
        await fresh_audio(b, c)
        assert rig.engine.leg_stats("b").direct_peer is None
        assert b.tones(WB) == {400}
        assert c.tones(WB) == {1300}

    await with_rig(body)
