"""Generated tones: frequencies, cadences, levels, looping."""

from __future__ import annotations

import numpy as np
import pytest

from baton.switch.media import analysis
from baton.switch.media.tones import RATE, TONES, dtmf_frequencies, tone_spec


def on_off(pcm: np.ndarray) -> list[bool]:
    """Per 20 ms frame: is the tone on?"""
    return [bool(level > 300) for level in analysis.frame_levels(pcm)]


def runs(flags: list[bool]) -> list[tuple[bool, int]]:
    """Run-length encode: [(on?, frames), ...]."""
    out: list[tuple[bool, int]] = []
    for flag in flags:
        if out and out[-1][0] == flag:
            out[-1] = (flag, out[-1][1] + 1)
        else:
            out.append((flag, 1))
    return out


@pytest.mark.parametrize(
    ("name", "freqs"),
    [
        ("ringback", {440, 480}),
        ("busy", {480, 620}),
        ("call_waiting", {440}),
        ("hold", {600}),
        ("confirm", {350, 440}),
        ("preemption", {440, 620}),
        ("floor_idle", {660}),
        ("floor_denied", {400}),
    ],
)
def test_frequencies(name: str, freqs: set[int]) -> None:
    pcm = tone_spec(name).render()
    found = analysis.dominant_frequencies(pcm, count=len(freqs), min_amplitude=50)
    assert {round(f / 10) * 10 for f in found} == freqs


def test_ringback_cadence_two_on_four_off() -> None:
    pcm = tone_spec("ringback").render(loop=True)
    assert len(pcm) == 6 * RATE
    assert runs(on_off(pcm)) == [(True, 100), (False, 200)]
    assert len(tone_spec("ringback").render()) == 2 * RATE  # once: no trailing pause


def test_busy_cadence_and_duration() -> None:
    pcm = tone_spec("busy").render(duration=3.0)
    assert len(pcm) == 3 * RATE
    assert runs(on_off(pcm)) == [(True, 25), (False, 25)] * 3


def test_confirm_is_three_short_bursts() -> None:
    assert runs(on_off(tone_spec("confirm").render())) == [(True, 5), (False, 5)] * 2 + [(True, 5)]


def test_preemption_is_steady_for_three_seconds_and_loops_seamlessly() -> None:
    spec = tone_spec("preemption")
    once = spec.render()
    assert len(once) == 3 * RATE
    assert all(on_off(once))
    looped = spec.render(loop=True)
    seam = np.concatenate([looped, looped]).astype(np.float64)
    # No click at the seam: the sample-to-sample step stays within a sine's normal slope.
    steps = np.abs(np.diff(seam))
    assert steps[len(looped) - 2 : len(looped) + 2].max() <= steps.max()
    assert analysis.tones_heard(looped, [440, 620, 480]) == {440, 620}


def test_ptt_tones_are_short_and_distinct() -> None:
    names = ["talk_permit", "floor_denied", "floor_idle", "floor_revoked"]
    shapes = set()
    for name in names:
        pcm = tone_spec(name).render()
        assert len(pcm) <= 0.5 * RATE, name
        freqs = tuple(
            sorted(round(f) for f in analysis.dominant_frequencies(pcm, 3, min_amplitude=300))
        )
        shapes.add((freqs, len(pcm)))
    assert len(shapes) == len(names)
    # talk permit rises, floor revoked falls
    permit = tone_spec("talk_permit").render()
    first, last = permit[:400], permit[-600:]
    assert analysis.dominant_frequencies(first, 1)[0] < analysis.dominant_frequencies(last, 1)[0]
    revoked = tone_spec("floor_revoked").render()
    assert (
        analysis.dominant_frequencies(revoked[:700], 1)[0]
        > analysis.dominant_frequencies(revoked[-1000:], 1)[0]
    )


@pytest.mark.parametrize("digit", list("0123456789*#ABCD"))
def test_dtmf_digits(digit: str) -> None:
    pcm = tone_spec(f"dtmf:{digit}").render()
    assert len(pcm) == 800
    row, col = dtmf_frequencies(digit)
    assert analysis.tones_heard(
        pcm, [697, 770, 852, 941, 1209, 1336, 1477, 1633], tolerance=20
    ) == {
        row,
        col,
    }


def test_unknown_tone_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        tone_spec("nope")
    with pytest.raises(KeyError):
        tone_spec("dtmf:x")


def test_every_tone_renders_read_only_int16_within_range() -> None:
    for name in TONES:
        for loop in (False, True):
            pcm = tone_spec(name).render(loop=loop)
            assert pcm.dtype == np.int16
            assert not pcm.flags.writeable
            assert 0 < np.abs(pcm.astype(np.int32)).max() < 16000
