"""Wideband legs (G.722, Opus) in the engine: the codecs, the converters, and a 16 kHz mix
with a G.711 leg in it — each hears the others, and the wideband legs hear above 4 kHz."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from baton.core.port import MeetingMode, Member
from baton.switch.media import analysis, opus
from baton.switch.media.opus import OpusDecoder, OpusEncoder, OpusError
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


def opus_bandwidths(payloads: list[bytes]) -> set[str]:
    """The audio bandwidths of Opus packets, from their TOC byte (RFC 6716 §3.1)."""
    names = {0: "NB", 1: "MB", 2: "WB", 3: "SWB", 4: "FB"}
    out = set()
    for p in payloads:
        config = p[0] >> 3
        if config < 12:  # SILK: NB, MB, WB in fours
            out.add(names[config // 4])
        elif config < 16:  # hybrid: SWB, FB in twos
            out.add(names[3 + (config - 12) // 2])
        else:  # CELT: NB, WB, SWB, FB in fours
            out.add(names[(0, 2, 3, 4)[(config - 16) // 4]])
    return out


async def test_a_browser_and_a_desk_phone_mix_at_8_khz_until_wideband_hears_wideband() -> None:
    async def body(rig: Rig) -> None:
        o = await rig.phone("o", 1300, codec="opus", high=6000)
        u = await rig.phone("u", 400)  # G.711 µ-law
        rig.engine.create_meeting("m")
        for leg in "ou":
            rig.engine.join("m", Member(leg, MeetingMode.SPEAK))
        await fresh_audio(o, u, packets=40)
        # The phone neither sends nor hears above 4 kHz: no 16 kHz mix, Opus coded at 8 kHz.
        assert not rig.engine.mixer.wide
        assert u.tones(WB) == {1300}
        assert o.tones(WB) == {400}
        assert opus_bandwidths([p.payload for p in o.audio()[-10:]]) == {"NB"}
        ts = [p.timestamp for p in o.audio()[-10:]]
        assert {(b - a) & 0xFFFFFFFF for a, b in itertools.pairwise(ts)} == {960}
        # A wideband talker joins: now a wideband leg hears another, and the mix goes wide.
        g = await rig.phone("g", 700, codec="G722", high=5000)
        rig.engine.join("m", Member("g", MeetingMode.SPEAK))
        await fresh_audio(o, u, g, packets=40)
        assert rig.engine.mixer.wide
        assert o.tones(WB) == {400, 700, 5000}
        assert u.tones(WB) == {700, 1300}
        assert "WB" in opus_bandwidths([p.payload for p in o.audio()[-10:]])
        # It leaves: back to 8 kHz, and the Opus leg is still heard and hears (new decoder
        # and encoder rates mid-stream).
        rig.engine.leave("m", "g")
        await fresh_audio(o, u, packets=40)
        assert not rig.engine.mixer.wide
        assert u.tones(WB) == {1300}
        assert o.tones(WB) == {400}

    await with_rig(body)


async def test_wideband_members_who_only_listen_do_not_make_a_meeting_wide() -> None:
    async def body(rig: Rig) -> None:
        u = await rig.phone("u", 400)
        a = await rig.phone("a", 1300, codec="opus", high=6000)
        b = await rig.phone("b", 700, codec="G722", high=5000)
        rig.engine.create_meeting("m")
        rig.engine.join("m", Member("u", MeetingMode.SPEAK))
        rig.engine.join("m", Member("a", MeetingMode.LISTEN))
        rig.engine.join("m", Member("b", MeetingMode.LISTEN))
        await fresh_audio(u, a, b, packets=30)
        assert not rig.engine.mixer.wide  # the only talker is narrowband
        assert a.tones(WB) == {400}
        assert b.tones(WB) == {400}
        rig.engine.join("m", Member("a", MeetingMode.SPEAK))  # now b hears a wideband talker
        assert rig.engine.mixer.wide

    await with_rig(body)


def test_opus_binding_codes_at_the_rate_asked_and_refuses_clearly() -> None:
    enc, dec = OpusEncoder(8000, bitrate=32000, complexity=3), OpusDecoder(16000)
    payloads = [enc.encode(f) for f in frames(tone(700, 8000), 160)]
    heard = np.concatenate([out for p in payloads if (out := dec.decode(p)) is not None])
    assert len(heard) == 2 * 4000  # an 8 kHz stream, decoded straight to 16 kHz
    assert analysis.tones_heard(heard[3200:], [700, 1400], rate=16000) == {700}
    assert dec.decode(b"") is None  # nothing to decode: the jitter buffer conceals, not libopus
    assert dec.decode(b"\xff\xff\xff") is None  # not an Opus packet
    with pytest.raises(OpusError, match="44100"):
        OpusEncoder(44100, bitrate=32000, complexity=3)
    with pytest.raises(OpusError, match="11025"):
        OpusDecoder(11025)


def test_without_libopus_an_opus_leg_is_refused_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(opus, "AVAILABLE", False)
    with pytest.raises(WidebandError, match="libopus0"):
        WidebandCodec("opus")
    WidebandCodec("G722")  # G.722 does not need it
