"""What did a leg hear? Decode G.711, take an FFT, name the tones, measure the level.

Test helpers (also handy when debugging a live call): an end-to-end test gives each phone a
distinct tone (say 400/700/1000/1300 Hz) and checks, with :func:`tones_heard`, exactly which of
them reached each phone. Amplitudes are reported as the peak amplitude of a sine in 16-bit units,
so thresholds read naturally (a −16 dBm0 tone is about 3,600).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt

from baton.switch.media import g711

__all__ = [
    "decode",
    "dominant_frequencies",
    "frame_levels",
    "rms",
    "sine_amplitudes",
    "tones_heard",
]

RATE = 8000


def decode(payload: bytes, codec: str = "PCMU") -> npt.NDArray[np.int16]:
    """Decode G.711 bytes (``PCMU`` or ``PCMA``) to int16 samples."""
    if codec.upper() == "PCMU":
        return g711.ulaw_decode(payload)
    if codec.upper() == "PCMA":
        return g711.alaw_decode(payload)
    raise ValueError(f"unknown codec {codec!r}")


def rms(pcm: npt.NDArray[np.integer] | npt.NDArray[np.floating]) -> float:
    """Root mean square in 16-bit units (0.0 for an empty array)."""
    if len(pcm) == 0:
        return 0.0
    x = np.asarray(pcm, dtype=np.float64)
    return float(np.sqrt(np.mean(x * x)))


def frame_levels(pcm: npt.NDArray[np.int16], frame: int = 160) -> npt.NDArray[np.float64]:
    """RMS of each ``frame``-sample window: the on/off shape of a cadence at a glance."""
    n = len(pcm) // frame
    x = np.asarray(pcm[: n * frame], dtype=np.float64).reshape(n, frame)
    return np.asarray(np.sqrt(np.mean(x * x, axis=1)), dtype=np.float64)


def _spectrum(
    pcm: npt.NDArray[np.int16], rate: int = RATE
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    x = np.asarray(pcm, dtype=np.float64)
    window = np.hanning(len(x))
    mags = np.abs(np.fft.rfft(x * window)) * 2.0 / window.sum()
    freqs = np.fft.rfftfreq(len(x), 1.0 / rate)
    return np.asarray(freqs, dtype=np.float64), np.asarray(mags, dtype=np.float64)


def sine_amplitudes(
    pcm: npt.NDArray[np.int16],
    freqs: Iterable[float],
    *,
    tolerance: float = 15.0,
    rate: int = RATE,
) -> dict[float, float]:
    """Peak amplitude near each frequency (the largest bin within ``tolerance`` Hz);
    ``rate`` is the sample rate (16000 for what a wideband leg heard)."""
    f, mags = _spectrum(pcm, rate)
    out = {}
    for freq in freqs:
        band = (f >= freq - tolerance) & (f <= freq + tolerance)
        out[freq] = float(mags[band].max()) if band.any() else 0.0
    return out


def tones_heard(
    pcm: npt.NDArray[np.int16],
    candidates: Sequence[float],
    *,
    floor: float = 150.0,
    relative: float = 0.1,
    tolerance: float = 15.0,
    rate: int = RATE,
) -> set[float]:
    """Which of ``candidates`` are present: amplitude above ``floor`` and above ``relative``
    times the strongest candidate. Use a window of at least 0.1 s (10 Hz resolution)."""
    amps = sine_amplitudes(pcm, candidates, tolerance=tolerance, rate=rate)
    strongest = max(amps.values(), default=0.0)
    return {f for f, a in amps.items() if a >= floor and a >= relative * strongest}


def dominant_frequencies(
    pcm: npt.NDArray[np.int16],
    count: int = 4,
    *,
    min_amplitude: float = 150.0,
    rate: int = RATE,
) -> list[float]:
    """The frequencies of the ``count`` strongest spectral peaks (Hz, strongest first), refined
    by parabolic interpolation; peaks weaker than ``min_amplitude`` are left out."""
    f, mags = _spectrum(pcm, rate)
    # Local maxima only, so one strong tone does not fill the list with its skirt.
    peaks = np.flatnonzero((mags[1:-1] > mags[:-2]) & (mags[1:-1] >= mags[2:])) + 1
    peaks = peaks[mags[peaks] >= min_amplitude]
    peaks = peaks[np.argsort(mags[peaks])[::-1][:count]]
    out = []
    step = f[1] - f[0] if len(f) > 1 else 0.0
    for i in peaks:
        a, b, c = np.log(mags[i - 1 : i + 2] + 1e-12)
        denom = a - 2 * b + c
        shift = 0.5 * (a - c) / denom if denom else 0.0
        out.append(float(f[i] + shift * step))
    return out
