"""RFC 4733 telephone-events: encoding, and one digit per key press whatever the network does."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from baton.switch.media.dtmf import (
    DtmfDetector,
    DtmfSender,
    decode_event,
    digit_to_event,
    encode_event,
)


def test_payload_layout() -> None:
    assert encode_event(5, end=True, volume=10, duration=800) == bytes.fromhex("058a0320")
    ev = decode_event(bytes.fromhex("0b0a00a0"))
    assert ev is not None
    assert (ev.digit, ev.end, ev.volume, ev.duration) == ("#", False, 10, 160)
    assert decode_event(b"\x01") is None


@pytest.mark.parametrize(("digit", "code"), [("0", 0), ("9", 9), ("*", 10), ("#", 11), ("d", 15)])
def test_digit_codes(digit: str, code: int) -> None:
    assert digit_to_event(digit) == code


def test_bad_digit_is_refused() -> None:
    with pytest.raises(ValueError, match="not a DTMF digit"):
        digit_to_event("x")


def press(digit: str, duration: float = 0.1) -> list[tuple[bool, bytes]]:
    """Every packet of one press, in send order."""
    sender = DtmfSender(digit, duration=duration)
    out: list[tuple[bool, bytes]] = []
    while batch := sender.next_packets():
        out.extend(batch)
    return out


def test_sender_marks_the_start_updates_duration_and_repeats_the_end_three_times() -> None:
    packets = press("7", 0.1)
    assert [m for m, _ in packets] == [True, False, False, False, False, False, False]
    events = [decode_event(p) for _, p in packets]
    assert [e.duration for e in events if e] == [160, 320, 480, 640, 800, 800, 800]
    assert [e.end for e in events if e] == [False] * 4 + [True] * 3
    assert {e.digit for e in events if e} == {"7"}


def test_sender_sends_the_end_packets_in_one_tick() -> None:
    sender = DtmfSender("1", duration=0.04)
    assert len(sender.next_packets()) == 1
    assert len(sender.next_packets()) == 3
    assert sender.next_packets() == []
    assert sender.done


def detect(stream: list[tuple[int, bool, bytes]], ssrc: int = 1) -> str:
    det = DtmfDetector()
    return "".join(d for ts, m, p in stream if (d := det.feed(ssrc, ts, m, p)))


def sequence(digits: str) -> list[tuple[int, bool, bytes]]:
    """A dialled string: each press at its own timestamp, 100 ms apart."""
    out: list[tuple[int, bool, bytes]] = []
    for i, digit in enumerate(digits):
        ts = 1000 + i * 1600
        out.extend((ts, m, p) for m, p in press(digit))
    return out


def test_one_digit_per_press() -> None:
    assert detect(sequence("123#")) == "123#"


def test_same_digit_twice_is_two_presses() -> None:
    assert detect(sequence("55")) == "55"


def test_lost_start_packet() -> None:
    stream = [x for x in sequence("4") if not x[1]]
    assert detect(stream) == "4"


def test_lost_end_packets() -> None:
    stream = sequence("89")
    ends = [x for x in stream if decode_event(x[2]).end]  # type: ignore[union-attr]
    assert detect([x for x in stream if x not in ends]) == "89"


def test_only_end_packets_arrive() -> None:
    stream = [x for x in sequence("3") if decode_event(x[2]).end]  # type: ignore[union-attr]
    assert detect(stream) == "3"


def test_late_retransmitted_end_after_the_next_press_is_ignored() -> None:
    stream = sequence("12")
    first_end = next(x for x in stream if decode_event(x[2]).end)  # type: ignore[union-attr]
    assert detect([*stream, first_end, first_end]) == "12"


def test_new_ssrc_starts_afresh() -> None:
    det = DtmfDetector()
    packets = press("6")
    assert [det.feed(1, 500, m, p) for m, p in packets].count("6") == 1
    assert [det.feed(2, 500, m, p) for m, p in packets].count("6") == 1


def test_long_press_split_into_segments_is_one_digit() -> None:
    det = DtmfDetector()
    seg = encode_event(2, end=False, volume=10, duration=0xFFFF)
    assert det.feed(1, 0, True, encode_event(2, end=False, volume=10, duration=160)) == "2"
    assert det.feed(1, 0, False, seg) is None
    # The next segment: new timestamp, no marker, same event.
    next_seg = encode_event(2, end=False, volume=10, duration=160)
    assert det.feed(1, 0xFFFF, False, next_seg) is None
    assert det.feed(1, 0xFFFF, False, encode_event(2, end=True, volume=10, duration=800)) is None


def test_non_dtmf_events_are_ignored() -> None:
    assert (
        DtmfDetector().feed(1, 0, True, encode_event(16, end=False, volume=0, duration=1)) is None
    )


@given(
    st.text(alphabet="0123456789*#ABCD", min_size=1, max_size=8),
    st.randoms(use_true_random=False),
    st.floats(0, 0.6),
)
def test_loss_and_duplication_never_add_or_drop_a_press(
    digits: str, rnd: random.Random, loss: float
) -> None:
    stream = sequence(digits)
    # Duplicate some packets, lose others, but keep at least one packet of each press
    # (a press with every packet lost cannot be detected by anyone).
    mangled = []
    for ts in sorted({x[0] for x in stream}):
        pkts = [x for x in stream if x[0] == ts]
        kept = [x for x in pkts if rnd.random() >= loss] or [rnd.choice(pkts)]
        kept += [x for x in kept if rnd.random() < 0.3]  # duplicates
        mangled.extend(kept)
    assert detect(mangled) == digits
