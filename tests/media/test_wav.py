"""WAV reading (formats, channels, rates) and the streaming writer."""

from __future__ import annotations

import struct
import wave
from pathlib import Path

import numpy as np
import pytest

from baton.switch.media import analysis, g711
from baton.switch.media.wav import WavError, WavWriter, read_wav


def sine(freq: float, rate: int, seconds: float, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return amp * np.sin(2 * np.pi * freq * t)


def write_raw(path: Path, tag: int, channels: int, rate: int, bits: int, data: bytes) -> None:
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)
    if tag == 0xFFFE:
        # cbSize, valid bits, channel mask, then the sub-format GUID (PCM's starts with 1).
        fmt += struct.pack("<HHIH14s", 22, bits, 0, 1, b"\x00" * 14)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"LIST" + struct.pack("<I", 4) + b"INFO"  # a chunk to skip
    body += b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000])
def test_rates_are_resampled_to_8k(tmp_path: Path, rate: int) -> None:
    path = tmp_path / "t.wav"
    x = (sine(1000, rate, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(x.tobytes())
    pcm = read_wav(path)
    assert len(pcm) == pytest.approx(8000, abs=2)
    assert analysis.dominant_frequencies(pcm, 1)[0] == pytest.approx(1000, abs=3)
    assert analysis.rms(pcm[400:-400]) == pytest.approx(0.3 * 32767 / np.sqrt(2), rel=0.03)


@pytest.mark.parametrize(
    ("name", "tag", "bits", "encode"),
    [
        ("u8", 1, 8, lambda x: (x * 127 + 128).astype(np.uint8).tobytes()),
        ("s16", 1, 16, lambda x: (x * 32767).astype("<i2").tobytes()),
        (
            "s24",
            1,
            24,
            lambda x: b"".join(int(v).to_bytes(3, "little", signed=True) for v in x * 8388607),
        ),
        ("s32", 1, 32, lambda x: (x * 2147483647).astype("<i4").tobytes()),
        ("f32", 3, 32, lambda x: x.astype("<f4").tobytes()),
        ("f64", 3, 64, lambda x: x.astype("<f8").tobytes()),
        ("ulaw", 7, 8, lambda x: g711.ulaw_encode((x * 32767).astype(np.int16))),
        ("alaw", 6, 8, lambda x: g711.alaw_encode((x * 32767).astype(np.int16))),
        ("ext16", 0xFFFE, 16, lambda x: (x * 32767).astype("<i2").tobytes()),
    ],
)
def test_sample_formats(tmp_path: Path, name: str, tag: int, bits: int, encode: object) -> None:
    path = tmp_path / f"{name}.wav"
    x = sine(700, 8000, 0.5)
    write_raw(path, tag, 1, 8000, bits, encode(x))  # type: ignore[operator]
    pcm = read_wav(path)
    assert len(pcm) == 4000
    assert analysis.dominant_frequencies(pcm, 1)[0] == pytest.approx(700, abs=3)
    assert analysis.rms(pcm) == pytest.approx(0.3 * 32767 / np.sqrt(2), rel=0.05)


def test_stereo_is_averaged_to_mono(tmp_path: Path) -> None:
    path = tmp_path / "st.wav"
    left = (sine(400, 16000, 0.5) * 32767).astype("<i2")
    right = (sine(1300, 16000, 0.5) * 32767).astype("<i2")
    inter = np.stack([left, right], axis=1).reshape(-1)
    write_raw(path, 1, 2, 16000, 16, inter.tobytes())
    pcm = read_wav(path)
    assert analysis.tones_heard(pcm, [400, 700, 1300]) == {400, 1300}


def test_garbage_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.wav"
    path.write_bytes(b"hello world, not a wav file")
    with pytest.raises(WavError, match="RIFF"):
        read_wav(path)
    write_raw(path, 0x55, 1, 8000, 16, b"\x00" * 100)  # MPEG layer 3
    with pytest.raises(WavError, match="unsupported"):
        read_wav(path)


def test_writer_streams_and_finalises(tmp_path: Path) -> None:
    path = tmp_path / "rec.wav"
    writer = WavWriter(path)
    x = (sine(1000, 8000, 2.0) * 20000).astype(np.int16)
    for i in range(0, len(x), 160):
        writer.write(x[i : i + 160])
    assert writer.close() == pytest.approx(2.0)
    assert writer.close() == pytest.approx(2.0)  # idempotent
    with wave.open(str(path)) as w:  # the stdlib agrees with the header
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
        assert w.getnframes() == 16000
    assert np.array_equal(read_wav(path), x)


def test_a_crashed_recording_is_still_readable(tmp_path: Path) -> None:
    path = tmp_path / "crash.wav"
    writer = WavWriter(path, sync_seconds=0.5)
    x = (sine(1000, 8000, 1.3) * 20000).astype(np.int16)
    writer.write(x)
    assert writer._file is not None
    writer._file.flush()  # what the OS has after a crash: data written, header stale
    with wave.open(str(path)) as w:
        assert w.getnframes() == len(x)  # synced once the first 0.5 s was passed
    more = (sine(1000, 8000, 0.3) * 20000).astype(np.int16)
    writer.write(more[:100])
    writer._file.flush()
    assert len(read_wav(path)) == len(x) + 100  # the reader takes what is on disk
    writer.close()
