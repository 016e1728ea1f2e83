"""G.711 µ-law (PCMU) and A-law (PCMA) by lookup table, bit-exact to ITU-T G.711.

Theory of operation
-------------------
Every conversion is a table lookup, so a whole frame (or a whole meeting's frames) converts in one
numpy indexing call and a relayed payload transcodes with :meth:`bytes.translate`:

* decode: ``ULAW_TO_LINEAR[code]`` / ``ALAW_TO_LINEAR[code]`` — 256 int16 entries each;
* encode: ``LINEAR_TO_ULAW[sample & 0xFFFF]`` / ``LINEAR_TO_ALAW[...]`` — 65,536 uint8 entries
  indexed by the sample's 16-bit two's-complement pattern (an int16 array viewed as uint16);
* transcode: ``ULAW_TO_ALAW`` / ``ALAW_TO_ULAW`` — 256-byte tables for ``bytes.translate``.

The tables are built once at import from a vectorised closed form of the segment/quantiser rules
of G.711 (the same rules the classic Sun ``g711.c`` implements with loops and bit twiddling; the
tests check every input against such a reference). Linear samples are 16-bit: µ-law uses the top
14 bits and A-law the top 13, as G.711 specifies.

Transcoding goes through linear (decode then encode), as Asterisk's ``codec_a_mu`` does. G.711's
own µ↔A tables differ from that path by one quantisation step on a few codes; the difference is
inaudible and this way a transcoded payload equals what a mixing path would have produced.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = [
    "ALAW_SILENCE",
    "ALAW_TO_LINEAR",
    "ALAW_TO_ULAW",
    "LINEAR_TO_ALAW",
    "LINEAR_TO_ULAW",
    "ULAW_SILENCE",
    "ULAW_TO_ALAW",
    "ULAW_TO_LINEAR",
    "alaw_decode",
    "alaw_encode",
    "ulaw_decode",
    "ulaw_encode",
]

Int16Array = npt.NDArray[np.int16]
UInt8Array = npt.NDArray[np.uint8]


def _build_ulaw_decode() -> Int16Array:
    code = np.arange(256, dtype=np.int32)
    inv = ~code & 0xFF  # µ-law codes are transmitted inverted
    exponent = (inv >> 4) & 0x07
    mantissa = inv & 0x0F
    # Magnitude in 16-bit units: ((2*mantissa + 33) << exponent) - 33, scaled by 4 (14 -> 16 bits).
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(inv & 0x80, -magnitude, magnitude).astype(np.int16)


def _build_alaw_decode() -> Int16Array:
    code = np.arange(256, dtype=np.int32)
    val = code ^ 0x55  # A-law codes have their even bits inverted
    exponent = (val >> 4) & 0x07
    mantissa = val & 0x0F
    # Segment 0 is linear (no implicit leading one); segments 1..7 carry an implicit one.
    base = (mantissa << 4) + 8
    magnitude = np.where(exponent == 0, base, (base + 0x100) << np.maximum(exponent - 1, 0))
    return np.where(val & 0x80, magnitude, -magnitude).astype(np.int16)


def _segment(magnitude: npt.NDArray[np.int32], first_end: int) -> npt.NDArray[np.int32]:
    """Index of the first segment whose end is >= ``magnitude`` (8 when past the last one).

    Segment ``s`` ends at ``((first_end + 1) << s) - 1``: each segment doubles the step size.
    """
    ends = np.array([((first_end + 1) << s) - 1 for s in range(8)], dtype=np.int32)
    return np.searchsorted(ends, magnitude, side="left").astype(np.int32)


def _build_ulaw_encode() -> UInt8Array:
    pcm = np.arange(65536, dtype=np.int32)
    pcm = np.where(pcm >= 32768, pcm - 65536, pcm) >> 2  # 14-bit two's complement
    negative = pcm < 0
    magnitude = np.minimum(np.where(negative, -pcm, pcm), 8159) + (0x84 >> 2)
    seg = _segment(magnitude, 0x3F)
    quant = (magnitude >> (np.minimum(seg, 7) + 1)) & 0x0F
    code = np.where(seg >= 8, 0x7F, (seg << 4) | quant)
    mask = np.where(negative, 0x7F, 0xFF)
    return (code ^ mask).astype(np.uint8)


def _build_alaw_encode() -> UInt8Array:
    pcm = np.arange(65536, dtype=np.int32)
    pcm = np.where(pcm >= 32768, pcm - 65536, pcm) >> 3  # 13-bit two's complement
    negative = pcm < 0
    magnitude = np.where(negative, -pcm - 1, pcm)  # one's-complement magnitude, as G.711 does
    seg = _segment(magnitude, 0x1F)
    shift = np.where(seg < 2, 1, np.minimum(seg, 7))
    code = np.where(seg >= 8, 0x7F, (seg << 4) | ((magnitude >> shift) & 0x0F))
    mask = np.where(negative, 0x55, 0xD5)
    return (code ^ mask).astype(np.uint8)


ULAW_TO_LINEAR: Final[Int16Array] = _build_ulaw_decode()
ALAW_TO_LINEAR: Final[Int16Array] = _build_alaw_decode()
LINEAR_TO_ULAW: Final[UInt8Array] = _build_ulaw_encode()
LINEAR_TO_ALAW: Final[UInt8Array] = _build_alaw_encode()

ULAW_TO_ALAW: Final[bytes] = LINEAR_TO_ALAW[ULAW_TO_LINEAR.view(np.uint16)].tobytes()
ALAW_TO_ULAW: Final[bytes] = LINEAR_TO_ULAW[ALAW_TO_LINEAR.view(np.uint16)].tobytes()

#: The code of a zero sample: a frame of silence is this byte repeated.
ULAW_SILENCE: Final[int] = int(LINEAR_TO_ULAW[0])
ALAW_SILENCE: Final[int] = int(LINEAR_TO_ALAW[0])

for _table in (ULAW_TO_LINEAR, ALAW_TO_LINEAR, LINEAR_TO_ULAW, LINEAR_TO_ALAW):
    _table.flags.writeable = False  # shared by every leg: nobody may scribble on them


def ulaw_decode(payload: bytes | bytearray | memoryview) -> Int16Array:
    """Decode µ-law bytes to int16 samples (a new array)."""
    return ULAW_TO_LINEAR[np.frombuffer(payload, dtype=np.uint8)]


def alaw_decode(payload: bytes | bytearray | memoryview) -> Int16Array:
    """Decode A-law bytes to int16 samples (a new array)."""
    return ALAW_TO_LINEAR[np.frombuffer(payload, dtype=np.uint8)]


def ulaw_encode(samples: npt.NDArray[np.int16]) -> bytes:
    """Encode int16 samples to µ-law bytes. ``samples`` must be int16 (any shape, C order)."""
    return LINEAR_TO_ULAW[np.ascontiguousarray(samples, dtype=np.int16).view(np.uint16)].tobytes()


def alaw_encode(samples: npt.NDArray[np.int16]) -> bytes:
    """Encode int16 samples to A-law bytes. ``samples`` must be int16 (any shape, C order)."""
    return LINEAR_TO_ALAW[np.ascontiguousarray(samples, dtype=np.int16).view(np.uint16)].tobytes()
