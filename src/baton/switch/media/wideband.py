"""Wideband codecs (G.722, Opus) and the sample-rate converters of the 16 kHz mix.

G.711 is a table lookup (:mod:`.g711`); G.722 and Opus are real codecs with state, so each leg
has its own :class:`WidebandCodec` — an encoder and a decoder — made by :func:`wideband_codec`.
G.722 comes from PyAV (FFmpeg's native G.722, a well-kept dependency); Opus from the system's
libopus through :mod:`.opus`, because libopus works at the mix's own rate and PyAV's Opus
decoder gives only 48 kHz (docs/sip.md, "Codecs", has the figures that decided).

Rates: a mix runs at 16 kHz only while a wideband leg in it hears another wideband leg
(:mod:`.mixer`); a browser talking to a desk phone gains nothing from 16 kHz, as the phone
neither sends nor hears above 4 kHz. So both codecs take and give 20 ms at the mix's rate:
Opus natively (from 8 kHz it sends narrowband Opus, from 16 kHz wideband, and decodes any
sender — a full-band browser too — straight to the rate asked, with its own low-pass); G.722
*is* 16 kHz (its RTP clock says 8000, RFC 3551 §4.5.2), so in an 8 kHz mix it is converted.

:class:`Resampler` converts by an integer ratio (×2 up: a narrowband leg into a wideband mix;
÷2 down) with a windowed-sinc FIR whose state carries across frames: one per leg and
direction, so frame edges do not click.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Final, Literal

import av
import numpy as np
import numpy.typing as npt

from baton.switch.media import opus
from baton.switch.media.opus import OpusDecoder, OpusEncoder

__all__ = [
    "WIDE_FRAME",
    "Resampler",
    "WidebandCodec",
    "WidebandError",
    "wideband_codec",
]

WIDE_FRAME: Final = 320  # 20 ms at 16 kHz
OPUS_BITRATE: Final = 32000
# The encoder is most of a browser leg's CPU; the complexity per input rate was chosen on the
# figures in docs/sip.md, "Codecs".
OPUS_COMPLEXITY: Final = {8000: 3, 16000: 5}
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
    """One leg's encoder and decoder, at the rate the leg is mixed at: 20 ms of 16 kHz audio
    (320 samples) in a 16 kHz mix, of 8 kHz audio (160) in an 8 kHz one (:mod:`.mixer` mixes
    at 16 kHz only where a wideband leg hears another). :attr:`rate` is set by the engine
    before each tick's decode; :meth:`encode` takes the rate from the frame's length.

    Opus works natively at both rates (:mod:`.opus`); G.722 *is* 16 kHz, so an 8 kHz mix
    converts its frames up and down (a filter each way, with its state kept)."""

    __slots__ = ("_dec", "_down", "_enc", "_g722_dec", "_g722_enc", "_pts", "_up", "name", "rate")

    def __init__(self, name: str) -> None:
        key = name.lower()
        if key not in ("g722", "opus"):
            raise WidebandError(f"no wideband codec {name!r}")
        if key == "opus" and not opus.AVAILABLE:
            raise WidebandError("Opus needs libopus (Debian package libopus0)")
        self.name = name
        self.rate = 16000
        self._enc: dict[int, OpusEncoder] = {}
        self._dec: dict[int, OpusDecoder] = {}
        self._g722_enc: av.AudioCodecContext | None = None
        self._g722_dec: av.AudioCodecContext | None = None
        if key == "g722":
            self._g722_enc = _context("g722", "w", 16000)
            self._g722_dec = _context("g722", "r", 16000)
        self._up: Resampler | None = None  # G.722 in an 8 kHz mix: what it is sent, up ...
        self._down: Resampler | None = None  # ... and what it says, down
        self._pts = 0

    def encode(self, pcm: Pcm) -> bytes:
        """One RTP payload for 20 ms of audio: 320 samples at 16 kHz or 160 at 8 kHz."""
        if self._g722_enc is None:
            rate = 50 * len(pcm)
            enc = self._enc.get(rate)
            if enc is None:
                enc = self._enc[rate] = OpusEncoder(
                    rate, bitrate=OPUS_BITRATE, complexity=OPUS_COMPLEXITY[rate]
                )
            return enc.encode(pcm)
        if len(pcm) != WIDE_FRAME:
            if self._up is None:
                self._up = Resampler(up=2)
            pcm = self._up(pcm)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = 16000
        frame.pts = self._pts
        self._pts += len(pcm)
        return b"".join(bytes(p) for p in self._g722_enc.encode(frame))

    def decode(self, payload: bytes) -> Pcm:
        """20 ms of audio at :attr:`rate` from one RTP payload (silence if it does not decode;
        a 10 or 40 ms packet is cut or padded to 20 ms: the mix takes 20 ms a tick)."""
        rate = self.rate
        size = rate // 50
        if self._g722_dec is None:
            dec = self._dec.get(rate)
            if dec is None:
                dec = self._dec[rate] = OpusDecoder(rate)
            pcm = dec.decode(payload)
        else:
            pcm = self._decode_g722(payload)
            if pcm is not None and rate != 16000:
                if self._down is None:
                    self._down = Resampler(down=2)
                pcm = self._down(pcm)
        if pcm is None:
            return np.zeros(size, dtype=np.int16)
        if len(pcm) != size:
            fitted = np.zeros(size, dtype=np.int16)
            fitted[: min(len(pcm), size)] = pcm[:size]
            pcm = fitted
        return pcm

    def _decode_g722(self, payload: bytes) -> Pcm | None:
        assert self._g722_dec is not None
        try:
            frames = self._g722_dec.decode(av.Packet(payload))
        except av.FFmpegError:
            return None
        if not frames:
            return None
        pcm: Pcm = np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.int16)
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
    ctx.open()
    return ctx
