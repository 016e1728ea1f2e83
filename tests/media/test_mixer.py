"""The media graph on generated frames: who hears whom, playback, recording, clear, relay."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from baton.core.port import (
    MeetingMode,
    Member,
    PlaybackFinished,
    RecordingFinished,
    Target,
)
from baton.switch.media import analysis
from baton.switch.media.mixer import FRAME, MediaError, Mixer, _Plan
from baton.switch.media.tones import tone_spec

TONES = {"a": 400.0, "b": 700.0, "c": 1000.0, "d": 1300.0}
CANDIDATES = sorted(TONES.values())


class Phone:
    """A leg whose phone says a steady tone."""

    def __init__(self, freq: float, amp: float = 4000.0) -> None:
        self.freq = freq
        self.amp = amp
        self.n = 0

    def frame(self) -> np.ndarray:
        t = (np.arange(FRAME) + self.n) / 8000
        self.n += FRAME
        return (self.amp * np.sin(2 * np.pi * self.freq * t)).astype(np.int16)


class MemorySink:
    def __init__(self, path: str = "mem.wav") -> None:
        self.path = path
        self.frames: list[np.ndarray] = []
        self.closed = False

    def write(self, pcm: np.ndarray) -> None:
        assert not self.closed
        self.frames.append(pcm.copy())

    def close(self) -> float:
        self.closed = True
        return len(self.frames) * FRAME / 8000

    @property
    def pcm(self) -> np.ndarray:
        return np.concatenate(self.frames)


def run(mixer: Mixer, phones: dict[str, Phone], ticks: int = 25) -> dict[str, np.ndarray]:
    """Tick ``ticks`` times; return what each mixed leg heard (concatenated)."""
    heard: dict[str, list[np.ndarray]] = {}
    for _ in range(ticks):
        out = mixer.tick({leg: p.frame() for leg, p in phones.items()})
        for i, leg in enumerate(out.legs):
            heard.setdefault(leg, []).append(out.pcm[i])
    return {leg: np.concatenate(frames) for leg, frames in heard.items()}


def heard_tones(pcm: np.ndarray) -> set[float]:
    return analysis.tones_heard(pcm, CANDIDATES)


def meeting(*members: Member, legs: str = "abcd") -> tuple[Mixer, dict[str, Phone]]:
    mixer = Mixer()
    phones = {leg: Phone(TONES[leg]) for leg in legs}
    for leg in legs:
        mixer.add_port(leg)
    mixer.create_meeting("m")
    for member in members:
        mixer.join("m", member)
    return mixer, phones


def test_three_member_meeting_each_hears_exactly_the_other_two() -> None:
    mixer, phones = meeting(Member("a"), Member("b"), Member("c"), legs="abc")
    heard = run(mixer, phones)
    assert heard_tones(heard["a"]) == {700, 1000}
    assert heard_tones(heard["b"]) == {400, 1000}
    assert heard_tones(heard["c"]) == {400, 700}


def test_listener_hears_all_and_is_heard_by_none() -> None:
    mixer, phones = meeting(Member("a"), Member("b"), Member("c", MeetingMode.LISTEN), legs="abc")
    heard = run(mixer, phones)
    assert heard_tones(heard["a"]) == {700}
    assert heard_tones(heard["b"]) == {400}
    assert heard_tones(heard["c"]) == {400, 700}


def test_muted_member_hears_all_and_is_heard_by_none() -> None:
    mixer, phones = meeting(Member("a"), Member("b"), Member("c", MeetingMode.MUTED), legs="abc")
    heard = run(mixer, phones)
    assert heard_tones(heard["a"]) == {700}
    assert heard_tones(heard["c"]) == {400, 700}


def test_whisper_is_heard_only_by_its_target() -> None:
    mixer, phones = meeting(
        Member("a"),
        Member("b"),
        Member("d", MeetingMode.WHISPER, whisper_to="a"),
        legs="abd",
    )
    heard = run(mixer, phones)
    assert heard_tones(heard["a"]) == {700, 1300}
    assert heard_tones(heard["b"]) == {400}
    assert heard_tones(heard["d"]) == {400, 700}


def test_changing_mode_by_joining_again() -> None:
    mixer, phones = meeting(Member("a"), Member("b"), legs="ab")
    assert heard_tones(run(mixer, phones)["a"]) == {700}
    mixer.join("m", Member("b", MeetingMode.MUTED))
    assert heard_tones(run(mixer, phones)["a"]) == set()
    assert mixer.meeting_members("m")["b"].mode is MeetingMode.MUTED


def test_leave_and_destroy() -> None:
    mixer, phones = meeting(Member("a"), Member("b"), Member("c"), legs="abc")
    mixer.leave("m", "c")
    mixer.leave("m", "c")  # idempotent
    heard = run(mixer, phones)
    assert heard_tones(heard["a"]) == {700}
    assert heard_tones(heard["c"]) == set()
    mixer.destroy_meeting("m")
    mixer.destroy_meeting("m")
    assert all(heard_tones(pcm) == set() for pcm in run(mixer, phones).values())


def test_a_port_in_two_meetings_hears_both() -> None:
    mixer, phones = meeting(Member("a"), Member("b"), legs="abcd")
    mixer.create_meeting("n")
    mixer.join("n", Member("a"))
    mixer.join("n", Member("c"))
    heard = run(mixer, phones)
    assert heard_tones(heard["a"]) == {700, 1000}
    assert heard_tones(heard["b"]) == {400}
    assert heard_tones(heard["c"]) == {400}


def test_mixing_saturates_instead_of_wrapping() -> None:
    mixer, _ = meeting(Member("a"), Member("b"), Member("c"), legs="abc")
    loud = np.full(FRAME, 30000, dtype=np.int16)
    out = mixer.tick({"a": loud, "b": loud, "c": loud})
    assert out.pcm.dtype == np.int16
    assert (out.pcm == 32767).all()


# ---- bridges and the direct relay ---------------------------------------------------------------


def test_plain_bridge_is_direct_and_not_mixed() -> None:
    mixer = Mixer()
    for leg in "abc":
        mixer.add_port(leg)
    mixer.bridge("a", "b")
    assert mixer.direct_peer("a") == "b"
    assert mixer.direct_peer("b") == "a"
    assert mixer.take_direct_changes() == {"a": "b", "b": "a"}
    assert mixer.mixed_legs() == ["c"]


def test_playback_makes_a_bridge_mixed_then_direct_again() -> None:
    mixer = Mixer()
    phones = {leg: Phone(TONES[leg]) for leg in "ab"}
    mixer.add_port("a")
    mixer.add_port("b")
    mixer.bridge("a", "b")
    mixer.take_direct_changes()
    pid = mixer.play(Target(leg="a"), tone_spec("dtmf:1").render(loop=True), loop=True)
    assert mixer.take_direct_changes() == {"a": None, "b": None}
    heard = run(mixer, phones)
    assert heard_tones(heard["a"]) == {700}
    assert analysis.tones_heard(heard["a"], [697, 1209, 700]) == {697, 1209, 700}
    assert heard_tones(heard["b"]) == {400}
    mixer.stop_play(pid)
    assert mixer.take_events() == [PlaybackFinished(pid, completed=False)]
    assert mixer.take_direct_changes() == {"a": "b", "b": "a"}


def test_bridge_replaces_an_earlier_bridge() -> None:
    mixer = Mixer()
    for leg in "abc":
        mixer.add_port(leg)
    mixer.bridge("a", "b")
    mixer.bridge("a", "c")
    assert mixer.direct_peer("a") == "c"
    assert mixer.direct_peer("b") is None
    assert mixer.bridged_to("b") is None
    assert mixer.bridged_to("c") == "a"


def test_mixed_bridge_carries_each_side_to_the_other() -> None:
    mixer = Mixer()
    phones = {leg: Phone(TONES[leg]) for leg in "ab"}
    mixer.add_port("a")
    mixer.add_port("b")
    mixer.bridge("a", "b")
    mixer.record(Target(leg="a"), MemorySink())  # forces mixing
    heard = run(mixer, phones)
    assert heard_tones(heard["a"]) == {700}
    assert heard_tones(heard["b"]) == {400}


def test_bridged_port_in_a_meeting_is_not_direct() -> None:
    mixer, _ = meeting(legs="ab")
    mixer.bridge("a", "b")
    mixer.join("m", Member("a"))
    assert mixer.direct_peer("a") is None
    assert mixer.direct_peer("b") is None


# ---- playback -----------------------------------------------------------------------------------


def test_playback_to_a_meeting_is_heard_by_every_member() -> None:
    mixer, phones = meeting(
        Member("a"), Member("b", MeetingMode.LISTEN), Member("c", MeetingMode.MUTED), legs="abc"
    )
    tone = tone_spec("preemption").render(loop=True)
    mixer.play(Target(meeting="m"), tone, loop=True)
    heard = run(mixer, phones)
    for leg in "abc":
        assert analysis.tones_heard(heard[leg], [440, 620]) == {440, 620}, leg


def test_one_shot_playback_finishes_on_time_and_reports_completion() -> None:
    mixer = Mixer()
    mixer.add_port("a")
    pcm = tone_spec("busy").render()  # 0.5 s = 25 frames
    pid = mixer.play(Target(leg="a"), pcm)
    for tick in range(25):
        out = mixer.tick({})
        assert out.active[0], tick
        assert mixer.take_events() == ([] if tick < 24 else [PlaybackFinished(pid, True)])
    assert not mixer.tick({}).active[0]
    mixer.stop_play(pid)  # idempotent after the end
    assert mixer.take_events() == []


def test_partial_last_frame_is_zero_padded() -> None:
    mixer = Mixer()
    mixer.add_port("a")
    mixer.play(Target(leg="a"), np.full(200, 1000, dtype=np.int16))
    mixer.tick({})
    out = mixer.tick({})
    assert (out.pcm[0][:40] == 1000).all()
    assert (out.pcm[0][40:] == 0).all()
    assert len(mixer.take_events()) == 1


def test_looped_playback_wraps_seamlessly() -> None:
    mixer = Mixer()
    mixer.add_port("a")
    src = np.arange(250, dtype=np.int16)
    mixer.play(Target(leg="a"), src, loop=True)
    got = np.concatenate([mixer.tick({}).pcm[0] for _ in range(5)])
    assert np.array_equal(got, np.tile(src, 4)[: 5 * FRAME])
    assert mixer.take_events() == []


# ---- recording ----------------------------------------------------------------------------------


def test_recording_a_leg_holds_what_it_says_and_hears() -> None:
    mixer = Mixer()
    phones = {leg: Phone(TONES[leg]) for leg in "ab"}
    mixer.add_port("a")
    mixer.add_port("b")
    mixer.bridge("a", "b")
    sink = MemorySink("a.wav")
    rid = mixer.record(Target(leg="a"), sink)
    run(mixer, phones)
    mixer.stop_record(rid)
    assert mixer.take_events() == [RecordingFinished(rid, "a.wav", 0.5)]
    assert heard_tones(sink.pcm) == {400, 700}
    assert sink.closed


def test_recording_a_meeting_holds_the_full_mix() -> None:
    mixer, phones = meeting(
        Member("a"),
        Member("b"),
        Member("c", MeetingMode.LISTEN),
        Member("d", MeetingMode.WHISPER, whisper_to="a"),
    )
    sink = MemorySink()
    mixer.record(Target(meeting="m"), sink)
    mixer.play(Target(meeting="m"), tone_spec("dtmf:5").render(loop=True), loop=True)
    run(mixer, phones)
    mixer.destroy_meeting("m")
    events = mixer.take_events()
    assert sum(isinstance(e, RecordingFinished) for e in events) == 1
    assert sum(isinstance(e, PlaybackFinished) and not e.completed for e in events) == 1
    assert heard_tones(sink.pcm) == {400, 700, 1300}
    assert analysis.tones_heard(sink.pcm, [770, 1336, 400]) == {770, 1336, 400}


def test_an_empty_meeting_records_silence_in_real_time() -> None:
    mixer = Mixer()
    mixer.create_meeting("m")
    sink = MemorySink()
    mixer.record(Target(meeting="m"), sink)
    for _ in range(10):
        mixer.tick({})
    assert len(sink.pcm) == 10 * FRAME
    assert not sink.pcm.any()


# ---- clear --------------------------------------------------------------------------------------


def test_clear_removes_every_edge() -> None:
    mixer, phones = meeting(Member("a"), Member("b"), legs="abc")
    mixer.bridge("a", "c")
    pid = mixer.play(Target(leg="a"), tone_spec("hold").render(loop=True), loop=True)
    sink = MemorySink()
    rid = mixer.record(Target(leg="a"), sink)
    mixer.take_direct_changes()
    mixer.clear("a")
    events = mixer.take_events()
    assert PlaybackFinished(pid, completed=False) in events
    assert any(isinstance(e, RecordingFinished) and e.recording == rid for e in events)
    assert sink.closed
    assert mixer.bridged_to("a") is None
    assert mixer.bridged_to("c") is None
    assert "a" not in mixer.meeting_members("m")
    heard = run(mixer, phones)
    assert not heard["a"].any()  # connected-idle: silence
    assert heard_tones(heard["b"]) == set()
    mixer.clear("a")  # idempotent
    mixer.clear("nobody")
    assert mixer.take_events() == []


def test_clear_of_a_direct_port_reports_both_sides_no_longer_direct() -> None:
    mixer = Mixer()
    mixer.add_port("a")
    mixer.add_port("b")
    mixer.bridge("a", "b")
    mixer.take_direct_changes()
    mixer.clear("b")
    assert mixer.take_direct_changes() == {"a": None, "b": None}
    assert sorted(mixer.mixed_legs()) == ["a", "b"]


def test_remove_port_clears_it() -> None:
    mixer, _ = meeting(Member("a"), Member("b"), legs="ab")
    mixer.remove_port("a")
    mixer.remove_port("a")
    assert not mixer.has_port("a")
    assert list(mixer.meeting_members("m")) == ["b"]


# ---- errors -------------------------------------------------------------------------------------


def test_unknown_names_are_refused() -> None:
    mixer = Mixer()
    mixer.add_port("a")
    with pytest.raises(MediaError, match="no port 'x'"):
        mixer.bridge("a", "x")
    with pytest.raises(MediaError, match="no meeting 'm'"):
        mixer.join("m", Member("a"))
    with pytest.raises(MediaError, match="no port 'x'"):
        mixer.play(Target(leg="x"), np.zeros(10, dtype=np.int16))
    with pytest.raises(MediaError, match="exists"):
        mixer.add_port("a")
    with pytest.raises(MediaError, match="itself"):
        mixer.bridge("a", "a")
    mixer.create_meeting("m")
    with pytest.raises(MediaError, match="exists"):
        mixer.create_meeting("m")


# ---- the kept plan ------------------------------------------------------------------------------


class _Rebuilding(Mixer):
    """The reference: a mixer that builds its plan afresh for every tick."""

    def _current_plan(self) -> _Plan:
        self._changed()
        return super()._current_plan()


_LEGS = "abcd"
_MODES = [MeetingMode.SPEAK, MeetingMode.LISTEN, MeetingMode.MUTED, MeetingMode.WHISPER]
_OPS = st.one_of(
    st.tuples(st.just("add"), st.sampled_from(_LEGS)),
    st.tuples(st.just("remove"), st.sampled_from(_LEGS)),
    st.tuples(st.just("bridge"), st.sampled_from(_LEGS), st.sampled_from(_LEGS)),
    st.tuples(st.just("unbridge"), st.sampled_from(_LEGS)),
    st.tuples(
        st.just("join"),
        st.sampled_from("mn"),
        st.sampled_from(_LEGS),
        st.sampled_from(_MODES),
        st.sampled_from(_LEGS),
    ),
    st.tuples(st.just("leave"), st.sampled_from("mn"), st.sampled_from(_LEGS)),
    st.tuples(st.just("destroy"), st.sampled_from("mn")),
    st.tuples(st.just("play"), st.sampled_from([*_LEGS, "m"]), st.booleans()),
    st.tuples(st.just("stop_play"), st.integers(0, 5)),
    st.tuples(st.just("record"), st.sampled_from([*_LEGS, "m"])),
    st.tuples(st.just("stop_record"), st.integers(0, 5)),
    st.tuples(st.just("format"), st.sampled_from(_LEGS), st.sampled_from(["g711", "G722"])),
    st.tuples(st.just("clear"), st.sampled_from(_LEGS)),
    st.tuples(st.just("tick")),
)


def _apply(mixer: Mixer, op: tuple[Any, ...], ids: dict[str, list[str]]) -> None:
    kind, *args = op
    ports = [leg for leg in _LEGS if mixer.has_port(leg)]
    if kind == "add":
        if args[0] not in ports:
            mixer.add_port(args[0])
        return
    if kind == "destroy":
        mixer.destroy_meeting(args[0])
        return
    if kind == "stop_play":
        if args[0] < len(ids["play"]):
            mixer.stop_play(ids["play"][args[0]])
        return
    if kind == "stop_record":
        if args[0] < len(ids["record"]):
            mixer.stop_record(ids["record"][args[0]])
        return
    if kind in ("play", "record"):
        target = Target(meeting="m") if args[0] == "m" else Target(leg=args[0])
        if target.leg is not None and target.leg not in ports:
            return
        if target.meeting is not None and "m" not in mixer._meetings:
            mixer.create_meeting("m")
        if kind == "play":
            pcm = np.arange(FRAME * 3, dtype=np.int16) * (1 + len(ids["play"]))
            ids["play"].append(mixer.play(target, pcm, loop=args[1]))
        else:
            ids["record"].append(mixer.record(target, MemorySink()))
        return
    if kind == "join":
        meeting, leg, mode, to = args
        if leg in ports:
            if meeting not in mixer._meetings:
                mixer.create_meeting(meeting)
            whisper_to = to if mode is MeetingMode.WHISPER else None
            mixer.join(meeting, Member(leg, mode, whisper_to=whisper_to))
        return
    if kind == "leave":
        mixer.leave(*args)
        return
    if kind == "tick":
        return
    leg = args[0]
    if leg not in ports:
        return
    if kind == "remove":
        mixer.remove_port(leg)
    elif kind == "bridge":
        if args[1] in ports and args[1] != leg:
            mixer.bridge(leg, args[1])
    elif kind == "unbridge":
        mixer.unbridge(leg)
    elif kind == "format":
        mixer.set_format(leg, args[1], wide=args[1] == "G722")
    elif kind == "clear":
        mixer.clear(leg)


def _heard(mixer: Mixer) -> dict[str, tuple[bytes, bool]]:
    size = 2 * FRAME if mixer.wide else FRAME  # a 16 kHz tick takes 16 kHz frames
    inputs = {leg: np.full(size, 100 * (i + 1), np.int16) for i, leg in enumerate(_LEGS)}
    out = mixer.tick(inputs)
    assert len(set(out.legs)) == len(out.legs)
    return {leg: (out.pcm[i].tobytes(), bool(out.active[i])) for i, leg in enumerate(out.legs)}


_S, _L = MeetingMode.SPEAK, MeetingMode.LISTEN


@pytest.mark.parametrize("fanout", [True, False])
@settings(max_examples=200, deadline=None)
@given(ops=st.lists(_OPS, min_size=20, max_size=50))
@example(ops=[("join", "m", "a", _S, "a"), ("join", "m", "b", _S, "a"), ("bridge", "a", "b")])
@example(ops=[("bridge", "a", "b"), ("format", "a", "G722"), ("format", "b", "G722")])
@example(ops=[("join", "m", "a", _S, "a"), ("join", "m", "b", _L, "a"), ("play", "a", True),
              ("format", "a", "G722"), ("format", "b", "G722")])  # fmt: skip
def test_the_kept_plan_mixes_as_one_built_afresh(fanout: bool, ops: list[tuple[Any, ...]]) -> None:
    """The plan is kept across changes that concern only idle or direct ports (most of a busy
    switch's churn): after any sequence of changes the mix is the one a fresh plan gives."""
    kept, fresh = Mixer(fanout=fanout), _Rebuilding(fanout=fanout)
    ids: dict[Mixer, dict[str, list[str]]] = {m: {"play": [], "record": []} for m in (kept, fresh)}
    for op in [*(("add", leg) for leg in _LEGS), ("tick",), *ops, ("tick",)]:
        for mixer in (kept, fresh):
            _apply(mixer, op, ids[mixer])
        assert kept.take_direct_changes() == fresh.take_direct_changes()
        assert kept.take_fanout_changes() == fresh.take_fanout_changes()
        if op[0] == "tick":
            assert _heard(kept) == _heard(fresh)
            assert kept.take_events() == fresh.take_events()
        ports = [kept._ports[leg] for leg in _LEGS if kept.has_port(leg)]
        idle = [p.id for p in ports if not (p.bridge or p.meetings or p.playbacks or p.recordings)]
        assert sorted(kept.idle_legs()) == idle
        assert kept.mixed_legs(idle=False) == fresh.mixed_legs(idle=False)
        assert not set(idle) & set(kept.mixed_legs(idle=False))
