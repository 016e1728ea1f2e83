"""WAV in (any common format, to 8 kHz mono int16) and out (a streaming, crash-tolerant writer).

Reading: PCM 8/16/24/32-bit, IEEE float 32/64, A-law and µ-law, and WAVE_FORMAT_EXTENSIBLE
wrapping any of those (Python 3.11's :mod:`wave` refuses all but plain PCM, hence this parser).
Channels are averaged to mono; the rate is converted with a polyphase filter
(:func:`scipy.signal.resample_poly`), which is exact for rational ratios such as 44.1 k → 8 k.
A file whose header sizes are wrong or zero — a recorder that crashed — is read up to its end.

Writing (:class:`WavWriter`): 8 kHz mono 16-bit. The header is written first with the sizes
so far and patched every ``sync_seconds`` (with a flush) and on close, so a crash loses at most
that much audio from the header's account and the file stays playable; the reader above recovers
the rest.
"""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path
from typing import BinaryIO, Final

import numpy as np
import numpy.typing as npt
from scipy.signal import resample_poly  # type: ignore[import-untyped]  # no stubs shipped

from baton.switch.media import g711

__all__ = ["WavError", "WavWriter", "read_wav"]

RATE: Final = 8000
_PCM: Final = 1
_FLOAT: Final = 3
_ALAW: Final = 6
_ULAW: Final = 7
_EXTENSIBLE: Final = 0xFFFE


class WavError(ValueError):
    """The file is not a WAV this reader understands (the message says what is wrong)."""


def _plausible_chunk(head: bytes, data: bytes, pos: int) -> bool:
    """Does a real chunk header (printable id, size within the file) start here?"""
    if len(head) < 8 or not all(32 <= c < 127 for c in head[:4]):
        return False
    size: int = struct.unpack_from("<I", head, 4)[0]
    return pos + 8 + size <= len(data) + 1


def _chunks(data: bytes) -> dict[bytes, bytes]:
    if len(data) < 12 or data[:4] not in (b"RIFF", b"RIFX") or data[8:12] != b"WAVE":
        raise WavError("not a RIFF/WAVE file")
    if data[:4] == b"RIFX":
        raise WavError("big-endian RIFX is not supported")
    chunks: dict[bytes, bytes] = {}
    pos = 12
    while pos + 8 <= len(data):
        cid = data[pos : pos + 4]
        (size,) = struct.unpack_from("<I", data, pos + 4)
        body = pos + 8
        if cid == b"data":
            end = body + size
            nxt = data[end + (size & 1) : end + (size & 1) + 8]
            if size == 0 or end > len(data) or (nxt and not _plausible_chunk(nxt, data, end)):
                # A writer that crashed before fixing its header: the rest is audio.
                size = len(data) - body
        chunks.setdefault(cid, data[body : body + size])
        pos = body + size + (size & 1)  # chunks are word aligned
    if b"fmt " not in chunks:
        raise WavError("no fmt chunk")
    if b"data" not in chunks:
        raise WavError("no data chunk")
    return chunks


def _samples(fmt: bytes, raw: bytes) -> tuple[npt.NDArray[np.float64], int]:
    """Decode the data chunk to float64 (16-bit scale), shape (frames, channels); and the rate."""
    if len(fmt) < 16:
        raise WavError("fmt chunk too short")
    tag, channels, rate, _, block, bits = struct.unpack_from("<HHIIHH", fmt)
    if tag == _EXTENSIBLE:
        if len(fmt) < 26:
            raise WavError("extensible fmt chunk too short")
        (tag,) = struct.unpack_from("<H", fmt, 24)  # the sub-format GUID starts with the tag
    if channels < 1 or rate < 1 or block < 1:
        raise WavError("bad channel count, rate or block size")
    usable = len(raw) - len(raw) % block
    raw = raw[:usable]
    x: npt.NDArray[np.float64]
    if tag == _PCM and bits == 8:
        x = (np.frombuffer(raw, np.uint8).astype(np.float64) - 128.0) * 256.0
    elif tag == _PCM and bits == 16:
        x = np.frombuffer(raw, "<i2").astype(np.float64)
    elif tag == _PCM and bits == 24:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        v = np.where(v & 0x800000, v - (1 << 24), v)
        x = v.astype(np.float64) / 256.0
    elif tag == _PCM and bits == 32:
        x = np.frombuffer(raw, "<i4").astype(np.float64) / 65536.0
    elif tag == _FLOAT and bits == 32:
        x = np.frombuffer(raw, "<f4").astype(np.float64) * 32768.0
    elif tag == _FLOAT and bits == 64:
        x = np.frombuffer(raw, "<f8") * 32768.0
    elif tag == _ULAW and bits == 8:
        x = g711.ulaw_decode(raw).astype(np.float64)
    elif tag == _ALAW and bits == 8:
        x = g711.alaw_decode(raw).astype(np.float64)
    else:
        raise WavError(f"unsupported WAV encoding (format {tag:#x}, {bits} bits)")
    return x.reshape(-1, channels), rate


def read_wav(path: str | os.PathLike[str]) -> npt.NDArray[np.int16]:
    """Read a WAV file as 8 kHz mono int16 (a new, writable array).

    Raises :class:`WavError` for a file that is not a supported WAV, ``OSError`` if unreadable.
    Blocking: call it off the event loop (``asyncio.to_thread``) for long files.
    """
    chunks = _chunks(Path(path).read_bytes())
    frames, rate = _samples(chunks[b"fmt "], chunks[b"data"])
    mono = frames.mean(axis=1) if frames.shape[1] > 1 else frames[:, 0]
    if rate != RATE and len(mono):
        g = math.gcd(rate, RATE)
        mono = np.asarray(resample_poly(mono, RATE // g, rate // g), dtype=np.float64)
    out: npt.NDArray[np.int16] = np.clip(np.round(mono), -32768, 32767).astype(np.int16)
    return out


def _header(data_bytes: int) -> bytes:
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + data_bytes,
        b"WAVE",
        b"fmt ",
        16,
        _PCM,
        1,
        RATE,
        RATE * 2,
        2,
        16,
        b"data",
        data_bytes,
    )


class WavWriter:
    """A streaming 8 kHz mono 16-bit WAV writer (see the module docstring for crash behaviour).

    Not thread-safe. ``OSError`` from the file system propagates from the constructor and from
    :meth:`write`; :meth:`close` is idempotent.
    """

    __slots__ = ("_file", "_since_sync", "_sync_bytes", "data_bytes", "path")

    def __init__(self, path: str | os.PathLike[str], *, sync_seconds: float = 1.0) -> None:
        self.path = str(path)
        self._file: BinaryIO | None = open(self.path, "wb")  # noqa: SIM115 - closed by close()
        self._file.write(_header(0))
        self.data_bytes = 0
        self._since_sync = 0
        self._sync_bytes = max(2, int(sync_seconds * RATE) * 2)

    @property
    def seconds(self) -> float:
        """Audio written so far."""
        return self.data_bytes / (2 * RATE)

    @property
    def closed(self) -> bool:
        return self._file is None

    def write(self, pcm: npt.NDArray[np.int16]) -> None:
        """Append samples (int16, 8 kHz). Ignored after :meth:`close`."""
        f = self._file
        if f is None:
            return
        data = np.ascontiguousarray(pcm, dtype="<i2").tobytes()
        f.write(data)
        self.data_bytes += len(data)
        self._since_sync += len(data)
        if self._since_sync >= self._sync_bytes:
            self._patch()

    def _patch(self) -> None:
        f = self._file
        assert f is not None
        f.seek(0)
        f.write(_header(self.data_bytes))
        f.seek(0, os.SEEK_END)
        f.flush()
        self._since_sync = 0

    def close(self) -> float:
        """Finalise the header and close; return the seconds written."""
        if self._file is not None:
            try:
                self._patch()
            finally:
                self._file.close()
                self._file = None
        return self.seconds
