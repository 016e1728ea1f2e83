"""An adaptive jitter buffer for one received G.711 stream, played out in 20 ms frames.

Theory of operation
-------------------
Packets are pushed as they arrive (:meth:`JitterBuffer.push`) and one frame is pulled on every
mixer tick (:meth:`JitterBuffer.pop`). Frames are keyed by RTP timestamp, not by sequence number:
the timestamp says where the audio belongs, so reordering, duplicates and packets of any length
(10, 20, 30 ms…) all fall into place on one grid of ``frame``-sample slots anchored at the first
packet.

States: *idle* (nothing to play; the next packet anchors the grid) → *buffering* (wait until
``target`` frames are buffered) → *playing* (one frame per pop). A long underrun — the sender
stopped, or uses silence suppression — returns to *idle*, so the next talkspurt re-anchors with
fresh prefill instead of being played late.

Timed start. Counting frames quantises the delay: the first frame waits for the ``target``-th
frame *and then* for the next tick, so at ``target`` 2 it waits 20–40 ms depending on where in
the 20 ms period the phone's packets land, and every later frame waits as long (they arrive one
period apart and are played one period apart). When :meth:`pop` is given the tick's time,
playout starts instead once the head frame is complete and has waited
``(target - 1) × frame - frame / 2``, and at least 3 J (the jitter estimate): at ``target`` 2,
10–30 ms. That wait is also the margin every later frame has against arriving late, so the
margin is at least 10 ms at any phase, where counting gave 20–40 ms; lateness still deepens the
buffer as below. Without a time the frame count applies (sans-IO callers and tests that do not
model the tick's phase).

Adaptation. The interarrival jitter is estimated as in RFC 3550 A.8. The target depth is the
larger of what the jitter asks for (``1 + ceil(3 J / frame)``) and what late packets taught: a
packet that arrives after its slot was played raises the target by one frame at once (late audio
is lost audio), and the target relaxes by one frame after ``relax_after`` pops without lateness.
When more than ``target + 1`` frames are buffered the oldest frame is skipped (at most one in ten
pops) so the delay comes back down.

A late packet whose slot was just concealed (one or two frames ago) is not thrown away: the play
head steps back to it, so the concealment frames become the added delay and no audio is lost.
A packet later than that is dropped, and the next pop inserts one concealment frame without
consuming a slot — either way the buffer gets deeper *now*, not only at the next prefill. (This
matters when a sender's packets arrive just after the tick, period after period.) Depth is bounded by ``[min_depth, max_depth]``.

Concealment (PLC). A missing frame is replaced by the previous frame faded (×0.7, ×0.4, ×0.2),
then by silence. Simple, cheap, and good enough for G.711 at low loss.

Counters (all cumulative): ``late`` (arrived after their slot was played), ``duplicates``,
``lost`` (a frame due for playout was missing: lost, late, or the sender paused — network
loss proper is counted from sequence numbers by :class:`~baton.switch.media.rtp.ReceiverStats`), ``concealed`` (frames produced by PLC),
``dropped`` (frames skipped to shrink, or discarded on overflow), ``resyncs`` (the grid was
re-anchored because the stream jumped).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = ["FrameKind", "JitterBuffer"]

_PLC_GAINS: Final = (0.7, 0.4, 0.2)
_MAX_REWIND: Final = 2  # frames a late packet may pull the play head back
_HALF: Final = 1 << 31
_MASK: Final = 0xFFFFFFFF


class FrameKind:
    """What the last :meth:`JitterBuffer.pop` produced (int constants, cheap to compare)."""

    SILENCE: Final = 0  # nothing: the caller plays silence (or skips the leg in the mix)
    AUDIO: Final = 1  # a received frame
    CONCEALED: Final = 2  # a faded repeat of the previous frame


_IDLE: Final = 0
_BUFFERING: Final = 1
_PLAYING: Final = 2


class JitterBuffer:
    """One leg's receive buffer. See the module docstring for the contract.

    ``decode`` maps a payload octet to a linear sample (a 256-entry int16 table from
    :mod:`baton.switch.media.g711`); ``silence`` is the octet that decodes to zero, used to
    fill the parts of a slot a short packet did not cover.
    """

    __slots__ = (
        "_anchor_arrival",
        "_anchored",
        "_decoder",
        "_end_ts",
        "_frame",
        "_hold",
        "_last",
        "_last_transit",
        "_play_ts",
        "_plc_run",
        "_pops_since_late",
        "_pops_since_skip",
        "_silence",
        "_slots",
        "_state",
        "_table",
        "concealed",
        "dropped",
        "duplicates",
        "jitter",
        "last_kind",
        "last_ts",
        "late",
        "lost",
        "max_depth",
        "min_depth",
        "relax_after",
        "resyncs",
        "target",
    )

    def __init__(
        self,
        decode: npt.NDArray[np.int16] | Callable[[bytes], npt.NDArray[np.int16]],
        *,
        silence: int = 0xFF,
        frame: int = 160,
        min_depth: int = 1,
        max_depth: int = 10,
        initial_depth: int = 2,
        relax_after: int = 250,
    ) -> None:
        if not 1 <= min_depth <= initial_depth <= max_depth:
            raise ValueError("need 1 <= min_depth <= initial_depth <= max_depth")
        # A table decodes G.711 octet by octet (a payload's length is its duration); a
        # function is a wideband codec's decoder: each packet is then one whole frame.
        self._table = decode if isinstance(decode, np.ndarray) else None
        self._decoder = None if isinstance(decode, np.ndarray) else decode
        self._silence = silence
        self._frame = frame
        self.min_depth = min_depth
        self.max_depth = max_depth
        self.target = initial_depth
        self.relax_after = relax_after
        self._slots: dict[int, bytes | bytearray] = {}
        self._state = _IDLE
        self._play_ts = 0  # extended (unwrapped) timestamp of the next frame to play
        self._anchored = False  # the extended timeline has been anchored once
        self._end_ts = 0  # extended timestamp just past the newest buffered sample
        self._anchor_arrival = 0  # arrival time (samples) of the packet that anchored the grid
        self._last: npt.NDArray[np.int16] | None = None
        self._plc_run = 0
        self._hold = False
        self._pops_since_late = 0
        self._pops_since_skip = 0
        self._last_transit: int | None = None
        self.jitter = 0.0  # samples, RFC 3550 A.8
        self.last_kind = FrameKind.SILENCE
        self.last_ts = -1  # extended timestamp of the last AUDIO frame popped
        self.late = self.duplicates = self.lost = self.concealed = 0
        self.dropped = self.resyncs = 0

    # ---- input -----------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget the stream (a new SSRC, a codec change). Counters are kept."""
        self._slots.clear()
        self._state = _IDLE
        self._anchored = False  # a new stream: a new timeline
        self._last = None
        self._plc_run = 0
        self._last_transit = None

    def push(self, timestamp: int, payload: bytes, arrival: int) -> bool:
        """Store one packet's payload; return False if it was discarded (late or duplicate).

        ``arrival`` is the arrival time in samples (seconds × 8000) on any monotonic clock.
        """
        frame = self._frame
        # Jitter (RFC 3550 A.8) on every packet, in samples.
        transit = arrival - timestamp
        if self._last_transit is not None:
            d = (transit - self._last_transit) & _MASK
            if d >= _HALF:
                d = (1 << 32) - d
            if d < 8000:  # ignore a stream restart's jump
                self.jitter += (d - self.jitter) / 16.0
        self._last_transit = transit

        if self._state == _IDLE:
            self._slots.clear()
            # Anchor the grid on this packet, on the same extended timeline as before (a talk
            # spurt after silence may come after the 32-bit timestamp wrapped): extended
            # timestamps, and so ``last_ts``, keep increasing across idle periods.
            if self._anchored:
                timestamp_ext = self._play_ts + (
                    ((timestamp - self._play_ts + _HALF) & _MASK) - _HALF
                )
            else:
                timestamp_ext = timestamp
                self._anchored = True
            self._play_ts = timestamp_ext
            self._end_ts = timestamp_ext
            self._state = _BUFFERING
            self._plc_run = 0
            self._anchor_arrival = arrival
        # Signed distance from the play head, then back to an extended timestamp.
        offset = ((timestamp - self._play_ts + _HALF) & _MASK) - _HALF
        n = frame if self._decoder is not None else len(payload)
        if offset + n <= 0:
            self.late += 1
            self._note_late()
            back = -offset // frame  # how many frames ago its slot was played
            if (
                self._state == _PLAYING
                and offset % frame == 0
                and n == frame
                and back <= min(self._plc_run, _MAX_REWIND)
            ):
                # Its slot (and every one since) was concealed: step the play head back and play
                # it after all. Nothing is lost; the delay grows by ``back`` frames, which is
                # exactly what arriving this late says it needs.
                self._play_ts -= back * frame
                self._plc_run = 0
                self._slots[self._play_ts] = payload
                return True
            self._hold = True  # too late to use: add one frame of delay on the next pop
            return False
        if offset > 2 * self.max_depth * frame:
            # Far in the future: the sender jumped (restart without a new SSRC). Re-anchor.
            self.resyncs += 1
            self.dropped += len(self._slots)
            self._state = _IDLE
            return self.push(timestamp, payload, arrival)
        start = self._play_ts + offset
        if offset % frame == 0 and n == frame:
            if start in self._slots:
                self.duplicates += 1
                return False
            self._slots[start] = payload
        elif self._decoder is not None:
            self.dropped += 1  # a coded frame cannot be split over slots
            return False
        elif not self._store_unaligned(start, payload):
            return False
        if start + n > self._end_ts:
            self._end_ts = start + n
        return True

    def _store_unaligned(self, start: int, payload: bytes) -> bool:
        """Spread a payload that is not one aligned frame over the slots it overlaps."""
        frame = self._frame
        grid0 = self._play_ts
        pos = start
        end = start + len(payload)
        stored = False
        while pos < end:
            slot = grid0 + ((pos - grid0) // frame) * frame
            take = min(end, slot + frame) - pos
            if slot >= self._play_ts:
                buf = self._slots.get(slot)
                if not isinstance(buf, bytearray):
                    fresh = bytearray((self._silence,)) * frame
                    if buf is not None:
                        fresh[:] = buf
                    buf = fresh
                    self._slots[slot] = buf
                i = pos - slot
                buf[i : i + take] = payload[pos - start : pos - start + take]
                stored = True
            pos += take
        if not stored:
            self.late += 1
            self._note_late()
        return stored

    def _note_late(self) -> None:
        self._pops_since_late = 0
        if self.target < self.max_depth:
            self.target += 1

    # ---- output ----------------------------------------------------------------------------

    def unplayed(self, timestamp: int) -> bool:
        """Whether the frame at RTP ``timestamp`` is not yet behind the play head: buffered or
        still to come (always, while idle: nothing has been played since)."""
        if self._state == _IDLE:
            return True
        return ((timestamp - self._play_ts + _HALF) & _MASK) - _HALF >= 0

    @property
    def depth(self) -> int:
        """Frames buffered ahead of the play head."""
        if self._state == _IDLE:
            return 0
        return max(0, (self._end_ts - self._play_ts + self._frame - 1) // self._frame)

    def pop(self, now: int | None = None) -> npt.NDArray[np.int16] | None:
        """One frame of audio for this tick, or ``None`` for silence. Sets :attr:`last_kind`.

        ``now`` is the tick's time in samples on the clock of :meth:`push`'s ``arrival``;
        given, it lets playout start on time rather than on a frame count (module docstring).
        """
        state = self._state
        if state == _IDLE:
            self.last_kind = FrameKind.SILENCE
            return None
        frame = self._frame
        if state == _BUFFERING:
            if not self._ready(now):
                self.last_kind = FrameKind.SILENCE
                return None
            self._state = _PLAYING
        self._relax()
        if self._hold:
            # Stretch: a concealed frame without consuming one, so the play head falls back.
            self._hold = False
            return self._conceal(lost=False)
        slots = self._slots
        if slots and self._pops_since_skip >= 10 and self.depth > self.target + 1:
            # Too much delay buffered: skip the oldest frame (it costs 20 ms of audio once).
            slots.pop(self._play_ts, None)
            self._play_ts += frame
            self.dropped += 1
            self._pops_since_skip = 0
        self._pops_since_skip += 1
        key = self._play_ts
        self._play_ts = key + frame
        payload = slots.pop(key, None)
        if payload is not None:
            if self._table is not None:
                pcm = self._table[np.frombuffer(payload, dtype=np.uint8)]
            else:
                assert self._decoder is not None
                pcm = self._decoder(bytes(payload))
            self._last = pcm
            self._plc_run = 0
            self.last_kind = FrameKind.AUDIO
            self.last_ts = key
            return pcm
        # A missing frame: lost, late, or the sender paused (RTP sequence numbers, counted by
        # ReceiverStats, tell network loss apart; here it is what the listener missed).
        return self._conceal(lost=True)

    def _ready(self, now: int | None) -> bool:
        """Whether buffering is over: enough frames, or (with ``now``) enough time waited."""
        buffered = self._end_ts - self._play_ts
        if now is None:
            return buffered >= self.target * self._frame
        # The head frame must be complete; then what it has waited is the margin every later
        # frame gets too (they arrive one period apart and are played one period apart).
        margin = max((self.target - 1) * self._frame - self._frame // 2, 3 * self.jitter)
        return buffered >= self._frame and now - self._anchor_arrival >= margin

    def _conceal(self, *, lost: bool) -> npt.NDArray[np.int16] | None:
        """Repeat-and-fade the last frame, then silence; a long underrun goes idle."""
        if lost:
            self.lost += 1
        self._plc_run += 1
        if self._last is not None and self._plc_run <= len(_PLC_GAINS):
            self.concealed += 1
            self.last_kind = FrameKind.CONCEALED
            gain = _PLC_GAINS[self._plc_run - 1]
            return (self._last * gain).astype(np.int16)
        if not self._slots and self._plc_run > len(_PLC_GAINS) + 2:
            # A long underrun: stop the clock; the next packet re-anchors with prefill.
            self._state = _IDLE
            self._last = None
        self.last_kind = FrameKind.SILENCE
        return None

    def _relax(self) -> None:
        wanted = 1 + math.ceil(3 * self.jitter / self._frame)
        if wanted > self.target:
            self.target = min(self.max_depth, wanted)  # more jitter: deepen at once
        self._pops_since_late += 1
        if self._pops_since_late < self.relax_after:
            return
        self._pops_since_late = 0
        floor = max(self.min_depth, min(self.max_depth, wanted))
        if self.target > floor:
            self.target -= 1
        elif self.target < floor:
            self.target = floor
