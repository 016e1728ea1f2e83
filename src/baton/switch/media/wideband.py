"""Wideband codecs (G.722, Opus) and the sample-rate converters of the 16 kHz mix.

G.711 is a table lookup (:mod:`.g711`); G.722 and Opus are real codecs with state, so each leg
has its own :class:`WidebandCodec` — an encoder and a decoder — made by :func:`wideband_codec`.
They come from PyAV (FFmpeg's native G.722, and the libopus PyAV's wheels carry): one
well-kept dependency for both, and per 20 ms frame it costs less than calling the system's
libopus through ``ctypes`` did here (docs/sip.md, "Codecs", has the figures that decided).

Rates: the mix runs at 16 kHz while any wideband leg is mixed (:mod:`.mixer`), so both codecs
take and give 20 ms of 16 kHz audio (320 samples). G.722 *is* 16 kHz (its RTP clock says 8000,
RFC 3551 §4.5.2); Opus is encoded from 16 kHz (wideband, the voice band of a headset) and
decoded at the 48 kHz FFmpeg's decoder gives, then converted down with a low-pass filter, so a
full-band sender (a browser) does not alias into the mix.

:class:`Resampler` converts by an integer ratio (×2 up: a narrowband leg into a wideband mix;
÷2 and ÷3 down) with a windowed-sinc FIR whose state carries across frames: one per leg and
direction, so frame edges do not click.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Final, Literal

import av
import numpy as np
import numpy.typing as npt

__all__ = [
    "WIDE_FRAME",
    "Resampler",
    "WidebandCodec",
    "WidebandError",
    "wideband_codec",
]

WIDE_FRAME: Final = 320  # 20 ms at 16 kHz
Pcm = npt.NDArray[np.int16]


class WidebandError(Exception):
    """A codec PyAV does not have, or a payload that does not decode."""


class Resampler:
    """Integer-ratio sample-rate conversion for a stream of frames (``up`` or ``down``, the
    other being 1), with the filter's state kept between frames."""

    __slots__ = ("_down", "_taps", "_up", "_zi")

    def __init__(self, *, up: int = 1, down: int = 1, taps: int = 48) -> None:
        if (up == 1) == (down == 1):
            raise ValueError("convert up or down by an integer ratio")
        self._up = up
        self._down = down
        cutoff = 0.9 / max(up, down)  # of Nyquist: keep the band, cut what would alias
        n = np.arange(taps) - (taps - 1) / 2
        h = cutoff * np.sinc(cutoff * n) * np.blackman(taps)  # a windowed-sinc low-pass
        self._taps: npt.NDArray[np.float64] = h / h.sum() * up
        self._zi: npt.NDArray[np.float64] = np.zeros(taps - 1)  # the last input samples

    def __call__(self, pcm: Pcm) -> Pcm:
        x = pcm.astype(np.float64)
        if self._up > 1:
            stuffed = np.zeros(len(x) * self._up)
            stuffed[:: self._up] = x
            x = stuffed
        x = np.concatenate((self._zi, x))
        self._zi = x[len(x) - len(self._zi) :]
        y = np.convolve(x, self._taps, mode="valid")
        if self._down > 1:
            y = y[:: self._down]
        # Two ufuncs, not np.clip (whose Python wrapper costs more than the filter here).
        out: Pcm = np.maximum(np.minimum(np.rint(y), 32767), -32768).astype(np.int16)
        return out


class WidebandCodec:
    """One leg's encoder and decoder: 20 ms of 16 kHz audio (320 samples) in and out."""

    __slots__ = ("_dec", "_down", "_enc", "_pts", "name")

    def __init__(self, name: str) -> None:
        key = name.lower()
        if key == "g722":
            self._enc = _context("g722", "w", 16000)
            self._dec = _context("g722", "r", 16000)
            self._down: Resampler | None = None
        elif key == "opus":
            self._enc = _context("libopus", "w", 16000)
            self._dec = _context("libopus", "r", 48000)
            self._down = Resampler(down=3)
        else:
            raise WidebandError(f"no wideband codec {name!r}")
        self.name = name
        self._pts = 0

    def encode(self, pcm: Pcm) -> bytes:
        """One RTP payload for 320 samples of 16 kHz audio."""
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = 16000
        frame.pts = self._pts
        self._pts += len(pcm)
        return b"".join(bytes(p) for p in self._enc.encode(frame))

    def decode(self, payload: bytes) -> Pcm:
        """320 samples of 16 kHz audio from one RTP payload (silence if it does not decode)."""
        try:
            frames = self._dec.decode(av.Packet(payload))
        except av.FFmpegError:
            return np.zeros(WIDE_FRAME, dtype=np.int16)
        if not frames:
            return np.zeros(WIDE_FRAME, dtype=np.int16)
        pcm: Pcm = np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.int16)
        if self._down is not None:
            pcm = self._down(pcm)
        if len(pcm) != WIDE_FRAME:  # a 10 or 40 ms packet: the mix takes 20 ms a tick
            fitted = np.zeros(WIDE_FRAME, dtype=np.int16)
            fitted[: min(len(pcm), WIDE_FRAME)] = pcm[:WIDE_FRAME]
            pcm = fitted
        return pcm


def wideband_codec(name: str) -> WidebandCodec:
    """A fresh encoder/decoder pair for ``"G722"`` or ``"opus"``."""
    return WidebandCodec(name)


def _context(codec: str, mode: Literal["r", "w"], rate: int) -> av.AudioCodecContext:
    ctx = av.CodecContext.create(codec, mode)
    assert isinstance(ctx, av.AudioCodecContext)
    ctx.sample_rate = rate
    ctx.layout = "mono"
    ctx.format = "s16"
    if mode == "w":
        ctx.time_base = Fraction(1, rate)
        if codec == "libopus":
            ctx.bit_rate = 32000
            # Complexity 5 of 10: the encoder is most of a browser leg's cost (121 → ~70 µs a
            # frame here) and voice at 32 kbit/s does not need the top settings.
            ctx.options = {"application": "voip", "frame_duration": "20", "compression_level": "5"}
    ctx.open()
    return ctx
