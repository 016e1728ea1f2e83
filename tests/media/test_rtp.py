"""RTP/RTCP parse and build, sequence extension, loss and jitter (RFC 3550)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from baton.switch.media import rtp
from baton.switch.media.rtp import ReceiverStats, SeqResult

packets = st.builds(
    rtp.RtpPacket,
    payload_type=st.integers(0, 127),
    sequence=st.integers(0, 0xFFFF),
    timestamp=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    payload=st.binary(max_size=200),
    marker=st.booleans(),
    csrcs=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15).map(tuple),
    extension=st.none()
    | st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=40).map(lambda b: b[: len(b) // 4 * 4])),
    padding=st.integers(0, 255),
)


@given(packets)
def test_build_then_parse_is_identity(packet: rtp.RtpPacket) -> None:
    assert rtp.parse(packet.to_bytes()) == packet


@given(st.binary(max_size=64))
def test_parse_never_raises_anything_but_rtp_error(data: bytes) -> None:
    try:
        rtp.parse(data)
    except rtp.RtpError:
        pass


def test_fixed_header_fields() -> None:
    data = rtp.RtpPacket(0, 0xBEEF, 0x01020304, 0xCAFEBABE, b"\xff" * 160, marker=True).to_bytes()
    assert data[:12] == bytes.fromhex("8080beef01020304cafebabe")
    assert len(data) == 172


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x80\x00", "shorter"),
        (bytes.fromhex("4000000000000000000000000000"), "version 1"),
        (bytes.fromhex("830000000000000000000000"), "CSRC"),
        (bytes.fromhex("900000000000000000000000"), "extension header"),
        (bytes.fromhex("a0000000000000000000000000000005"), "padding"),
        (bytes.fromhex("a0000000000000000000000000000000"), "padding"),
    ],
)
def test_invalid_packets_are_rejected(data: bytes, message: str) -> None:
    with pytest.raises(rtp.RtpError, match=message):
        rtp.parse(data)


def test_is_rtcp_tells_rtcp_from_rtp() -> None:
    assert rtp.is_rtcp(rtp.build_rr(1))
    assert not rtp.is_rtcp(rtp.RtpPacket(0, 1, 2, 3, b"x" * 160).to_bytes())
    assert not rtp.is_rtcp(rtp.RtpPacket(8, 1, 2, 3, b"x" * 160, marker=True).to_bytes())


# ---- sequence numbers --------------------------------------------------------------------------


def feed(stats: ReceiverStats, seqs: list[int], ssrc: int = 7) -> list[int]:
    return [stats.update(ssrc, s, s * 160, s * 160) for s in seqs]


def test_new_source_is_on_probation_then_validated() -> None:
    stats = ReceiverStats()
    assert feed(stats, [100, 101, 102]) == [SeqResult.PROBATION, SeqResult.OK, SeqResult.OK]
    assert stats.extended_max == 102
    assert stats.received == 2  # RFC 3550 A.1 counts from the packet that ends probation


def test_sequence_extends_across_wrap_around() -> None:
    stats = ReceiverStats()
    feed(stats, [65534, 65535, 0, 1, 2])
    assert stats.extended_max == 65536 + 2
    assert stats.cycles == 65536
    assert stats.cumulative_lost == 0


def test_reordered_and_duplicate_packets_do_not_move_max() -> None:
    stats = ReceiverStats()
    feed(stats, [10, 11, 13, 12, 12])
    assert stats.extended_max == 13
    assert stats.received == 5 - 1
    assert stats.cumulative_lost == -1  # a duplicate makes loss negative, as A.3 says


def test_large_jump_needs_confirmation_then_restarts() -> None:
    stats = ReceiverStats()
    feed(stats, [1, 2, 3])
    assert stats.update(7, 30000, 0, 0) == SeqResult.BAD
    assert stats.update(7, 30001, 0, 0) == SeqResult.RESTART
    assert stats.extended_max == 30001
    assert stats.update(7, 30002, 0, 0) == SeqResult.OK


def test_ssrc_change_is_reported_and_resets_state() -> None:
    stats = ReceiverStats()
    feed(stats, [1, 2, 3])
    assert stats.update(8, 5000, 0, 0) == SeqResult.NEW_SSRC
    assert stats.ssrc == 8
    assert stats.update(8, 5001, 160, 160) == SeqResult.OK
    assert stats.extended_max == 5001


@given(st.integers(0, 0xFFFF), st.integers(2, 3000))
def test_in_order_stream_extends_monotonically(start: int, count: int) -> None:
    stats = ReceiverStats()
    feed(stats, [start, (start + 1) & 0xFFFF])
    validated = stats.extended_max  # the packet that ends probation starts the count (A.1)
    for i in range(2, count):
        stats.update(7, (start + i) & 0xFFFF, i * 160, i * 160)
        assert stats.extended_max == validated + i - 1
    assert stats.cumulative_lost == 0


# ---- loss and jitter ---------------------------------------------------------------------------


def test_loss_fraction_per_interval() -> None:
    stats = ReceiverStats()
    seqs = [s for s in range(1, 102) if s % 4 != 0]  # every 4th packet lost
    feed(stats, seqs)
    block = stats.report_block()
    assert block.highest_seq == 101
    assert block.cumulative_lost == 25
    assert block.fraction_lost == pytest.approx(256 * 25 / 100, abs=1)
    feed(stats, list(range(102, 112)))
    assert stats.report_block().fraction_lost == 0  # a clean interval


def test_jitter_is_zero_for_a_steady_stream_and_grows_with_variation() -> None:
    stats = ReceiverStats()
    for i in range(50):
        stats.update(1, i, i * 160, 1000 + i * 160)
    assert stats.jitter == 0
    for i in range(50, 100):
        stats.update(1, i, i * 160, 1000 + i * 160 + (80 if i % 2 else 0))
    # |D| is 80 on every packet: J converges to 80 (A.8).
    assert stats.jitter == pytest.approx(80, rel=0.05)


# ---- RTCP --------------------------------------------------------------------------------------


def test_sender_report_round_trip() -> None:
    block = rtp.ReportBlock(0x1234, 64, -3, 70000, 12, 0xAABBCCDD, 65536)
    ntp = rtp.ntp_timestamp(1_700_000_000.5)
    data = rtp.build_sr(
        0xFEED, ntp=ntp, rtp_timestamp=8000, packet_count=50, octet_count=8000, reports=[block]
    )
    parts = rtp.parse_rtcp(data)
    assert parts == [rtp.SenderReport(0xFEED, ntp, 8000, 50, 8000, (block,))]
    assert len(data) % 4 == 0


def test_receiver_report_and_bye_round_trip() -> None:
    block = rtp.ReportBlock(9, 0, 0, 1, 2)
    bye = struct.pack("!BBHI", 0x81, rtp.RTCP_BYE, 1, 9)
    parts = rtp.parse_rtcp(rtp.build_rr(5, [block]) + bye)
    assert parts == [rtp.ReceiverReport(5, (block,)), rtp.Bye((9,))]


def test_sender_report_feeds_lsr_and_dlsr() -> None:
    stats = ReceiverStats()
    feed(stats, [1, 2, 3])
    ntp = rtp.ntp_timestamp(1000.0)
    stats.note_sender_report(rtp.SenderReport(7, ntp, 0, 0, 0), now_wall=1000.0)
    block = stats.report_block(now_wall=1001.5)
    assert block.lsr == (ntp >> 16) & 0xFFFFFFFF
    assert block.dlsr == int(1.5 * 65536)


@pytest.mark.parametrize(
    "data", [b"\x80", bytes.fromhex("40c80000"), bytes.fromhex("80c90005deadbeef")]
)
def test_malformed_rtcp_is_rejected(data: bytes) -> None:
    with pytest.raises(rtp.RtcpError):
        rtp.parse_rtcp(data)
