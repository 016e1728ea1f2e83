"""The analysis helpers the end-to-end tests rely on."""

from __future__ import annotations

import numpy as np
import pytest

from baton.switch.media import analysis, g711


def tone(*freqs: float, seconds: float = 0.5, amp: float = 3000.0) -> np.ndarray:
    t = np.arange(int(8000 * seconds)) / 8000
    return sum(amp * np.sin(2 * np.pi * f * t) for f in freqs).astype(np.int16)  # type: ignore[union-attr]


def test_tones_heard_names_exactly_the_tones_present() -> None:
    pcm = tone(400, 1000)
    assert analysis.tones_heard(pcm, [400, 700, 1000, 1300]) == {400, 1000}
    assert analysis.tones_heard(np.zeros(4000, dtype=np.int16), [400, 700]) == set()


def test_through_g711_and_a_weak_tone_below_relative_threshold() -> None:
    pcm = tone(700) + tone(1300, amp=100)
    decoded = analysis.decode(g711.ulaw_encode(pcm), "PCMU")
    assert analysis.tones_heard(decoded, [700, 1300]) == {700}
    assert analysis.decode(g711.alaw_encode(pcm), "pcma").dtype == np.int16
    with pytest.raises(ValueError, match="codec"):
        analysis.decode(b"", "G729")


def test_dominant_frequencies_are_accurate() -> None:
    found = analysis.dominant_frequencies(tone(440, 620), 2)
    assert sorted(found) == pytest.approx([440, 620], abs=2)


def test_levels() -> None:
    pcm = np.concatenate([tone(1000, seconds=0.1), np.zeros(800, dtype=np.int16)])
    levels = analysis.frame_levels(pcm)
    assert len(levels) == 10
    assert all(level > 1000 for level in levels[:5])
    assert all(level == 0 for level in levels[5:])
    assert analysis.rms(tone(1000)) == pytest.approx(3000 / np.sqrt(2), rel=0.01)
    assert analysis.rms(np.zeros(0, dtype=np.int16)) == 0.0
