"""G.711 µ-law for the load generators: a local copy, so that a generator never depends on the
media engine it measures."""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

FRAME: Final = 160  # 20 ms at 8 kHz

__all__ = ["FRAME", "ULAW_DECODE", "tone_frame", "ulaw_encode"]


def _ulaw_decode_table() -> npt.NDArray[np.int16]:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, 0x84 - t, t - 0x84).astype(np.int16)


ULAW_DECODE: Final = _ulaw_decode_table()


def ulaw_encode(pcm: npt.NDArray[np.int16]) -> npt.NDArray[np.uint8]:
    """Nearest µ-law code for each sample (by search in the decode table: small arrays only)."""
    order = np.argsort(ULAW_DECODE)
    values = ULAW_DECODE[order].astype(np.int32)
    idx = np.clip(np.searchsorted(values, pcm.astype(np.int32)), 1, 255)
    left, right = values[idx - 1], values[idx]
    pick = np.where(np.abs(pcm - left) <= np.abs(right - pcm), idx - 1, idx)
    return order[pick].astype(np.uint8)


def tone_frame(freq: float, amp: float) -> npt.NDArray[np.uint8]:
    """One 20 ms frame of a sine. A frequency with whole cycles in 20 ms (a multiple of 50 Hz)
    gives the same frame every period, so repeating it keeps the phase."""
    t = np.arange(FRAME) / 8000.0
    return ulaw_encode((amp * np.sin(2 * np.pi * freq * t)).astype(np.int16))
