"""RTP and RTCP packets (RFC 3550), sans-IO: bytes in, values out.

Theory of operation
-------------------
* :func:`parse` turns a datagram into an :class:`RtpPacket` or raises :class:`RtpError`; it checks
  what RFC 3550 §5.1 / A.1 lets a receiver check cheaply (version 2, lengths, padding count).
  :meth:`RtpPacket.to_bytes` is its inverse. The relay hot path does not use these objects — it
  reads the fixed header with one ``struct`` call (see :data:`FIXED_HEADER`) — but everything else
  does.
* :class:`ReceiverStats` is one receiver's view of one source: the sequence-number extension and
  probation of RFC 3550 A.1 (wrap-around, large jumps, a restarted sender), the loss figures of A.3
  and the interarrival jitter of A.8. A change of SSRC is reported and starts a fresh state.
* RTCP: :func:`build_sr`, :func:`build_rr` (each followed by an SDES CNAME, as a compound packet
  must be) and :func:`parse_rtcp`, which returns the SR/RR/BYE parts of a compound packet and skips
  the others.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "FIXED_HEADER",
    "RTP_VERSION",
    "Bye",
    "ReceiverReport",
    "ReceiverStats",
    "ReportBlock",
    "RtcpError",
    "RtpError",
    "RtpPacket",
    "SenderReport",
    "SeqResult",
    "build_rr",
    "build_sr",
    "is_rtcp",
    "ntp_timestamp",
    "parse",
    "parse_rtcp",
]

RTP_VERSION: Final = 2
#: The 12-byte fixed header: V/P/X/CC, M/PT, sequence, timestamp, SSRC.
FIXED_HEADER: Final = struct.Struct("!BBHII")
_EXT_HEADER: Final = struct.Struct("!HH")
_RTCP_HEADER: Final = struct.Struct("!BBH")
_SR_INFO: Final = struct.Struct("!IIIII")  # SSRC, NTP msw, NTP lsw, RTP ts, packets, octets...
_REPORT_BLOCK: Final = struct.Struct("!IIIIII")

RTCP_SR: Final = 200
RTCP_RR: Final = 201
RTCP_SDES: Final = 202
RTCP_BYE: Final = 203
RTCP_APP: Final = 204


class RtpError(ValueError):
    """A datagram is not a valid RTP packet (the remote sent garbage: drop it and count it)."""


class RtcpError(ValueError):
    """A datagram is not a valid RTCP compound packet (drop it and count it)."""


@dataclass(slots=True)
class RtpPacket:
    """One RTP packet. ``payload`` excludes padding; ``extension`` is ``(profile, data)``."""

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrcs: tuple[int, ...] = ()
    extension: tuple[int, bytes] | None = None
    padding: int = 0  # number of padding octets to add on build (0 = none)

    def to_bytes(self) -> bytes:
        """Serialise. Raises :class:`RtpError` for out-of-range fields."""
        if not 0 <= self.payload_type <= 127:
            raise RtpError(f"payload type {self.payload_type} out of range")
        if len(self.csrcs) > 15:
            raise RtpError("more than 15 CSRCs")
        if not 0 <= self.padding <= 255:
            raise RtpError("padding must be 0..255 octets")
        b0 = (RTP_VERSION << 6) | len(self.csrcs)
        if self.padding:
            b0 |= 0x20
        if self.extension is not None:
            b0 |= 0x10
        parts = [
            FIXED_HEADER.pack(
                b0,
                (0x80 if self.marker else 0) | self.payload_type,
                self.sequence & 0xFFFF,
                self.timestamp & 0xFFFFFFFF,
                self.ssrc & 0xFFFFFFFF,
            )
        ]
        if self.csrcs:
            parts.append(struct.pack(f"!{len(self.csrcs)}I", *self.csrcs))
        if self.extension is not None:
            profile, data = self.extension
            if len(data) % 4:
                raise RtpError("extension data must be a multiple of 4 octets")
            parts.append(_EXT_HEADER.pack(profile, len(data) // 4))
            parts.append(data)
        parts.append(self.payload)
        if self.padding:
            parts.append(bytes(self.padding - 1) + bytes((self.padding,)))
        return b"".join(parts)


def is_rtcp(data: bytes) -> bool:
    """True when a datagram looks like RTCP (RFC 5761 §4: PT 200..204 in the second octet).

    Lets one socket carry both (rtcp-mux) and tells stray RTCP from RTP on the RTP port.
    """
    return len(data) >= 8 and (data[0] >> 6) == RTP_VERSION and 200 <= data[1] <= 204


def parse(data: bytes) -> RtpPacket:
    """Parse one RTP datagram; raise :class:`RtpError` if it is not valid RTP."""
    n = len(data)
    if n < 12:
        raise RtpError(f"{n} octets is shorter than an RTP header")
    b0, b1, seq, ts, ssrc = FIXED_HEADER.unpack_from(data)
    if b0 >> 6 != RTP_VERSION:
        raise RtpError(f"RTP version {b0 >> 6}")
    cc = b0 & 0x0F
    offset = 12 + 4 * cc
    if offset > n:
        raise RtpError("CSRC list runs past the end")
    csrcs = struct.unpack_from(f"!{cc}I", data, 12) if cc else ()
    extension = None
    if b0 & 0x10:
        if offset + 4 > n:
            raise RtpError("extension header runs past the end")
        profile, words = _EXT_HEADER.unpack_from(data, offset)
        offset += 4
        if offset + 4 * words > n:
            raise RtpError("extension runs past the end")
        extension = (profile, bytes(data[offset : offset + 4 * words]))
        offset += 4 * words
    end = n
    padding = 0
    if b0 & 0x20:
        padding = data[-1]
        if padding == 0 or offset + padding > n:
            raise RtpError(f"bad padding count {padding}")
        end = n - padding
    return RtpPacket(
        payload_type=b1 & 0x7F,
        sequence=seq,
        timestamp=ts,
        ssrc=ssrc,
        payload=bytes(data[offset:end]),
        marker=bool(b1 & 0x80),
        csrcs=tuple(csrcs),
        extension=extension,
        padding=padding,
    )


# ---- receiver statistics (RFC 3550 A.1, A.3, A.8) --------------------------------------------

MAX_DROPOUT: Final = 3000
MAX_MISORDER: Final = 100
MIN_SEQUENTIAL: Final = 2
_RTP_SEQ_MOD: Final = 1 << 16


class SeqResult:
    """What :meth:`ReceiverStats.update` concluded about one packet (plain int constants)."""

    OK: Final = 0  # in sequence (or a tolerated reordering); use it
    PROBATION: Final = 1  # a new source not yet validated (A.1 ``probation``); use it anyway
    BAD: Final = 2  # a large jump, not yet confirmed: drop it
    RESTART: Final = 3  # a confirmed large jump: the sender restarted; state was reset
    NEW_SSRC: Final = 4  # a different SSRC: state was reset to the new source


class ReceiverStats:
    """One receiver's statistics of one RTP source.

    :meth:`update` implements ``update_seq`` of RFC 3550 A.1 (extended 32-bit sequence numbers
    that survive wrap-around, a restarted sender, misordering) plus the jitter estimator of A.8.
    :meth:`report_block` computes the A.3 loss figures for an RTCP report block. Times are in
    timestamp units (``clock_rate`` per second); the caller supplies an arrival clock in those
    units so that this class stays free of I/O.
    """

    __slots__ = (
        "bad_seq",
        "base_seq",
        "clock_rate",
        "cycles",
        "expected_prior",
        "jitter",
        "last_arrival",
        "last_sr_arrival",
        "last_sr_ntp",
        "last_transit",
        "max_seq",
        "octets",
        "probation",
        "received",
        "received_prior",
        "ssrc",
    )

    def __init__(self, clock_rate: int = 8000) -> None:
        self.clock_rate = clock_rate
        self.ssrc: int | None = None
        self._reset(0)
        self.last_sr_ntp = 0  # middle 32 bits of the last SR's NTP timestamp (LSR)
        self.last_sr_arrival: float | None = None  # wall seconds when it arrived

    def _reset(self, seq: int) -> None:
        self.base_seq = seq
        self.max_seq = seq
        self.bad_seq = _RTP_SEQ_MOD + 1  # so that seq == bad_seq is false
        self.cycles = 0
        self.received = 0
        self.octets = 0
        self.received_prior = 0
        self.expected_prior = 0
        self.probation = MIN_SEQUENTIAL
        self.jitter = 0.0
        self.last_transit: int | None = None
        self.last_arrival = 0

    @property
    def extended_max(self) -> int:
        """The highest extended sequence number received (cycles + max_seq)."""
        return self.cycles + self.max_seq

    def update(self, ssrc: int, seq: int, timestamp: int, arrival: int, size: int = 0) -> int:
        """Account one packet; return a :class:`SeqResult` constant.

        Follows ``update_seq`` of RFC 3550 A.1 exactly; only ``OK`` and ``RESTART`` packets are
        counted as received. ``arrival`` is the arrival time in timestamp units (any origin, but
        monotonic); it feeds the jitter estimate whatever the verdict.
        """
        changed = False
        if ssrc != self.ssrc:
            changed = self.ssrc is not None
            self.ssrc = ssrc
            self._reset(seq)
            self.max_seq = (seq - 1) & 0xFFFF
        self._jitter(timestamp, arrival)
        udelta = (seq - self.max_seq) & 0xFFFF
        if self.probation:
            # A new source must send MIN_SEQUENTIAL packets in sequence to be validated.
            if seq == (self.max_seq + 1) & 0xFFFF:
                self.probation -= 1
                self.max_seq = seq
                if self.probation == 0:
                    self._init_seq(seq)
                    self.received += 1
                    self.octets += size
                    return SeqResult.NEW_SSRC if changed else SeqResult.OK
            else:
                self.probation = MIN_SEQUENTIAL - 1
                self.max_seq = seq
            return SeqResult.NEW_SSRC if changed else SeqResult.PROBATION
        result = SeqResult.OK
        if udelta < MAX_DROPOUT:
            if seq < self.max_seq:
                self.cycles += _RTP_SEQ_MOD  # wrapped around
            self.max_seq = seq
        elif udelta <= _RTP_SEQ_MOD - MAX_MISORDER:
            # A very large jump. If the next packet follows it, the sender restarted.
            if seq == self.bad_seq:
                self._init_seq(seq)
                result = SeqResult.RESTART
            else:
                self.bad_seq = (seq + 1) & 0xFFFF
                return SeqResult.BAD
        # else: a duplicate or a packet reordered within MAX_MISORDER: counted, max unchanged.
        self.received += 1
        self.octets += size
        return result

    def _init_seq(self, seq: int) -> None:
        self.base_seq = seq
        self.max_seq = seq
        self.bad_seq = _RTP_SEQ_MOD + 1
        self.cycles = 0
        self.received = 0
        self.received_prior = 0
        self.expected_prior = 0

    def _jitter(self, timestamp: int, arrival: int) -> None:
        # RFC 3550 A.8: J += (|D| - J) / 16, with D the change in relative transit time.
        transit = (arrival - timestamp) & 0xFFFFFFFF
        if self.last_transit is not None:
            d = (transit - self.last_transit) & 0xFFFFFFFF
            if d >= 1 << 31:
                d = (1 << 32) - d
            self.jitter += (d - self.jitter) / 16.0
        self.last_transit = transit
        self.last_arrival = arrival

    @property
    def expected(self) -> int:
        return self.extended_max - self.base_seq + 1

    @property
    def cumulative_lost(self) -> int:
        """Packets lost since the start (RFC 3550 A.3; negative with duplicates)."""
        return self.expected - self.received

    def report_block(self, now_wall: float | None = None) -> ReportBlock:
        """Build the report block for the next RTCP packet and start a new interval (A.3)."""
        expected = self.expected
        expected_interval = expected - self.expected_prior
        self.expected_prior = expected
        received_interval = self.received - self.received_prior
        self.received_prior = self.received
        lost_interval = expected_interval - received_interval
        fraction = 0
        if expected_interval > 0 and lost_interval > 0:
            fraction = min(255, (lost_interval << 8) // expected_interval)
        lost = max(-(1 << 23), min((1 << 23) - 1, self.cumulative_lost))
        dlsr = 0
        if self.last_sr_arrival is not None and now_wall is not None:
            dlsr = max(0, int((now_wall - self.last_sr_arrival) * 65536))
        return ReportBlock(
            ssrc=self.ssrc or 0,
            fraction_lost=fraction,
            cumulative_lost=lost,
            highest_seq=self.extended_max & 0xFFFFFFFF,
            jitter=int(self.jitter),
            lsr=self.last_sr_ntp,
            dlsr=dlsr,
        )

    def note_sender_report(self, sr: SenderReport, now_wall: float) -> None:
        """Remember an SR from this source, for LSR/DLSR in our next report block."""
        self.last_sr_ntp = (sr.ntp >> 16) & 0xFFFFFFFF
        self.last_sr_arrival = now_wall


# ---- RTCP ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """One reception report block (RFC 3550 §6.4.1)."""

    ssrc: int
    fraction_lost: int  # 0..255, fixed point /256
    cumulative_lost: int  # signed 24-bit
    highest_seq: int  # extended highest sequence number received
    jitter: int  # timestamp units
    lsr: int = 0
    dlsr: int = 0  # 1/65536 s

    def pack(self) -> bytes:
        lost = self.cumulative_lost & 0xFFFFFF
        return _REPORT_BLOCK.pack(
            self.ssrc,
            (self.fraction_lost << 24) | lost,
            self.highest_seq,
            self.jitter,
            self.lsr,
            self.dlsr,
        )

    @classmethod
    def unpack(cls, data: bytes, offset: int) -> ReportBlock:
        ssrc, word, highest, jitter, lsr, dlsr = _REPORT_BLOCK.unpack_from(data, offset)
        lost = word & 0xFFFFFF
        if lost & 0x800000:
            lost -= 1 << 24
        return cls(ssrc, word >> 24, lost, highest, jitter, lsr, dlsr)


@dataclass(frozen=True, slots=True)
class SenderReport:
    ssrc: int
    ntp: int  # 64-bit NTP timestamp
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class ReceiverReport:
    ssrc: int
    reports: tuple[ReportBlock, ...] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class Bye:
    ssrcs: tuple[int, ...]


_NTP_EPOCH_OFFSET: Final = 2208988800  # seconds from 1900-01-01 to 1970-01-01


def ntp_timestamp(unix_seconds: float) -> int:
    """The 64-bit NTP timestamp of a Unix time."""
    return int((unix_seconds + _NTP_EPOCH_OFFSET) * (1 << 32)) & 0xFFFFFFFFFFFFFFFF


def _sdes_cname(ssrc: int, cname: str) -> bytes:
    text = cname.encode()[:255]
    chunk = struct.pack("!I", ssrc) + bytes((1, len(text))) + text + b"\x00"
    chunk += bytes(-len(chunk) % 4)  # the item list ends with a null and pads to 32 bits
    return _RTCP_HEADER.pack(0x81, RTCP_SDES, len(chunk) // 4) + chunk


def build_sr(
    ssrc: int,
    *,
    ntp: int,
    rtp_timestamp: int,
    packet_count: int,
    octet_count: int,
    reports: Sequence[ReportBlock] = (),
    cname: str = "baton",
) -> bytes:
    """A compound RTCP packet: SR (with up to 31 report blocks) then SDES CNAME."""
    if len(reports) > 31:
        raise RtcpError("more than 31 report blocks")
    body = _SR_INFO.pack(
        ssrc, (ntp >> 32) & 0xFFFFFFFF, ntp & 0xFFFFFFFF, rtp_timestamp & 0xFFFFFFFF, packet_count
    ) + struct.pack("!I", octet_count & 0xFFFFFFFF)
    body += b"".join(r.pack() for r in reports)
    head = _RTCP_HEADER.pack(0x80 | len(reports), RTCP_SR, len(body) // 4)
    return head + body + _sdes_cname(ssrc, cname)


def build_rr(ssrc: int, reports: Sequence[ReportBlock] = (), *, cname: str = "baton") -> bytes:
    """A compound RTCP packet: RR (up to 31 report blocks) then SDES CNAME."""
    if len(reports) > 31:
        raise RtcpError("more than 31 report blocks")
    body = struct.pack("!I", ssrc) + b"".join(r.pack() for r in reports)
    head = _RTCP_HEADER.pack(0x80 | len(reports), RTCP_RR, len(body) // 4)
    return head + body + _sdes_cname(ssrc, cname)


RtcpPart = SenderReport | ReceiverReport | Bye


def parse_rtcp(data: bytes) -> list[RtcpPart]:
    """Parse a compound RTCP packet into its SR, RR and BYE parts (others are skipped).

    Raises :class:`RtcpError` when the packet is malformed (RFC 3550 A.2's header checks).
    """
    parts: list[RtcpPart] = []
    offset = 0
    n = len(data)
    if n < 4:
        raise RtcpError("shorter than an RTCP header")
    while offset < n:
        if offset + 4 > n:
            raise RtcpError("truncated RTCP header")
        b0, pt, words = _RTCP_HEADER.unpack_from(data, offset)
        if b0 >> 6 != RTP_VERSION:
            raise RtcpError(f"RTCP version {b0 >> 6}")
        length = 4 * (words + 1)
        if offset + length > n:
            raise RtcpError("RTCP packet runs past the end")
        count = b0 & 0x1F
        body = offset + 4
        if pt == RTCP_SR:
            if length < 28 + 24 * count:
                raise RtcpError("SR too short for its report count")
            ssrc, msw, lsw, rtp_ts, packets = _SR_INFO.unpack_from(data, body)
            (octets,) = struct.unpack_from("!I", data, body + 20)
            blocks = tuple(ReportBlock.unpack(data, body + 24 + 24 * i) for i in range(count))
            parts.append(SenderReport(ssrc, (msw << 32) | lsw, rtp_ts, packets, octets, blocks))
        elif pt == RTCP_RR:
            if length < 8 + 24 * count:
                raise RtcpError("RR too short for its report count")
            (ssrc,) = struct.unpack_from("!I", data, body)
            blocks = tuple(ReportBlock.unpack(data, body + 4 + 24 * i) for i in range(count))
            parts.append(ReceiverReport(ssrc, blocks))
        elif pt == RTCP_BYE:
            if length < 4 + 4 * count:
                raise RtcpError("BYE too short for its source count")
            parts.append(Bye(struct.unpack_from(f"!{count}I", data, body)))
        offset += length
    return parts
