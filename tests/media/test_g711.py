"""G.711 tables against a reference implementation of the classic bit-twiddling algorithm."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from baton.switch.media import g711

# ---- reference: the segment search and bit manipulation of the classic Sun g711.c -------------

_SEG_AEND = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)
_SEG_UEND = (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)


def _search(val: int, table: tuple[int, ...]) -> int:
    for i, end in enumerate(table):
        if val <= end:
            return i
    return len(table)


def ref_linear2alaw(pcm_val: int) -> int:
    pcm_val >>= 3
    if pcm_val >= 0:
        mask = 0xD5
    else:
        mask = 0x55
        pcm_val = -pcm_val - 1
    seg = _search(pcm_val, _SEG_AEND)
    if seg >= 8:
        return 0x7F ^ mask
    aval = seg << 4
    aval |= (pcm_val >> 1) & 0xF if seg < 2 else (pcm_val >> seg) & 0xF
    return aval ^ mask


def ref_alaw2linear(a_val: int) -> int:
    a_val ^= 0x55
    t = (a_val & 0xF) << 4
    seg = (a_val & 0x70) >> 4
    if seg == 0:
        t += 8
    elif seg == 1:
        t += 0x108
    else:
        t += 0x108
        t <<= seg - 1
    return t if a_val & 0x80 else -t


def ref_linear2ulaw(pcm_val: int) -> int:
    pcm_val >>= 2
    if pcm_val < 0:
        pcm_val = -pcm_val
        mask = 0x7F
    else:
        mask = 0xFF
    pcm_val = min(pcm_val, 8159) + (0x84 >> 2)
    seg = _search(pcm_val, _SEG_UEND)
    if seg >= 8:
        return 0x7F ^ mask
    return ((seg << 4) | ((pcm_val >> (seg + 1)) & 0xF)) ^ mask


def ref_ulaw2linear(u_val: int) -> int:
    u_val = ~u_val & 0xFF
    t = ((u_val & 0xF) << 3) + 0x84
    t <<= (u_val & 0x70) >> 4
    return 0x84 - t if u_val & 0x80 else t - 0x84


ALL_SAMPLES = range(-32768, 32768)


def test_ulaw_encode_matches_reference_for_every_sample() -> None:
    expected = np.array([ref_linear2ulaw(s) for s in ALL_SAMPLES], dtype=np.uint8)
    got = g711.LINEAR_TO_ULAW[np.arange(-32768, 32768, dtype=np.int16).view(np.uint16)]
    assert np.array_equal(got, expected)


def test_alaw_encode_matches_reference_for_every_sample() -> None:
    expected = np.array([ref_linear2alaw(s) for s in ALL_SAMPLES], dtype=np.uint8)
    got = g711.LINEAR_TO_ALAW[np.arange(-32768, 32768, dtype=np.int16).view(np.uint16)]
    assert np.array_equal(got, expected)


def test_decoders_match_reference_for_every_code() -> None:
    assert g711.ULAW_TO_LINEAR.tolist() == [ref_ulaw2linear(c) for c in range(256)]
    assert g711.ALAW_TO_LINEAR.tolist() == [ref_alaw2linear(c) for c in range(256)]


def test_known_code_points() -> None:
    # Values anyone can check against G.711's tables.
    assert g711.ULAW_SILENCE == 0xFF
    assert g711.ALAW_SILENCE == 0xD5
    assert g711.ULAW_TO_LINEAR[0x00] == -32124
    assert g711.ULAW_TO_LINEAR[0x80] == 32124
    assert g711.ALAW_TO_LINEAR[0xD5] == 8
    assert g711.ALAW_TO_LINEAR[0x55] == -8
    assert g711.ALAW_TO_LINEAR[0xAA] == 32256


def test_every_code_survives_decode_then_encode() -> None:
    codes = bytes(range(256))
    back = g711.ulaw_encode(g711.ulaw_decode(codes))
    # µ-law has two zeros (0x7F is "negative zero"); zero encodes as 0xFF.
    assert [c for c in range(256) if back[c] != c] == [0x7F]
    assert back[0x7F] == 0xFF
    assert g711.alaw_encode(g711.alaw_decode(codes)) == codes


def test_transcode_tables_go_through_linear() -> None:
    for code in range(256):
        lin = int(g711.ULAW_TO_LINEAR[code])
        assert g711.ULAW_TO_ALAW[code] == ref_linear2alaw(lin)
        lin = int(g711.ALAW_TO_LINEAR[code])
        assert g711.ALAW_TO_ULAW[code] == ref_linear2ulaw(lin)
    # A transcoded payload is translated byte for byte.
    payload = bytes(range(256))
    assert len(payload.translate(g711.ULAW_TO_ALAW)) == 256


@given(st.lists(st.integers(-32768, 32767), min_size=1, max_size=400))
def test_round_trip_error_is_within_one_quantisation_step(samples: list[int]) -> None:
    pcm = np.array(samples, dtype=np.int16)
    for encode, decode, step in (
        (g711.ulaw_encode, g711.ulaw_decode, 8),
        (g711.alaw_encode, g711.alaw_decode, 16),
    ):
        back = decode(encode(pcm)).astype(np.int32)
        err = np.abs(back - pcm.astype(np.int32))
        # A segment's step is about a sixteenth of the values in it; past the top code, clipping.
        magnitude = np.abs(pcm.astype(np.int32))
        bound = step + (magnitude >> 4)
        assert np.all((err <= bound) | (magnitude > 32124))
