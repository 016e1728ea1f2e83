"""Opus (RFC 6716, RTP payload RFC 7587) through the system's libopus, called with ``ctypes``.

Why by hand: a browser leg encodes and decodes one frame every 20 ms, so the per-frame cost
around the codec counts as much as the codec (docs/benchmarks.md, "Browser legs"). PyAV (which
Baton keeps for G.722) decodes Opus only at 48 kHz, so every frame then needed a 48 → 16 kHz
filter; libopus itself decodes at 8, 12, 16, 24 or 48 kHz and takes 8 or 16 kHz input, which
is what the mix runs at. The Python bindings on PyPI wrap each call in more Python than the call
costs (a decode measured 28 µs through ``opuslib_next`` against 14 µs like this). The binding
is the five functions below; libopus is Debian's ``libopus0`` (scripts/system-packages.txt).

An :class:`OpusEncoder` or :class:`OpusDecoder` is made for one sample rate; the engine keeps
one per rate a leg is mixed at (:mod:`.wideband`). One Opus stream may change its audio
bandwidth from packet to packet (the TOC byte says which), so a receiver's decoder follows an
encoder that was replaced by one for another rate.
"""

from __future__ import annotations

import ctypes
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = ["AVAILABLE", "OpusDecoder", "OpusEncoder", "OpusError"]

_APPLICATION_VOIP: Final = 2048  # opus_defines.h
_SET_BITRATE: Final = 4002
_SET_COMPLEXITY: Final = 4010
_MAX_PACKET: Final = 1275  # the largest Opus frame (RFC 6716 §3.2.1)
_RATES: Final = frozenset({8000, 12000, 16000, 24000, 48000})


class OpusError(Exception):
    """libopus is missing, or refused a setting."""


def _load() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libopus.so.0")
    except OSError:
        return None


_lib: Final = _load()
AVAILABLE: Final = _lib is not None  # without libopus, Baton offers G.711 and G.722 only
if _lib is not None:
    _lib.opus_encoder_create.restype = ctypes.c_void_p
    _lib.opus_encoder_create.argtypes = [
        ctypes.c_int32,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.POINTER(ctypes.c_int),
    ]
    _lib.opus_decoder_create.restype = ctypes.c_void_p
    _lib.opus_decoder_create.argtypes = [ctypes.c_int32, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
    _lib.opus_encode.restype = ctypes.c_int32
    _lib.opus_encode.argtypes = [
        ctypes.c_void_p,
        ctypes.c_char_p,  # the PCM, as bytes: cheaper to pass than a numpy pointer
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int32,
    ]
    _lib.opus_decode.restype = ctypes.c_int
    _lib.opus_decode.argtypes = [
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.c_int32,
        ctypes.c_void_p,
        ctypes.c_int,
        ctypes.c_int,
    ]
    _lib.opus_encoder_destroy.argtypes = [ctypes.c_void_p]
    _lib.opus_decoder_destroy.argtypes = [ctypes.c_void_p]


def _need() -> ctypes.CDLL:
    if _lib is None:
        raise OpusError("libopus.so.0 not found (Debian package libopus0)")
    return _lib


class OpusEncoder:
    """Mono 16-bit PCM at ``rate`` in 20 ms frames → one Opus packet each."""

    __slots__ = ("_buf", "_encode", "_ptr", "frame", "rate")

    def __init__(self, rate: int, *, bitrate: int, complexity: int) -> None:
        lib = _need()
        if rate not in _RATES:
            raise OpusError(f"Opus does not take {rate} Hz")
        err = ctypes.c_int()
        ptr = lib.opus_encoder_create(rate, 1, _APPLICATION_VOIP, ctypes.byref(err))
        if not ptr or err.value:
            raise OpusError(f"opus_encoder_create failed ({err.value})")
        self._ptr = ctypes.c_void_p(ptr)
        for request, value in ((_SET_BITRATE, bitrate), (_SET_COMPLEXITY, complexity)):
            # A variadic C function: the int argument is passed typed, as the ABI wants.
            if lib.opus_encoder_ctl(self._ptr, request, ctypes.c_int32(value)):
                lib.opus_encoder_destroy(self._ptr)
                raise OpusError(f"opus_encoder_ctl({request}, {value}) refused")
        self._buf = ctypes.create_string_buffer(_MAX_PACKET)
        self._encode = lib.opus_encode  # bound once: a lookup on the library costs per frame
        self.rate = rate
        self.frame = rate // 50

    def encode(self, pcm: npt.NDArray[np.int16]) -> bytes:
        """One packet for ``rate // 50`` samples."""
        n = self._encode(self._ptr, pcm.tobytes(), self.frame, self._buf, _MAX_PACKET)
        if n < 0:
            raise OpusError(f"opus_encode failed ({n})")
        return ctypes.string_at(self._buf, n)

    def __del__(self) -> None:
        if _lib is not None and getattr(self, "_ptr", None):
            _lib.opus_encoder_destroy(self._ptr)


class OpusDecoder:
    """One Opus packet (any bandwidth, mono or stereo) → mono 16-bit PCM at ``rate``."""

    __slots__ = ("_decode", "_max", "_ptr", "rate")

    def __init__(self, rate: int) -> None:
        lib = _need()
        if rate not in _RATES:
            raise OpusError(f"Opus does not give {rate} Hz")
        err = ctypes.c_int()
        ptr = lib.opus_decoder_create(rate, 1, ctypes.byref(err))
        if not ptr or err.value:
            raise OpusError(f"opus_decoder_create failed ({err.value})")
        self._ptr = ctypes.c_void_p(ptr)
        self._decode = lib.opus_decode
        self.rate = rate
        self._max = rate * 120 // 1000  # the longest packet: 120 ms

    def decode(self, payload: bytes) -> npt.NDArray[np.int16] | None:
        """The packet's audio (its own duration), or ``None`` if it does not decode. (An
        empty payload is not a packet: libopus would conceal a loss, which is the jitter
        buffer's work here.)"""
        if not payload:
            return None
        out = np.empty(self._max, dtype=np.int16)
        n = self._decode(self._ptr, payload, len(payload), out.ctypes.data, self._max, 0)
        if n <= 0:
            return None
        return out[:n]

    def __del__(self) -> None:
        if _lib is not None and getattr(self, "_ptr", None):
            _lib.opus_decoder_destroy(self._ptr)
