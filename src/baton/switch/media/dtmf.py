"""RFC 4733 telephone-events: DTMF digits as RTP payloads, out and in, sans-IO.

Theory of operation
-------------------
An event payload is four octets: event code, an end bit (E), a reserved bit, a 6-bit volume
(−dBm0) and a 16-bit duration in timestamp units. Every packet of one key press carries the *same*
RTP timestamp (the press's start); the duration grows with each update.

Sending (:class:`DtmfSender`): one list of packets per 20 ms tick — the first with the RTP marker,
then duration updates, and the end packet three times (RFC 4733 §2.5.1.4: retransmit the final
packet because end packets are what a receiver relies on).

Receiving (:class:`DtmfDetector`): a key press is identified by its RTP timestamp, so the detector
reports a digit on the first packet it sees with a timestamp it has not reported yet. That yields
exactly one digit per press whatever is lost or repeated:

* a lost start packet: the first update or end packet seen carries the new timestamp;
* lost end packets: the next press carries a new timestamp; nothing is reported for the old one;
* retransmitted end packets, or late updates: their timestamp is the current press's, or one of
  the recent ones remembered, and they are ignored;
* an event longer than the 16-bit duration (≈ 8 s) is split by the sender into segments with new
  timestamps and no marker (§2.5.1.3): a segment that continues a press whose duration reached the
  limit is not a new press.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass
from typing import Final

__all__ = [
    "DIGITS",
    "DtmfDetector",
    "DtmfSender",
    "TelephoneEvent",
    "decode_event",
    "digit_to_event",
    "encode_event",
]

#: Event codes 0..15 of RFC 4733 §3.2, by code.
DIGITS: Final = "0123456789*#ABCD"
_EVENT: Final = struct.Struct("!BBH")
_MAX_DURATION: Final = 0xFFFF


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """A decoded telephone-event payload."""

    event: int
    end: bool
    volume: int
    duration: int

    @property
    def digit(self) -> str | None:
        """The DTMF digit, or ``None`` for a non-DTMF event (flash, tones)."""
        return DIGITS[self.event] if self.event < len(DIGITS) else None


def digit_to_event(digit: str) -> int:
    """The event code of a DTMF digit (``0-9 * # A-D``); raises ``ValueError`` otherwise."""
    code = DIGITS.find(digit.upper()) if len(digit) == 1 else -1
    if code < 0:
        raise ValueError(f"not a DTMF digit: {digit!r}")
    return code


def encode_event(event: int, *, end: bool, volume: int, duration: int) -> bytes:
    """One telephone-event payload. ``volume`` is 0..63 (−dBm0), ``duration`` 0..65535."""
    return _EVENT.pack(event, (0x80 if end else 0) | (volume & 0x3F), min(duration, _MAX_DURATION))


def decode_event(payload: bytes) -> TelephoneEvent | None:
    """Decode a telephone-event payload; ``None`` if it is too short to be one."""
    if len(payload) < 4:
        return None
    event, flags, duration = _EVENT.unpack_from(payload)
    return TelephoneEvent(event, bool(flags & 0x80), flags & 0x3F, duration)


class DtmfSender:
    """The packets of one key press, tick by tick.

    Call :meth:`next_packets` once per frame (``frame`` samples); each call returns the
    ``(marker, payload)`` pairs to send in that tick, all with the press's start timestamp (the
    caller fixes it when the press starts). An empty list means the press is over.
    """

    __slots__ = ("_duration", "_elapsed", "_event", "_frame", "_volume", "done")

    def __init__(
        self, digit: str, *, duration: float = 0.1, volume: int = 10, frame: int = 160
    ) -> None:
        self._event = digit_to_event(digit)
        # At least one frame; at most one segment (a press longer than 8 s is not a dial).
        self._duration = max(frame, min(_MAX_DURATION, round(duration * 8000)))
        self._volume = volume
        self._frame = frame
        self._elapsed = 0
        self.done = False

    def next_packets(self) -> list[tuple[bool, bytes]]:
        if self.done:
            return []
        first = self._elapsed == 0
        self._elapsed += self._frame
        if self._elapsed < self._duration:
            payload = encode_event(
                self._event, end=False, volume=self._volume, duration=self._elapsed
            )
            return [(first, payload)]
        self.done = True
        end = encode_event(self._event, end=True, volume=self._volume, duration=self._duration)
        return [(first, end), (False, end), (False, end)]


class DtmfDetector:
    """Turns a stream of telephone-event packets into one digit per key press.

    Feed every packet of the telephone-event payload type to :meth:`feed`, with its RTP fields.
    Not thread-safe; one per received stream.
    """

    __slots__ = ("_current", "_duration", "_ended", "_event", "_recent", "_ssrc")

    def __init__(self, history: int = 16) -> None:
        self._ssrc: int | None = None
        self._current: int | None = None  # the timestamp of the press in progress
        self._event = -1
        self._duration = 0
        self._ended = False
        self._recent: deque[int] = deque(maxlen=history)  # timestamps already reported

    def reset(self) -> None:
        """Forget everything (the source changed)."""
        self._ssrc = None
        self._current = None
        self._recent.clear()

    def feed(self, ssrc: int, timestamp: int, marker: bool, payload: bytes) -> str | None:
        """Account one packet; return the digit if this packet starts a new key press."""
        ev = decode_event(payload)
        if ev is None or ev.digit is None:
            return None
        if ssrc != self._ssrc:
            self.reset()
            self._ssrc = ssrc
        if timestamp == self._current:
            self._duration = max(self._duration, ev.duration)
            self._ended = self._ended or ev.end
            return None
        if timestamp in self._recent:
            return None  # a late retransmission of an earlier press
        continues = (
            self._current is not None
            and not self._ended
            and not marker
            and ev.event == self._event
            and self._duration >= _MAX_DURATION - 2 * 160
            and 0 < (timestamp - self._current) & 0xFFFFFFFF <= _MAX_DURATION + 2 * 160
        )
        self._current = timestamp
        self._event = ev.event
        self._duration = ev.duration
        self._ended = ev.end
        self._recent.append(timestamp)
        return None if continues else ev.digit
