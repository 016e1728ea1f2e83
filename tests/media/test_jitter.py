"""The jitter buffer: reordering, late and duplicate packets, adaptation, concealment."""

from __future__ import annotations

import random

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from baton.switch.media import g711
from baton.switch.media.jitter import FrameKind, JitterBuffer

FRAME = 160


def payload(k: int) -> bytes:
    """Frame k's payload: a constant µ-law code that identifies it (codes 0..126 are distinct)."""
    return bytes((k % 120,)) * FRAME


def identify(pcm: np.ndarray | None) -> int:
    assert pcm is not None
    return int(g711.LINEAR_TO_ULAW[pcm.view(np.uint16)[0]])


def make(**kw: int) -> JitterBuffer:
    return JitterBuffer(g711.ULAW_TO_LINEAR, silence=g711.ULAW_SILENCE, **kw)


def run(jb: JitterBuffer, arrivals: dict[int, list[int]], ticks: int) -> list[tuple[int, int]]:
    """Push ``arrivals[tick]`` (frame numbers) before each tick's pop; return (kind, frame)."""
    out = []
    for tick in range(ticks):
        for k in arrivals.get(tick, []):
            jb.push(1000 + k * FRAME, payload(k), tick * FRAME)
        pcm = jb.pop()
        out.append((jb.last_kind, identify(pcm) if jb.last_kind == FrameKind.AUDIO else -1))
    return out


def audio(out: list[tuple[int, int]]) -> list[int]:
    return [k for kind, k in out if kind == FrameKind.AUDIO]


def test_in_order_stream_plays_every_frame_after_prefill() -> None:
    jb = make(initial_depth=2)
    out = run(jb, {t: [t] for t in range(50)}, 51)
    assert audio(out) == list(range(50))
    assert out[0][0] == FrameKind.SILENCE  # prefill
    assert jb.lost == jb.late == jb.duplicates == 0


def test_reordered_packets_play_in_order() -> None:
    jb = make(initial_depth=3)
    arrivals = {0: [0], 1: [2], 2: [1], 3: [4], 4: [3], 5: [5]}
    assert audio(run(jb, arrivals, 10)) == [0, 1, 2, 3, 4, 5]


def test_duplicates_are_dropped_and_counted() -> None:
    jb = make()
    arrivals = {t: [t, t] for t in range(10)}
    assert audio(run(jb, arrivals, 12)) == list(range(10))
    assert jb.duplicates == 10


def test_late_packet_is_dropped_counted_and_deepens_the_buffer() -> None:
    jb = make(initial_depth=1)
    arrivals = {t: [t] for t in range(20) if t != 5}
    arrivals[9] = [9, 5]  # frame 5 arrives after its slot was played
    out = run(jb, arrivals, 25)
    assert 5 not in audio(out)
    assert jb.late == 1
    assert jb.target >= 2


def test_lost_frame_is_concealed_by_a_faded_repeat_then_silence() -> None:
    jb = make(initial_depth=1)
    arrivals = {t: [t] for t in range(30) if not 10 <= t < 16}
    out = run(jb, arrivals, 32)
    kinds = [kind for kind, _ in out]
    gap = kinds[kinds.index(FrameKind.CONCEALED) :][:6]
    assert gap[:3] == [FrameKind.CONCEALED] * 3
    assert gap[3:] == [FrameKind.SILENCE] * 3
    assert jb.lost >= 6
    assert jb.concealed >= 3


def test_concealment_fades() -> None:
    jb = make(initial_depth=1)
    loud = g711.ulaw_encode(np.full(FRAME, 10000, dtype=np.int16))
    jb.push(0, loud, 0)
    first = jb.pop()
    assert first is not None
    levels = []
    for _ in range(3):
        pcm = jb.pop()
        assert pcm is not None
        levels.append(int(pcm[0]))
    assert levels[0] < int(first[0])
    assert levels == sorted(levels, reverse=True)


def test_long_underrun_re_anchors_on_the_next_talkspurt() -> None:
    jb = make(initial_depth=2)
    arrivals = {t: [t] for t in range(10)}
    # Silence suppression: the sender resumes much later, timestamps jumped.
    arrivals.update({t: [t + 500] for t in range(40, 50)})
    out = run(jb, arrivals, 55)
    assert audio(out)[-10:] == [(k + 500) % 120 for k in range(40, 50)]


def test_sender_jump_without_silence_resyncs() -> None:
    jb = make(initial_depth=1)
    arrivals = {t: [t] for t in range(10)}
    arrivals.update({t: [t + 10_000] for t in range(10, 20)})
    out = run(jb, arrivals, 22)
    assert jb.resyncs == 1
    assert audio(out)[-5:] == [(k + 10_000) % 120 for k in range(15, 20)]


def test_jitter_raises_the_target_and_calm_lowers_it() -> None:
    jb = make(initial_depth=1, relax_after=50)
    rnd = random.Random(1)
    for k in range(200):  # ±40 ms of arrival jitter
        jb.push(k * FRAME, payload(k), k * FRAME + rnd.randint(0, 640))
        jb.pop()
    assert jb.target >= 4
    deep = jb.target
    for k in range(200, 2000):
        jb.push(k * FRAME, payload(k), k * FRAME + 700)
        jb.pop()
    assert jb.target < deep
    assert jb.depth <= jb.target + 3


def test_thirty_ms_packets_are_split_into_frames() -> None:
    jb = make(initial_depth=2)
    pcm = (np.arange(480 * 4) % 200 * 50).astype(np.int16)
    encoded = g711.ulaw_encode(pcm)
    for i in range(8):  # 30 ms packets
        jb.push(240 * i, encoded[240 * i : 240 * (i + 1)] if i < 8 else b"", 240 * i)
    frames: list[np.ndarray] = []
    while len(frames) < 12:
        frame = jb.pop()
        if jb.last_kind == FrameKind.AUDIO:
            assert frame is not None
            frames.append(frame)
    assert np.array_equal(np.concatenate(frames), g711.ulaw_decode(encoded))


def test_timestamp_wrap_around() -> None:
    jb = make(initial_depth=1)
    base = 0xFFFFFFFF - 5 * FRAME + 1
    got = []
    for k in range(12):
        jb.push((base + k * FRAME) & 0xFFFFFFFF, payload(k), k * FRAME)
        pcm = jb.pop()
        if jb.last_kind == FrameKind.AUDIO:
            assert pcm is not None
            got.append(identify(pcm))
    assert got == list(range(12))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 6), min_size=40, max_size=120),  # per-packet delay in ticks
    st.lists(st.booleans(), min_size=40, max_size=120),  # lost?
    st.integers(0, 0xFFFFFFFF),
)
def test_never_out_of_order_and_frames_are_accounted(
    delays: list[int], losses: list[bool], start: int
) -> None:
    jb = make(initial_depth=2, max_depth=8)
    n = min(len(delays), len(losses))
    arrivals: dict[int, list[int]] = {}
    for k in range(n):
        if not losses[k]:
            arrivals.setdefault(k + delays[k], []).append(k)
    last = -1
    played = 0
    for tick in range(n + 40):
        for k in arrivals.get(tick, []):
            jb.push((start + k * FRAME) & 0xFFFFFFFF, payload(k), tick * FRAME)
        jb.pop()
        if jb.last_kind == FrameKind.AUDIO:
            assert jb.last_ts > last  # strictly increasing playout position
            last = jb.last_ts
            played += 1
    delivered = sum(len(v) for v in arrivals.values())
    assert played + jb.late + jb.duplicates + jb.dropped >= delivered - jb.depth
    assert played <= delivered


def test_a_packet_just_too_late_is_still_played_and_the_buffer_deepens() -> None:
    jb = make(initial_depth=1)
    arrivals = {t: [t] for t in range(30) if t != 5}
    arrivals[6] = [5, 6]  # frame 5 misses its slot by one tick
    out = run(jb, arrivals, 32)
    assert audio(out)[:30] == list(range(30))  # nothing lost, in order
    assert jb.late == 1
    assert jb.target == 2


def test_packets_that_always_arrive_just_after_the_tick_settle_without_growing() -> None:
    jb = make(initial_depth=1, max_depth=10)
    kinds = []
    for k in range(500):
        jb.pop()  # the tick comes first...
        kinds.append(jb.last_kind)
        jb.push(k * FRAME, payload(k), k * FRAME + 1)  # ...then the packet, every period
    assert jb.target <= 3
    assert kinds[-100:].count(FrameKind.AUDIO) == 100


def test_timed_start_plays_the_first_frame_once_it_has_waited_half_a_frame_margin() -> None:
    """With the tick's time given, playout starts when the head frame has waited the margin
    (10 ms for the default target of 2 frames) — not when two frames are buffered, which would
    add up to 20 ms more."""
    jb = make()
    jb.push(1000, payload(0), arrival=0)
    assert jb.pop(now=40) is None  # 5 ms: not yet
    assert jb.last_kind == FrameKind.SILENCE
    pcm = jb.pop(now=80)  # 10 ms after its arrival: play it
    assert jb.last_kind == FrameKind.AUDIO
    assert identify(pcm) == 0
    count_started = make()  # without a time, the old rule: two frames buffered
    count_started.push(1000, payload(0), arrival=0)
    assert count_started.pop() is None
    count_started.push(1000 + FRAME, payload(1), arrival=FRAME)
    assert identify(count_started.pop()) == 0


def test_timed_start_waits_longer_when_jitter_is_measured() -> None:
    """Frames arriving ±60 samples off their 20 ms cadence before playout starts: the measured
    jitter (RFC 3550) raises the start margin above 10 ms (three times the jitter)."""
    jb = make()
    for k in range(20):
        jb.push(1000 + k * FRAME, payload(k), arrival=k * FRAME + (60 if k % 2 else -60) + 60)
    assert 3 * jb.jitter > 80
    assert jb.pop(now=60 + 100) is None  # 12.5 ms after the head frame: not yet
    assert identify(jb.pop(now=60 + 3 * jb.jitter + 1)) == 0


def test_extended_timestamps_keep_increasing_across_a_wrap_and_a_silence() -> None:
    """Found by the property test in CI: a talk spurt after the buffer went idle, once the
    32-bit RTP timestamp has wrapped, must not restart the extended timeline at 0."""
    jb = make(initial_depth=1)
    start = 0xFFFFFFFF - 3 * FRAME
    for k in range(3):
        jb.push(start + k * FRAME, payload(k), k * FRAME)
        jb.pop()
    before = jb.last_ts
    for _ in range(10):  # the sender goes silent: concealment, then idle
        jb.pop()
    jb.push((start + 20 * FRAME) & 0xFFFFFFFF, payload(20), 20 * FRAME)  # after the wrap
    jb.pop()
    assert jb.last_kind == FrameKind.AUDIO
    assert jb.last_ts == start + 20 * FRAME > before
