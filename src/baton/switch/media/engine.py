"""The media engine: a thin asyncio shell around the sans-IO pieces, with real UDP sockets.

What the ``sip`` switch adapter calls (everything else is internal):

==============================================  ==============================================
``allocate(leg) -> (host, port)``               bind an RTP/RTCP socket pair; the address goes
                                                in our SDP
``set_remote(leg, host, port, payload_type=…,   where the phone said it receives (its SDP), the
telephone_event=…)``                            codec and the RFC 4733 payload type
``bridge / unbridge / create_meeting / join /   the media graph (:class:`~.mixer.Mixer`)
leave / destroy_meeting / clear``
``await play(target, Tone|Prompt, loop=) -> id``  playback to a leg or a meeting
``stop_play / record(target, path) -> id /      playback and recording control
stop_record``
``send_dtmf(leg, digit)``                       RFC 4733 out
``set_sending(leg, on)``                        hold/resume: stop or restart RTP to the phone
``release(leg)``                                clear, close the sockets, forget the leg
``set_listener(cb)``                            events: ``DtmfReceived``, ``PlaybackFinished``,
                                                ``RecordingFinished``, :class:`MediaTimeout`
``metrics`` / ``leg_stats(leg)``                counters
``await close()``                               stop everything
==============================================  ==============================================

Theory of operation
-------------------
* **Sockets without transports.** Each leg has a non-blocking RTP socket (even port) and RTCP
  socket (the next port), watched with ``loop.add_reader`` for as long as they are bound; a
  readiness callback finds the leg through the pair and reads one datagram with
  ``recvfrom``. That is the cheapest receive path asyncio offers (no transport, no protocol
  object, no per-packet exception), and it works on Baton's virtual-time loop too.
* **Symmetric RTP, latched once.** Until the phone sends, we send to its SDP address. The first
  valid RTP packet (a payload type we negotiated) after :meth:`MediaEngine.set_remote` *latches*
  the leg to the address it came from (NAT, or a phone sending from another port than it
  advertised). From then on only the latched source is heard and sent to; packets from anywhere
  else are dropped (counted as ``invalid``) and are no sign of life for the inactivity timeout.
  The latch moves only (1) to the signalled address: a packet from the SDP address itself, or a
  new SDP address (``set_remote`` from a re-INVITE); or (2) by the re-latch rule: the latched
  source has been silent for ``relatch_after`` seconds *and* the new source continues its SSRC
  (a phone whose NAT binding changed). A new SSRC from a new address never moves the latch: that
  let an RTP spray take calls over (docs/sip.md, "Media security"). RTCP goes to the negotiated
  address (the SDP port + 1; the latched host's if the phone is behind NAT) and is taken only
  from the latched or the signalled host.
* **SRTP** (RFC 3711, keys from SDES): a leg given keys in :meth:`MediaEngine.set_remote`
  authenticates and decrypts what it receives (a packet that does not authenticate is dropped
  before it can latch anything) and encrypts what it sends; such legs skip the direct-relay
  fast path (the packet must be decrypted and encrypted again anyway).
* **Ports are chosen at random** across the range, not from its bottom, and the last released
  ones rest while others are free: after a restart, a new call does not get the port of a dead
  call whose phone still streams to it.
* **Released socket pairs are re-used** (binding, registering and closing two sockets was a
  large part of a short call's CPU): a released leg's pair stays bound and watched in a pool
  (``socket_pool`` pairs; by default up to 512, and at most an eighth of the process's file
  descriptors), and a new leg takes the oldest one that has heard nothing for
  ``_POOL_QUIET`` (0.5 s) since its leg was released. What a pooled pair receives is dropped
  (``invalid``); the old peer's last packets in flight only delay its re-use, but a packet
  half a second after the release means someone still streams at the port (a phone that
  missed its BYE): the pair is closed and its port rests, as above. Whatever waits in a pair
  when it is taken is read away first; if anything did, the pair is closed instead. So no
  packet sent to a port's previous leg reaches its next one, unless its sender was silent
  for half a second and starts again (a phone with silence suppression whose call died):
  such a packet can win the new leg's first latch, as a spray can on any port, and only the
  signalled address takes the latch back (docs/sip.md, "Media security").
* **Direct relay.** A leg in a plain two-party bridge (see :mod:`.mixer`) forwards each RTP
  packet to its peer as it arrives: no jitter buffer, no decode, no tick. The header is rewritten
  for the peer's outgoing stream (our SSRC, sequence and timestamp continued across graph
  changes); a PCMU↔PCMA difference is bridged with a 256-byte ``bytes.translate`` table.
  RFC 4733 packets are forwarded too (re-typed to the peer's payload type), and detected.
* **Fan-out.** A listener of a meeting with one speaker (a push-to-talk group while someone has
  the floor; see "Fan-out" in :mod:`.mixer`) is sent the speaker's packets as they arrive,
  rewritten for the listener's stream like a relayed packet — not a mix at the next tick. When a
  listener starts hearing a speaker this way, the speaker's recent packets (of the last
  ``_FLUSH`` seconds) that its jitter buffer has not played yet go out at once: a talker granted
  the floor is heard as soon as the grant is made, and a listener moved from the mix to fan-out
  hears nothing twice. (The other way, back into the mix while the same speaker goes on — a
  tone to the whole group — repeats up to the speaker's jitter-buffer delay, 10–30 ms, once.)
  The speaker's audio still feeds its jitter buffer for whoever hears it through the mix (a
  revoked talker hearing its tone); a fanned-out listener's own audio is heard by nobody and
  is not buffered. Packets of the speaker's stream that listeners do not get (its RFC 4733 key
  presses) close up their sequence numbers. ``MediaEngine(fanout=False)`` mixes every meeting
  member instead.
* **Wideband legs** (G.722, Opus; :mod:`.wideband`) decode into their jitter buffer and encode
  every tick with a codec of their own, at the tick's rate; while a wideband leg hears another
  the tick runs at 16 kHz and the narrowband legs are converted up (what they say) and down
  (what they hear) per leg; otherwise (a browser talking to a desk phone) it stays at 8 kHz. Two legs
  of one codec in a bridge still relay directly; across codecs they are mixed.
* **WebRTC legs** (a browser's: ICE-lite, DTLS-SRTP, rtcp-mux; :mod:`.webrtc`) answer STUN
  checks and run the DTLS handshake on their RTP port; nothing is sent to the browser and
  nothing it sends is heard until the handshake gave SRTP keys; then the leg is an SRTP leg
  latched to the address the browser's checks came from (its RTCP goes on the RTP port).
* **Mixed legs** push payloads into their :class:`~.jitter.JitterBuffer`; the clock pulls one
  frame per leg every 20 ms, runs :meth:`~.mixer.Mixer.tick`, encodes each output row with the
  G.711 tables and sends it. Silent rows send a cached silence payload (no encode). A
  connected-idle leg (no bridge, meeting, playback or recording: a leg still ringing) is not
  mixed at all: it gets that cached silence frame every tick.
* **The clock** is drift-free: tick *n* is scheduled with ``call_at(t0 + n × 20 ms)`` against
  ``loop.time()``, so a late tick does not delay the next ones. A tick later than
  ``late_threshold`` counts as late; one more than ``max_behind`` late skips the missed ticks
  (counted) instead of sending a burst. The clock runs while any leg exists.
* **Inactivity.** Any RTP or RTCP packet counts as life; legs are checked every 0.5 s and a leg
  silent for ``rtp_timeout`` seconds after its remote was set is reported once as
  :class:`MediaTimeout` (the adapter ends it with ``Cause.MEDIA_TIMEOUT``).
* **No stray tasks.** The engine starts no task: the clock is one ``call_at`` handle, receivers
  are reader callbacks, a prompt is loaded by the awaited ``asyncio.to_thread`` of
  :meth:`MediaEngine.play`. :meth:`MediaEngine.close` cancels the handle and removes the readers.

Errors: commands raise :class:`~.mixer.MediaError` (a :class:`~baton.core.port.SwitchError`)
for an unknown leg or meeting, an unreadable prompt, an unwritable recording path, no free port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import resource
import select
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, fields
from types import EllipsisType
from typing import Final

import numpy as np
import numpy.typing as npt

from baton.core.port import (
    DtmfReceived,
    Member,
    PlaybackFinished,
    Prompt,
    RecordingFinished,
    Target,
    Tone,
)
from baton.switch.media import g711, rtp
from baton.switch.media.dtmf import DtmfDetector, DtmfSender
from baton.switch.media.jitter import JitterBuffer
from baton.switch.media.mixer import FRAME, MediaError, Mixer
from baton.switch.media.srtp import SrtpContext, SrtpError
from baton.switch.media.tones import tone_spec
from baton.switch.media.wav import WavError, WavWriter, read_wav
from baton.switch.media.webrtc import (
    DtlsIdentity,
    LibSrtp,
    WebRtcError,
    WebRtcLeg,
    is_dtls,
    is_stun,
)
from baton.switch.media.wideband import WIDE_FRAME, Resampler, WidebandCodec

__all__ = [
    "G722",
    "OPUS",
    "PCMA",
    "PCMU",
    "Codec",
    "LegStats",
    "MediaEngine",
    "MediaEvent",
    "MediaMetrics",
    "MediaTimeout",
]

log = logging.getLogger(__name__)

TICK: Final = 0.020
_HDR: Final = rtp.FIXED_HEADER
_CHECK_EVERY: Final = 25  # ticks between inactivity checks (0.5 s)
_FLUSH: Final = 0.040  # fan-out: a new listener gets the speaker's packets this recent at once
_POOL_QUIET: Final = 0.5  # seconds a released socket pair must have heard nothing to be re-used
_WIDE_SILENCE: Final = np.zeros(WIDE_FRAME, dtype=np.int16)
_NARROW_SILENCE: Final = np.zeros(FRAME, dtype=np.int16)


@dataclass(frozen=True, slots=True)
class Codec:
    """A codec: its name, payload type, RTP clock rate, and for G.711 its tables."""

    name: str
    payload_type: int
    silence: int
    clock_rate: int = 8000
    wide: bool = False  # G.722, Opus: a codec with state (:mod:`.wideband`), mixed at 16 kHz

    @property
    def kind(self) -> str:
        """The codec family: packets forward as they are (or translated) only within one."""
        return self.name if self.wide else "g711"

    @property
    def step(self) -> int:
        """RTP timestamp units per 20 ms frame."""
        return self.clock_rate // 50

    @property
    def decode(self) -> np.ndarray:
        return g711.ULAW_TO_LINEAR if self.name == "PCMU" else g711.ALAW_TO_LINEAR

    @property
    def encode(self) -> np.ndarray:
        return g711.LINEAR_TO_ULAW if self.name == "PCMU" else g711.LINEAR_TO_ALAW


PCMU: Final = Codec("PCMU", 0, g711.ULAW_SILENCE)
PCMA: Final = Codec("PCMA", 8, g711.ALAW_SILENCE)
G722: Final = Codec("G722", 9, 0, 8000, True)  # 16 kHz audio, an 8000 RTP clock (RFC 3551)
OPUS: Final = Codec("opus", 111, 0, 48000, True)  # RFC 7587: the RTP clock is always 48000
_CODECS: Final = {"PCMU": PCMU, "PCMA": PCMA, "G722": G722, "OPUS": OPUS}


@dataclass(frozen=True, slots=True)
class MediaTimeout:
    """No RTP or RTCP from a leg for ``idle`` seconds: the phone is gone."""

    leg: str
    idle: float


MediaEvent = DtmfReceived | PlaybackFinished | RecordingFinished | MediaTimeout


@dataclass(slots=True)
class MediaMetrics:
    """Engine-wide counters (cumulative)."""

    packets_in: int = 0
    packets_out: int = 0
    relayed: int = 0  # packets forwarded directly (included in packets_out)
    invalid: int = 0  # not RTP, or from an address we did not latch
    send_errors: int = 0
    ticks: int = 0
    late_ticks: int = 0
    skipped_ticks: int = 0
    late_frames: int = 0  # packets that reached a jitter buffer after their slot was played
    lost_frames: int = 0  # frames missing at playout (concealed or silent)
    dropped_frames: int = 0  # frames discarded: duplicates, overflow, delay shrink
    dtmf_in: int = 0
    timeouts: int = 0
    tick_seconds: float = 0.0  # CPU (wall) time spent inside ticks

    def as_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, slots=True)
class LegStats:
    """One leg's view, for diagnostics and tests."""

    local: tuple[str, int]
    remote: tuple[str, int] | None
    latched: tuple[str, int] | None
    codec: str | None
    packets_in: int
    packets_out: int
    direct_peer: str | None
    jitter_target_frames: int
    late: int
    lost: int
    dropped: int
    fanout_source: str | None = None  # the speaker this listener is sent directly (fan-out)


class _Leg:
    __slots__ = (
        "codec",
        "dest",
        "dtmf",
        "dtmf_out",
        "dtmf_ts",
        "fanout",
        "fanout_from",
        "heard_at",
        "id",
        "in_ssrc",
        "jb",
        "last_activity",
        "last_out_time",
        "latched",
        "local",
        "out_resync",
        "out_seq",
        "out_ssrc",
        "out_ts",
        "packets_in",
        "packets_out",
        "pair",
        "pt",
        "recent",
        "relay_from",
        "relay_src_ssrc",
        "relay_to",
        "relay_xcode",
        "remote",
        "rtcp_dest",
        "rtcp_sock",
        "rtp_timeout",
        "rx_seen",
        "sending",
        "seq_off",
        "silence",
        "sock",
        "srtp_in",
        "srtp_keys",
        "srtp_out",
        "stats",
        "te_pt",
        "timed_out",
        "ts_off",
        "wb",
        "wb_down",
        "wb_up",
        "webrtc",
    )

    def __init__(self, leg: str, pair: _Pair) -> None:
        self.id = leg
        self.pair = pair
        self.sock = pair.sock
        self.rtcp_sock = pair.rtcp_sock
        self.local: tuple[str, int] = pair.local
        self.remote: tuple[str, int] | None = None
        self.latched: tuple[str, int] | None = None
        self.heard_at = 0.0  # loop time of the last packet from the latched source
        self.srtp_in: SrtpContext | LibSrtp | None = None  # the phone's stream, when SRTP
        self.srtp_out: SrtpContext | LibSrtp | None = None  # ours (LibSrtp: a browser's leg)
        self.srtp_keys: tuple[bytes | None, bytes | None] = (None, None)
        self.dest: tuple[str, int] | None = None  # where we send: latched, else remote
        self.sending = True  # False while the phone's SDP says it does not receive (hold)
        self.rtcp_dest: tuple[str, int] | None = None
        self.codec: Codec | None = None
        self.pt = -1  # the audio payload type (-1 until the SDP answer): cached for the fast path
        self.silence = b""
        self.te_pt: int | None = None
        self.in_ssrc: int | None = None
        self.jb = JitterBuffer(PCMU.decode, silence=PCMU.silence)
        self.stats = rtp.ReceiverStats()
        self.dtmf = DtmfDetector()
        self.dtmf_out: deque[DtmfSender] = deque()
        self.dtmf_ts: int | None = None
        # Our outgoing stream: one SSRC for the leg's life, continuous seq/ts across changes.
        self.out_ssrc = random.getrandbits(32)
        self.out_seq = random.getrandbits(16)
        self.out_ts = random.getrandbits(32)
        self.last_out_time = 0.0
        self.out_resync = True  # next packet out re-derives ts from elapsed time and is marked
        # Relay state: relay_to is the leg our packets go to; the offsets live on the receiver.
        self.relay_to: _Leg | None = None
        self.relay_from: list[_Leg] = []  # the legs whose relay_to is this one: its peer
        self.relay_xcode: bytes | None = None
        self.relay_src_ssrc: int | None = None
        # Fan-out: the listeners our audio goes to as it arrives, or the speaker we hear so.
        self.fanout: list[_Leg] = []
        self.fanout_from: _Leg | None = None
        # Our last audio packets (arrival, marker, seq, ts, ssrc, payload), for a new listener.
        self.recent: deque[tuple[float, int, int, int, int, bytes]] = deque(maxlen=3)
        self.seq_off = 0
        self.ts_off = 0
        self.packets_in = 0
        self.packets_out = 0
        self.rx_seen = 0
        self.last_activity = 0.0
        self.rtp_timeout: float | None = None
        self.timed_out = False
        self.wb: WidebandCodec | None = None  # a wideband leg's encoder and decoder
        self.wb_up: Resampler | None = None  # a narrowband leg in a 16 kHz mix: its input up
        self.wb_down: Resampler | None = None  # ... and what it hears down
        self.webrtc: WebRtcLeg | None = None  # a browser's leg: ICE-lite and DTLS-SRTP

    @property
    def rate(self) -> int:
        return self.codec.clock_rate if self.codec is not None else 8000

    @property
    def step(self) -> int:
        return self.codec.step if self.codec is not None else FRAME


class _Pair:
    """A leg's bound RTP and RTCP sockets; kept in the engine's pool between two legs."""

    __slots__ = ("leg", "local", "quiet_from", "released_at", "rtcp_sock", "sock")

    def __init__(self, sock: socket.socket, rtcp_sock: socket.socket) -> None:
        self.sock = sock
        self.rtcp_sock = rtcp_sock
        self.leg: _Leg | None = None  # whose packets they carry; None: in the pool
        host, port = sock.getsockname()[:2]
        self.local: tuple[str, int] = (host, port)
        self.released_at = 0.0  # loop time it went into the pool
        self.quiet_from = 0.0  # ... or of the last packet it received there


def _bind_pair(host: str, port: int) -> _Pair | None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    rtp_sock = socket.socket(family, socket.SOCK_DGRAM)
    rtcp_sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        rtp_sock.bind((host, port))
        rtcp_sock.bind((host, port + 1))
    except OSError:
        rtp_sock.close()
        rtcp_sock.close()
        return None
    for s in (rtp_sock, rtcp_sock):
        s.setblocking(False)
    return _Pair(rtp_sock, rtcp_sock)


def _default_pool() -> int:
    """Socket pairs kept for re-use: up to 512, and at most an eighth of the process's file
    descriptors (two per pair)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 512
    return max(0, min(512, soft // 16))


class MediaEngine:
    """Baton's RTP media engine. Create it inside a running loop; ``await close()`` at the end
    (or use ``async with``). See the module docstring for the API and the theory of operation.

    ``port_range`` is ``[first, last)``; RTP uses even ports, RTCP the odd port above.
    ``rtp_timeout`` is the default inactivity limit (``None``: never). ``late_threshold``: a
    tick starting later than this counts as late; ``max_behind``: later than this, the missed
    ticks are skipped. ``jitter_depth``: (min, initial, max) jitter-buffer depth in frames.
    ``rtcp_interval``: seconds between RTCP reports per leg (rounded to 0.5 s). ``fanout``: send
    the listeners of a one-speaker meeting the speaker's packets as they arrive (see the module
    docstring). ``relatch_after``: seconds the latched RTP source must have been silent before
    another source continuing its SSRC may take its place. ``socket_pool``: released socket
    pairs kept for re-use (``None``: up to 512, at most an eighth of the file descriptors;
    0: none). The listener is called synchronously from the engine's callbacks and must not
    block.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port_range: tuple[int, int] = (30000, 40000),
        rtp_timeout: float | None = 30.0,
        late_threshold: float = 0.010,
        max_behind: float = 0.200,
        jitter_depth: tuple[int, int, int] = (1, 2, 10),
        rtcp_interval: float = 5.0,
        fanout: bool = True,
        relatch_after: float = 2.0,
        socket_pool: int | None = None,
    ) -> None:
        first, last = port_range
        if first % 2:
            first += 1
        if last - first < 2:
            raise ValueError("port range too small")
        self.host = host
        self.port_range = (first, last)
        self.rtp_timeout = rtp_timeout
        self.late_threshold = late_threshold
        self.max_behind = max_behind
        self.jitter_depth = jitter_depth
        self.relatch_after = relatch_after
        # Reports go out from the 0.5 s housekeeping pass: round the interval to a multiple.
        self._rtcp_every = max(1, round(rtcp_interval / (TICK * _CHECK_EVERY))) * _CHECK_EVERY
        self.metrics = MediaMetrics()
        self.mixer = Mixer(fanout=fanout)
        self._loop = asyncio.get_running_loop()
        self._legs: dict[str, _Leg] = {}
        self._listener: Callable[[MediaEvent], None] | None = None
        # Random ports; the last released ones rest while others are free (module docstring).
        self._random = random.SystemRandom()
        self._resting: deque[int] = deque(maxlen=max(1, (last - first) // 8))
        # The same ports as counts and a set, kept with the deque and the legs, so that a
        # random try is one lookup instead of a set built from both per allocation.
        self._resting_count: dict[int, int] = {}
        self._in_use: set[int] = set()  # bound ports: the legs' and the pool's
        # Released socket pairs, oldest first, for re-use once quiet (module docstring).
        self._pool: deque[_Pair] = deque()
        self._pool_max = _default_pool() if socket_pool is None else socket_pool
        self._clock: asyncio.TimerHandle | None = None
        self._t0 = 0.0
        self._tick_no = 0
        self._dtmf_legs: set[_Leg] = set()
        self._retired = [0, 0, 0]  # late, lost, dropped frames of released legs
        self._prompts: dict[tuple[str, int, int], npt.NDArray[np.int16]] = {}
        self._closed = False
        self._dtls: DtlsIdentity | None = None

    async def __aenter__(self) -> MediaEngine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def set_listener(self, listener: Callable[[MediaEvent], None]) -> None:
        """Install the one callback that receives every media event."""
        self._listener = listener

    # ---- legs ------------------------------------------------------------------------------

    def allocate(self, leg: str) -> tuple[str, int]:
        """Bind a socket pair for a new leg; return the local RTP address for the SDP.

        Raises :class:`MediaError` if the leg exists, the engine is closed, or no port is free.
        """
        self._check_open()
        if leg in self._legs:
            raise MediaError(f"leg {leg!r} already has media")
        pair = self._from_pool()
        if pair is None:
            pair = self._bind_random()
            if pair is not None:
                # Watched for as long as the pair is bound, in the pool too: the callbacks
                # find the leg through the pair.
                self._loop.add_reader(pair.sock.fileno(), self._on_rtp, pair)
                self._loop.add_reader(pair.rtcp_sock.fileno(), self._on_rtcp, pair)
                self._in_use.add(pair.local[1])
            else:
                pair = self._from_pool(force=True)
        if pair is None:
            raise MediaError(f"no free RTP port in {self.port_range}")
        entry = _Leg(leg, pair)
        pair.leg = entry
        self._legs[leg] = entry
        self.mixer.add_port(leg)
        self._start_clock()
        return entry.local

    def _from_pool(self, *, force: bool = False) -> _Pair | None:
        """The oldest released pair, if it has heard nothing for ``_POOL_QUIET`` seconds since
        its leg was released (``force``: the only ports left, quiet or not, as a resting port
        is taken when it is the only one free). Whatever waits in its sockets is discarded;
        a pair that still hears its old peer is closed instead."""
        pool = self._pool
        now = self._loop.time()
        while pool:
            pair = pool[0]
            if not force and (
                now - pair.released_at < _POOL_QUIET or now - pair.quiet_from < _POOL_QUIET
            ):
                return None  # the others were released later
            pool.popleft()
            if self._drain(pair) or force:
                return pair
            self._discard(pair)
        return None

    def _drain(self, pair: _Pair) -> bool:
        """Read away what waits in a pooled pair's sockets; True if nothing did."""
        poller = select.poll()  # one system call for both, where a failing read costs two
        poller.register(pair.sock, select.POLLIN)
        poller.register(pair.rtcp_sock, select.POLLIN)
        if not poller.poll(0):
            return True
        clean = True
        for sock in (pair.sock, pair.rtcp_sock):
            for _ in range(64):
                try:
                    sock.recvfrom(2048)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:  # an ICMP error of an earlier send: no packet
                    continue
                clean = False
                self.metrics.invalid += 1
        return clean

    def _to_pool(self, pair: _Pair) -> None:
        """Keep a released leg's pair bound and watched, hearing nothing but strays."""
        pair.leg = None
        pair.released_at = pair.quiet_from = self._loop.time()
        self._pool.append(pair)

    def _on_pooled(self, pair: _Pair, sock: socket.socket) -> None:
        """A packet at a pooled pair: dropped. Soon after the release it is the old peer's
        last packets in flight, and the pair must be quiet for longer; later, someone still
        streams at the port (a peer that missed its BYE): the pair is closed and its port
        rests, as a released port did before pairs were re-used."""
        try:
            sock.recvfrom(2048)
        except OSError:  # nothing there after all, or an ICMP error of an earlier send
            return
        self.metrics.invalid += 1
        now = self._loop.time()
        if now - pair.released_at < _POOL_QUIET:
            pair.quiet_from = now
            return
        with contextlib.suppress(ValueError):
            self._pool.remove(pair)
        self._discard(pair)

    def _discard(self, pair: _Pair) -> None:
        """Close a pair and let its port rest."""
        pair.leg = None
        for s in (pair.sock, pair.rtcp_sock):
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(s.fileno())
            s.close()
        self._rest(pair.local[1])

    def _bind_random(self) -> _Pair | None:
        """A socket pair on a random even port of the range: a few random tries (skipping the
        resting ports and those in use), then a scan from a random start."""
        first, last = self.port_range
        span = (last - first) // 2
        resting = self._resting_count
        in_use = self._in_use
        for _ in range(16):
            port = first + 2 * self._random.randrange(span)
            if port + 1 < last and port not in resting and port not in in_use:
                pair = _bind_pair(self.host, port)
                if pair is not None:
                    return pair
        start = self._random.randrange(span)
        used = set(in_use)
        for avoid in (set(self._resting) | used, used):
            for i in range(span):
                port = first + 2 * ((start + i) % span)
                if port + 1 < last and port not in avoid:
                    pair = _bind_pair(self.host, port)
                    if pair is not None:
                        return pair
        return None

    def set_remote(
        self,
        leg: str,
        host: str,
        port: int,
        *,
        payload_type: int | None = None,
        codec: str | None = None,
        telephone_event: int | None = None,
        rtp_timeout: float | EllipsisType | None = ...,
        send: bool = True,
        srtp_send: bytes | None = None,
        srtp_receive: bytes | None = None,
        webrtc: tuple[str, str, str | None] | None = None,
    ) -> None:
        """Set where the phone receives, from its SDP, and the negotiated codec.

        Give ``payload_type`` (0 PCMU, 8 PCMA, 9 G722), ``codec`` (``"PCMU"``, ``"PCMA"``,
        ``"G722"``, ``"opus"``), or both (a dynamic payload type); the other is derived.
        ``telephone_event`` is the RFC 4733 payload type, if negotiated. ``rtp_timeout``:
        seconds, ``None`` to disable, or omitted for the engine default. ``send``: False when
        the phone's SDP says it does not receive (``a=sendonly``/``inactive``): no RTP goes to
        it. Calling it again (a re-INVITE) resets the receive state, and the latch if the
        address changed (a session refresh with the same SDP keeps it). ``srtp_send`` and
        ``srtp_receive`` are the SRTP master keys (key ‖ salt, 30 bytes) of our stream and the
        phone's, when the SDP negotiated SRTP (the same keys again keep the SRTP state).
        ``webrtc`` makes it a browser's leg: our ``(ice-ufrag, ice-pwd)`` and the browser's
        ``a=fingerprint`` (the same values again keep the ICE and DTLS state); its keys come
        from the DTLS handshake, not from ``srtp_*``.

        Raises :class:`MediaError` for an unknown leg or a codec the engine does not have.
        """
        entry = self._leg(leg)
        if codec is None and payload_type is None:
            raise MediaError("set_remote needs a payload type or a codec")
        name = codec.upper() if codec else {0: "PCMU", 8: "PCMA", 9: "G722"}.get(payload_type or 0)
        if name not in _CODECS:
            raise MediaError(f"unsupported codec {codec or payload_type!r}")
        c = _CODECS[name]
        pt = c.payload_type if payload_type is None else payload_type
        # A dynamic payload type may carry a static codec: keep the number the phone uses.
        old = entry.codec
        entry.codec = Codec(c.name, pt, c.silence, c.clock_rate, c.wide)
        entry.pt = pt
        entry.silence = bytes((c.silence,)) * FRAME
        entry.te_pt = telephone_event
        if webrtc is not None:
            w = entry.webrtc
            if w is None or w.credentials != webrtc[:2] or w.remote_fingerprint != webrtc[2]:
                if self._dtls is None:
                    self._dtls = DtlsIdentity()
                entry.webrtc = WebRtcLeg(self._dtls, *webrtc)
                entry.srtp_in = entry.srtp_out = None
                entry.latched = entry.dest = None  # ICE and DTLS first
            entry.remote = (host, port)
            entry.rtcp_dest = None  # rtcp-mux: on the RTP port, to wherever RTP goes
        else:
            entry.webrtc = None
            if entry.srtp_keys != (srtp_send, srtp_receive):
                entry.srtp_keys = (srtp_send, srtp_receive)
                entry.srtp_out = SrtpContext(srtp_send) if srtp_send else None
                entry.srtp_in = SrtpContext(srtp_receive) if srtp_receive else None
        if webrtc is None and entry.remote != (host, port):
            entry.remote = (host, port)
            entry.latched = None
            entry.dest = entry.remote
            entry.rtcp_dest = (host, port + 1)
            entry.in_ssrc = None
        low, initial, high = self.jitter_depth
        if c.wide:
            if entry.wb is None or old is None or old.name != c.name:
                entry.wb = WidebandCodec(c.name)
            entry.jb = JitterBuffer(
                entry.wb.decode,
                frame=c.step,
                min_depth=low,
                initial_depth=initial,
                max_depth=high,
            )
        else:
            entry.wb = None
            entry.jb = JitterBuffer(
                c.decode, silence=c.silence, min_depth=low, initial_depth=initial, max_depth=high
            )
        self.mixer.set_format(leg, entry.codec.kind, wide=c.wide)
        self._after_graph_change()
        entry.stats = rtp.ReceiverStats()
        entry.dtmf.reset()
        entry.rtp_timeout = (
            self.rtp_timeout if isinstance(rtp_timeout, EllipsisType) else rtp_timeout
        )
        entry.last_activity = entry.heard_at = self._loop.time()
        entry.rx_seen = entry.packets_in
        entry.timed_out = False
        entry.sending = send
        entry.out_resync = True  # a new destination: mark the next packet
        self._update_xcode(entry)

    def set_sending(self, leg: str, send: bool) -> None:
        """Start or stop sending RTP to a leg (hold and resume by re-INVITE) without touching
        the rest of its state. Receiving is unaffected."""
        entry = self._leg(leg)
        if send and not entry.sending:
            entry.out_resync = True  # the stream resumes after a gap: new marker, ts by time
        entry.sending = send

    def release(self, leg: str) -> None:
        """Clear the leg, close its sockets and forget it (idempotent)."""
        entry = self._legs.pop(leg, None)
        if entry is None:
            return
        self.mixer.remove_port(leg)
        self._after_graph_change()
        self._close_leg(entry)
        if len(self._pool) < self._pool_max:
            self._to_pool(entry.pair)
        else:
            self._discard(entry.pair)
        if not self._legs:
            self._stop_clock()

    def _rest(self, port: int) -> None:
        """Put a released port at the end of the resting queue (the oldest leaves it)."""
        self._in_use.discard(port)
        resting, count = self._resting, self._resting_count
        if len(resting) == resting.maxlen:
            oldest = resting[0]
            if count[oldest] == 1:
                del count[oldest]
            else:
                count[oldest] -= 1
        resting.append(port)
        count[port] = count.get(port, 0) + 1

    def _close_leg(self, entry: _Leg) -> None:
        jb = entry.jb
        self._retired[0] += jb.late
        self._retired[1] += jb.lost
        self._retired[2] += jb.dropped + jb.duplicates
        self._set_relay(entry, None)
        for src in entry.relay_from:
            src.relay_to = None  # not reached while the mixer holds its peer (defensive)
        entry.relay_from.clear()
        source = entry.fanout_from
        if source is not None and entry in source.fanout:
            source.fanout.remove(entry)
        entry.fanout_from = None
        for listener in entry.fanout:
            listener.fanout_from = None
        entry.fanout.clear()
        self._dtmf_legs.discard(entry)

    def local_address(self, leg: str) -> tuple[str, int]:
        return self._leg(leg).local

    def quiet_for(self, leg: str) -> float:
        """Seconds since the leg's phone last sent RTP (or since its remote was set)."""
        return self._loop.time() - self._leg(leg).heard_at

    @property
    def dtls_fingerprint(self) -> str:
        """The ``a=fingerprint`` value of the engine's DTLS certificate (made when first
        asked: engines that never see a browser never make one)."""
        if self._dtls is None:
            self._dtls = DtlsIdentity()
        return self._dtls.fingerprint

    def secure(self, leg: str) -> bool:
        """Whether a WebRTC leg finished its DTLS handshake (it has SRTP keys)."""
        entry = self._leg(leg)
        return entry.webrtc is not None and entry.webrtc.keys is not None

    def leg_stats(self, leg: str) -> LegStats:
        e = self._leg(leg)
        return LegStats(
            local=e.local,
            remote=e.remote,
            latched=e.latched,
            codec=e.codec.name if e.codec else None,
            packets_in=e.packets_in,
            packets_out=e.packets_out,
            direct_peer=e.relay_to.id if e.relay_to else None,
            jitter_target_frames=e.jb.target,
            late=e.jb.late,
            lost=e.jb.lost,
            dropped=e.jb.dropped + e.jb.duplicates,
            fanout_source=e.fanout_from.id if e.fanout_from else None,
        )

    # ---- the media graph -------------------------------------------------------------------

    def bridge(self, leg_a: str, leg_b: str) -> None:
        """Each leg hears the other (an earlier bridge of either is dissolved)."""
        self._leg(leg_a), self._leg(leg_b)
        self.mixer.bridge(leg_a, leg_b)
        self._after_graph_change()

    def unbridge(self, leg: str) -> None:
        self._leg(leg)
        self.mixer.unbridge(leg)
        self._after_graph_change()

    def create_meeting(self, meeting: str) -> None:
        self._check_open()
        self.mixer.create_meeting(meeting)

    def join(self, meeting: str, member: Member) -> None:
        """Add a leg to a meeting, or change its mode."""
        self._leg(member.leg)
        self.mixer.join(meeting, member)
        self._after_graph_change()

    def leave(self, meeting: str, leg: str) -> None:
        self.mixer.leave(meeting, leg)
        self._after_graph_change()

    def destroy_meeting(self, meeting: str) -> None:
        self.mixer.destroy_meeting(meeting)
        self._after_graph_change()

    def clear(self, leg: str) -> None:
        """Back to connected-idle (idempotent; unknown legs are ignored). Pending RFC 4733
        output is dropped too."""
        entry = self._legs.get(leg)
        if entry is not None:
            entry.dtmf_out.clear()
            entry.dtmf_ts = None
        self.mixer.clear(leg)
        self._after_graph_change()

    # ---- playback, recording, DTMF -------------------------------------------------------

    async def play(self, target: Target, media: Tone | Prompt, *, loop: bool = False) -> str:
        """Start a tone or a WAV prompt on a leg or a meeting; return the playback id.

        A :class:`PlaybackFinished` event follows. Raises :class:`MediaError` for an unknown
        tone, an unreadable or unsupported WAV, or an unknown target.
        """
        self._check_open()
        self._owner_exists(target)
        if isinstance(media, Tone):
            try:
                pcm = tone_spec(media.name).render(media.duration, loop=loop)
            except KeyError:
                raise MediaError(f"unknown tone {media.name!r}") from None
        else:
            pcm = await self._load_prompt(media.path)
        pid = self.mixer.play(target, pcm, loop=loop)  # the target may have gone meanwhile
        self._after_graph_change()
        return pid

    async def _load_prompt(self, path: str) -> npt.NDArray[np.int16]:
        try:
            st = os.stat(path)
            key = (path, st.st_mtime_ns, st.st_size)
            cached = self._prompts.get(key)
            if cached is not None:
                return cached
            pcm = await asyncio.to_thread(read_wav, path)
        except (OSError, WavError) as exc:
            raise MediaError(f"cannot play {path!r}: {exc}") from exc
        pcm.flags.writeable = False
        if len(self._prompts) >= 64:
            self._prompts.pop(next(iter(self._prompts)))  # the oldest
        self._prompts[key] = pcm
        return pcm

    def stop_play(self, playback: str) -> None:
        self.mixer.stop_play(playback)
        self._after_graph_change()

    def record(self, target: Target, path: str) -> str:
        """Start recording a leg (what it says and hears) or a meeting (the full mix) to a WAV
        file (8 kHz mono 16-bit); return the recording id."""
        self._check_open()
        self._owner_exists(target)
        try:
            sink = WavWriter(path)
        except OSError as exc:
            raise MediaError(f"cannot record to {path!r}: {exc}") from exc
        rid = self.mixer.record(target, sink)
        self._after_graph_change()
        return rid

    def stop_record(self, recording: str) -> None:
        self.mixer.stop_record(recording)
        self._after_graph_change()

    def send_dtmf(self, leg: str, digits: str, *, duration: float = 0.1) -> None:
        """Queue RFC 4733 key presses (one per character) on a leg's outgoing stream.

        Raises :class:`MediaError` if the leg has not negotiated telephone-events, and
        ``ValueError`` for a character that is not a DTMF digit.
        """
        entry = self._leg(leg)
        if entry.te_pt is None:
            raise MediaError(f"leg {leg!r} has no telephone-event payload type")
        entry.dtmf_out.extend(DtmfSender(d, duration=duration) for d in digits)
        self._dtmf_legs.add(entry)

    # ---- shutdown --------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop the clock, finish playbacks and recordings, close every socket. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop_clock()
        self.mixer.close()
        self._emit_mixer_events()
        for entry in self._legs.values():
            self._close_leg(entry)
            self._discard(entry.pair)
        self._legs.clear()
        while self._pool:
            self._discard(self._pool.popleft())
        self._in_use.clear()

    # ---- receive path ----------------------------------------------------------------------

    def _on_rtp(self, pair: _Pair) -> None:
        """Readiness callback: read one datagram from the leg's RTP socket.

        One ``recvfrom`` per readiness, not a drain loop: at 50 packets a second per socket
        there is almost never a second datagram waiting, and the ``recvfrom`` that would find
        none (and raise) cost as much as relaying the packet. The selector is level-triggered,
        so a backlog is still read, one callback per datagram.

        The common case — the latched phone's audio relayed to a direct peer — is handled
        inline here (one unpack, one pack, one sendto); anything else goes through :meth:`_rx`,
        which also re-establishes the conditions for the fast path.
        """
        leg = pair.leg
        if leg is None:
            self._on_pooled(pair, pair.sock)
            return
        try:
            data, addr = leg.sock.recvfrom(2048)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.metrics.invalid += 1  # e.g. ICMP port unreachable surfacing
            return
        if leg.webrtc is not None:
            if data and data[0] < 128:  # STUN or DTLS (RFC 7983), not RTP
                self._rx_webrtc(leg, leg.webrtc, data, addr)
                return
            if leg.srtp_in is None:
                self.metrics.invalid += 1  # RTP before the DTLS handshake: nobody's
                return
        dst = leg.relay_to
        if leg.srtp_in is not None:
            try:
                if len(data) > 1 and 200 <= data[1] <= 204:  # SRTCP on the RTP port
                    data = leg.srtp_in.unprotect_rtcp(data)
                else:
                    data = leg.srtp_in.unprotect(data)
            except (SrtpError, IndexError, ValueError):
                self.metrics.invalid += 1  # not from whoever holds the key
                return
            dst = None  # no fast path: the packet is re-encrypted for the peer
        if dst is not None and dst.srtp_out is None and len(data) > 12:
            b0, b1, seq, ts, ssrc = _HDR.unpack_from(data)
            if (
                b0 == 0x80  # v2, no padding, extension or CSRC
                and b1 & 0x7F == leg.pt
                and ssrc == dst.relay_src_ssrc
                and not dst.out_resync
                and addr == leg.latched
                and dst.dest is not None
                and dst.sending
            ):
                oseq = (seq + dst.seq_off) & 0xFFFF
                ots = (ts + dst.ts_off) & 0xFFFFFFFF
                if (oseq - dst.out_seq) & 0xFFFF < 0x8000:
                    dst.out_seq = oseq
                    dst.out_ts = ots
                dst.last_out_time = leg.heard_at = self._loop.time()
                payload = data[12:]
                if leg.relay_xcode is not None:
                    payload = payload.translate(leg.relay_xcode)
                leg.packets_in += 1
                metrics = self.metrics
                metrics.packets_in += 1
                try:
                    dst.sock.sendto(
                        _HDR.pack(0x80, (b1 & 0x80) | dst.pt, oseq, ots, dst.out_ssrc) + payload,
                        dst.dest,
                    )
                except OSError:
                    metrics.send_errors += 1
                else:
                    dst.packets_out += 1
                    metrics.packets_out += 1
                    metrics.relayed += 1
                return
        self._rx(leg, data, addr)

    def _rx(self, leg: _Leg, data: bytes, addr: tuple[str, int]) -> None:
        metrics = self.metrics
        metrics.packets_in += 1
        if len(data) < 12:
            metrics.invalid += 1
            return
        b0, b1, seq, ts, ssrc = _HDR.unpack_from(data)
        if b0 & 0xC0 != 0x80:
            metrics.invalid += 1
            return
        pt = b1 & 0x7F
        if 72 <= pt <= 76:  # RTCP on the RTP port (rtcp-mux, RFC 5761)
            if self._rtcp_source_ok(leg, addr):
                leg.packets_in += 1
                self._rx_rtcp(leg, data, addr)
            else:
                metrics.invalid += 1
            return
        codec = leg.codec
        if codec is None:
            metrics.invalid += 1  # no SDP yet: nothing may latch
            return
        now = self._loop.time()
        if addr != leg.latched and (
            (pt != codec.payload_type and pt != leg.te_pt)  # only negotiated payloads latch
            or not self._may_latch(leg, addr, ssrc, now)
        ):
            metrics.invalid += 1  # not the source we latched to
            return
        # From the latched source, anything is life (comfort noise too), though only the
        # negotiated payloads are used below.
        leg.packets_in += 1
        leg.heard_at = now
        if ssrc != leg.in_ssrc:
            leg.in_ssrc = ssrc
            leg.jb.reset()
            leg.dtmf.reset()
        if b0 & 0x3F:  # padding, extension or CSRCs: take the slow, careful path
            try:
                payload = rtp.parse(data).payload
            except rtp.RtpError:
                metrics.invalid += 1
                return
        else:
            payload = data[12:]
        peer = leg.relay_to
        if pt == codec.payload_type:
            if peer is not None:
                self._relay(
                    leg,
                    peer,
                    b1 & 0x80,
                    peer.pt,
                    seq,
                    ts,
                    ssrc,
                    payload if leg.relay_xcode is None else payload.translate(leg.relay_xcode),
                )
            else:
                now = self._loop.time()
                arrival = int(now * codec.clock_rate)
                leg.stats.update(ssrc, seq, ts, arrival, len(payload))
                if leg.fanout_from is None:  # a fanned-out listener is heard by nobody
                    leg.jb.push(ts, payload, arrival)
                leg.recent.append((now, b1 & 0x80, seq, ts, ssrc, payload))
                if leg.fanout:
                    self._fan_out(leg, b1 & 0x80, seq, ts, ssrc, payload, now)
        elif pt == leg.te_pt:
            digit = leg.dtmf.feed(ssrc, ts, bool(b1 & 0x80), payload)
            if peer is not None and peer.te_pt is not None:
                self._relay(leg, peer, b1 & 0x80, peer.te_pt, seq, ts, ssrc, payload)
            elif leg.fanout:
                self._not_forwarded(leg)  # a talker's key presses are for Baton, not the group
            elif digit is not None and peer is None:
                self._regenerate_dtmf(leg, digit)
            if digit is not None:
                metrics.dtmf_in += 1
                self._emit(DtmfReceived(leg.id, digit))
        elif leg.fanout:  # comfort noise or a codec we did not negotiate: ignored
            self._not_forwarded(leg)

    def _regenerate_dtmf(self, leg: _Leg, digit: str) -> None:
        """A key press on a mixed bridge (codecs differ: a browser's Opus and a desk phone's
        G.711) reaches the other party as its own RFC 4733 event, as it would on a relayed
        call; presses in a meeting are for Baton alone (a PTT group's ``*``/``#``)."""
        other = self.mixer.bridged_to(leg.id)
        target = self._legs.get(other) if other is not None else None
        if target is not None and target.te_pt is not None:
            self.send_dtmf(target.id, digit)

    def _rx_webrtc(self, leg: _Leg, w: WebRtcLeg, data: bytes, addr: tuple[str, int]) -> None:
        """A browser leg's STUN check or DTLS record (see :mod:`.webrtc`)."""
        out: list[bytes] = []
        if is_stun(data):
            reply = w.on_stun(data, addr)
            if reply is None:
                self.metrics.invalid += 1
                return
            out.append(reply)
            if w.keys is not None and w.selected is not None and leg.latched != w.selected:
                leg.latched = leg.dest = w.selected  # the browser nominated another pair
        elif is_dtls(data) and w.selected is not None and addr[0] == w.selected[0]:
            had_keys = w.keys is not None
            try:
                out = w.on_dtls(data)
            except WebRtcError as exc:
                log.warning("leg %s: %s", leg.id, exc)
                self.metrics.invalid += 1
                return
            if w.keys is not None and not had_keys:
                leg.srtp_out = LibSrtp(w.keys.send, outbound=True)
                leg.srtp_in = LibSrtp(w.keys.receive, outbound=False)
                leg.latched = leg.dest = addr
                leg.heard_at = self._loop.time()
                leg.out_resync = True
                log.info("leg %s: DTLS-SRTP up with %s", leg.id, addr)
        else:
            self.metrics.invalid += 1
            return
        leg.packets_in += 1  # life, for the inactivity timeout (consent checks)
        for datagram in out:
            try:
                leg.sock.sendto(datagram, addr)
            except OSError:
                self.metrics.send_errors += 1

    def _may_latch(self, leg: _Leg, addr: tuple[str, int], ssrc: int, now: float) -> bool:
        """Whether a valid RTP packet from ``addr`` (not the latched source) may latch the leg
        — the rule of the module docstring — and if so, latch it there."""
        if not (
            leg.latched is None  # the first valid packet
            or addr == leg.remote  # the signalled address wins
            or (ssrc == leg.in_ssrc and now - leg.heard_at >= self.relatch_after)
        ):
            return False
        if leg.latched is not None:
            log.info("leg %s: RTP re-latched from %s to %s", leg.id, leg.latched, addr)
        leg.latched = addr  # symmetric RTP: answer where the phone really is
        leg.dest = addr
        remote = leg.remote
        if remote is not None:  # RTCP to the SDP port + 1, on the host the phone sends from
            leg.rtcp_dest = (addr[0], remote[1] + 1)
        return True

    @staticmethod
    def _rtcp_source_ok(leg: _Leg, addr: tuple[str, int]) -> bool:
        """RTCP is taken only from the latched or the signalled host."""
        host = addr[0]
        latched, remote = leg.latched, leg.remote
        return (latched is not None and host == latched[0]) or (
            remote is not None and host == remote[0]
        )

    def _relay(
        self,
        src: _Leg,
        dst: _Leg,
        marker: int,
        pt: int,
        seq: int,
        ts: int,
        ssrc: int,
        payload: bytes,
    ) -> None:
        dest = dst.dest
        if dest is None or pt < 0 or not dst.sending:
            return
        now = self._loop.time()
        if dst.out_resync or ssrc != dst.relay_src_ssrc:
            # A new source for this outgoing stream: continue our seq/ts where they were.
            step = dst.step
            elapsed = (
                max(step, round((now - dst.last_out_time) * dst.rate))
                if dst.last_out_time
                else step
            )
            dst.seq_off = (dst.out_seq + 1 - seq) & 0xFFFF
            dst.ts_off = (dst.out_ts + elapsed - ts) & 0xFFFFFFFF
            dst.relay_src_ssrc = ssrc
            dst.out_resync = False
            marker = 0x80
        dst.last_out_time = now
        oseq = (seq + dst.seq_off) & 0xFFFF
        ots = (ts + dst.ts_off) & 0xFFFFFFFF
        if (oseq - dst.out_seq) & 0xFFFF < 0x8000:  # keep the newest, not a reordered one
            dst.out_seq = oseq
            dst.out_ts = ots
        try:
            packet = _HDR.pack(0x80, marker | pt, oseq, ots, dst.out_ssrc) + payload
            dst.sock.sendto(packet if dst.srtp_out is None else dst.srtp_out.protect(packet), dest)
        except OSError:
            self.metrics.send_errors += 1
            return
        dst.packets_out += 1
        self.metrics.packets_out += 1
        self.metrics.relayed += 1

    def _fan_out(
        self, src: _Leg, marker: int, seq: int, ts: int, ssrc: int, payload: bytes, now: float
    ) -> None:
        """Fan-out: one of the speaker's audio packets to each of its listeners, as a relay (the
        per-listener loop of :meth:`_relay`, inlined: it runs for every listener of every
        talker)."""
        metrics = self.metrics
        translated: bytes | None = None
        pack = _HDR.pack
        for dst in src.fanout:
            dest = dst.dest
            if dest is None or not dst.sending:
                continue
            data = payload
            if dst.codec is not None and src.codec is not None and dst.codec.name != src.codec.name:
                if translated is None:
                    table = g711.ULAW_TO_ALAW if src.codec.name == "PCMU" else g711.ALAW_TO_ULAW
                    translated = payload.translate(table)
                data = translated
            if dst.out_resync or ssrc != dst.relay_src_ssrc:
                self._relay(src, dst, marker, dst.pt, seq, ts, ssrc, data)  # a new source
                continue
            oseq = (seq + dst.seq_off) & 0xFFFF
            ots = (ts + dst.ts_off) & 0xFFFFFFFF
            if (oseq - dst.out_seq) & 0xFFFF < 0x8000:  # keep the newest, not a reordered one
                dst.out_seq = oseq
                dst.out_ts = ots
            dst.last_out_time = now
            try:
                packet = pack(0x80, marker | dst.pt, oseq, ots, dst.out_ssrc) + data
                if dst.srtp_out is not None:
                    packet = dst.srtp_out.protect(packet)
                dst.sock.sendto(packet, dest)
            except OSError:
                metrics.send_errors += 1
                continue
            dst.packets_out += 1
            metrics.packets_out += 1
            metrics.relayed += 1

    def _relay_to_listener(
        self, src: _Leg, dst: _Leg, marker: int, seq: int, ts: int, ssrc: int, payload: bytes
    ) -> None:
        """Fan-out: one of the speaker's audio packets to one listener, as a relay."""
        if src.codec is not None and dst.codec is not None and src.codec.name != dst.codec.name:
            table = g711.ULAW_TO_ALAW if src.codec.name == "PCMU" else g711.ALAW_TO_ULAW
            payload = payload.translate(table)
        self._relay(src, dst, marker, dst.pt, seq, ts, ssrc, payload)

    @staticmethod
    def _not_forwarded(src: _Leg) -> None:
        """A speaker's packet its fanned-out listeners do not get: it took a sequence number in
        the speaker's stream, so theirs closes up behind it (a gap would read as a loss, and the
        listener's phone would conceal a frame that was never missing)."""
        for dst in src.fanout:
            dst.seq_off = (dst.seq_off - 1) & 0xFFFF

    def _on_rtcp(self, pair: _Pair) -> None:
        leg = pair.leg
        if leg is None:
            self._on_pooled(pair, pair.rtcp_sock)
            return
        try:
            data, addr = leg.rtcp_sock.recvfrom(2048)
        except OSError:  # including BlockingIOError: nothing there after all
            return
        if not self._rtcp_source_ok(leg, addr):
            self.metrics.invalid += 1  # a stranger's RTCP: no sign of life, no new destination
            return
        if leg.srtp_in is not None:
            try:
                data = leg.srtp_in.unprotect_rtcp(data)
            except SrtpError:
                self.metrics.invalid += 1
                return
        leg.packets_in += 1  # life, for the inactivity timeout
        self._rx_rtcp(leg, data, addr)

    def _rx_rtcp(self, leg: _Leg, data: bytes, addr: tuple[str, int]) -> None:
        try:
            parts = rtp.parse_rtcp(data)
        except rtp.RtcpError:
            self.metrics.invalid += 1
            return
        for part in parts:
            if isinstance(part, rtp.SenderReport) and part.ssrc == leg.stats.ssrc:
                leg.stats.note_sender_report(part, time.time())

    # ---- the clock -------------------------------------------------------------------------

    def _start_clock(self) -> None:
        if self._clock is None and not self._closed:
            self._t0 = self._loop.time()
            self._tick_no = 0
            self._schedule()

    def _stop_clock(self) -> None:
        if self._clock is not None:
            self._clock.cancel()
            self._clock = None

    def _schedule(self) -> None:
        self._tick_no += 1
        self._clock = self._loop.call_at(self._t0 + self._tick_no * TICK, self._on_tick)

    def _on_tick(self) -> None:
        started = time.perf_counter()
        now = self._loop.time()
        late = now - (self._t0 + self._tick_no * TICK)
        metrics = self.metrics
        metrics.ticks += 1
        if late > self.late_threshold:
            metrics.late_ticks += 1
        if late > self.max_behind:
            missed = int(late / TICK)
            self._tick_no += missed
            metrics.skipped_ticks += missed
        try:
            self._tick(now)
        except Exception:  # one bad tick must not stop the clock for every call
            log.exception("media tick failed")
        finally:
            metrics.tick_seconds += time.perf_counter() - started
            if not self._closed and self._legs:
                self._schedule()
            else:
                self._clock = None

    def _tick(self, now: float) -> None:
        legs = self._legs
        mixer = self.mixer
        mixed = mixer.mixed_legs(idle=False)
        # Before the tick: a playback's end may make a leg idle.
        idle = [legs[leg_id] for leg_id in mixer.idle_legs()]
        inputs = {}
        entries = []
        wide = mixer.wide
        rate = 16000 if wide else 8000
        size = WIDE_FRAME if wide else FRAME
        for leg_id in mixed:
            entry = legs[leg_id]
            entries.append(entry)
            if entry.wb is not None:
                entry.wb.rate = rate  # decoded straight to the mix's rate (.wideband)
            # The clock of the arrivals pushed by _rx: a timed playout start.
            frame = entry.jb.pop(int(now * entry.rate))
            if frame is not None:
                if len(frame) != size:
                    frame = self._fit(entry, frame, wide)
                inputs[leg_id] = frame
        out = mixer.tick(inputs, idle=False)
        self._emit_mixer_events()
        self._after_graph_change()
        if entries:
            if out.wide or any(e.wb is not None for e in entries):
                self._send_wide(entries, out.pcm, out.active, now, wide=out.wide)
            else:
                self._send_mixed(entries, out.pcm, out.active, now)
        if idle:
            self._send_idle(idle, now, wide=wide)
        if self._dtmf_legs:
            self._send_dtmf(now)
        if self._tick_no % _CHECK_EVERY == 0:
            self._housekeeping(now)

    @staticmethod
    def _fit(entry: _Leg, frame: np.ndarray, wide: bool) -> np.ndarray:
        """A frame at the other rate than the tick's: a narrowband leg in a 16 kHz mix (up,
        with the leg's filter), or a wideband leg's frame from before the mix changed rate
        (the jitter buffer's concealment repeats the last one): once, crudely."""
        if wide and entry.wb is None:
            if entry.wb_up is None:
                entry.wb_up = Resampler(up=2)
            return entry.wb_up(frame)
        return np.repeat(frame, 2) if wide else frame[::2]

    def _send_mixed(
        self, entries: list[_Leg], pcm: np.ndarray, active: np.ndarray, now: float
    ) -> None:
        codes: dict[str, np.ndarray] = {}
        if active.any():
            u16 = pcm.view(np.uint16)
            for entry in entries:
                if entry.codec is not None and entry.codec.name not in codes:
                    codes[entry.codec.name] = entry.codec.encode[u16]
        flags = active.tolist()
        for i, entry in enumerate(entries):
            dest = entry.dest
            codec = entry.codec
            if dest is None or codec is None or not entry.sending:
                continue
            payload = codes[codec.name][i].tobytes() if flags[i] else entry.silence
            self._send_frame(entry, codec, dest, payload, now)

    def _send_wide(
        self, entries: list[_Leg], pcm: np.ndarray, active: np.ndarray, now: float, *, wide: bool
    ) -> None:
        """:meth:`_send_mixed` for a tick with wideband legs: each wideband leg's row is
        encoded on its own at the tick's rate (a wideband encoder has state, so it is fed
        silence too); in a 16 kHz tick a narrowband leg's row is converted down first."""
        flags = active.tolist()
        silence = _WIDE_SILENCE if wide else _NARROW_SILENCE
        for i, entry in enumerate(entries):
            dest = entry.dest
            codec = entry.codec
            if dest is None or codec is None or not entry.sending:
                continue
            row = pcm[i]
            if entry.wb is not None:
                payload = entry.wb.encode(row if flags[i] else silence)
            elif not flags[i]:
                payload = entry.silence
            else:
                if wide:
                    if entry.wb_down is None:
                        entry.wb_down = Resampler(down=2)
                    row = entry.wb_down(row)
                payload = codec.encode[row.view(np.uint16)].tobytes()
            self._send_frame(entry, codec, dest, payload, now)

    def _send_idle(self, entries: list[_Leg], now: float, *, wide: bool) -> None:
        """Connected-idle legs hear silence (a leg still ringing, one between two bridges):
        what a mix row of zeros would send them, without the mix. Their jitter buffers are
        played out as in the mix (nobody hears them), so one that joins a room later starts
        from now, not from a backlog; a wideband leg's encoder (it has state) is fed silence
        at the tick's rate."""
        rate = 16000 if wide else 8000
        for entry in entries:
            wb = entry.wb
            if wb is not None:
                wb.rate = rate
            entry.jb.pop(int(now * entry.rate))
            dest = entry.dest
            codec = entry.codec
            if dest is None or codec is None or not entry.sending:
                continue
            if wb is not None:
                payload = wb.encode(_WIDE_SILENCE if wide else _NARROW_SILENCE)
            else:
                payload = entry.silence
            self._send_frame(entry, codec, dest, payload, now)

    def _send_frame(
        self, entry: _Leg, codec: Codec, dest: tuple[str, int], payload: bytes, now: float
    ) -> None:
        """Send one mixed 20 ms frame to a leg: the RTP timestamp moves on a frame (or, after
        a resync, by the time that really passed, with the marker bit), then SRTP if keyed."""
        step = codec.step
        marker = 0
        if entry.out_resync:
            elapsed = (
                round((now - entry.last_out_time) * codec.clock_rate)
                if entry.last_out_time
                else step
            )
            entry.out_ts = (entry.out_ts + max(step, elapsed)) & 0xFFFFFFFF
            entry.out_resync = False
            entry.relay_src_ssrc = None
            marker = 0x80
        else:
            entry.out_ts = (entry.out_ts + step) & 0xFFFFFFFF
        entry.out_seq = seq = (entry.out_seq + 1) & 0xFFFF
        entry.last_out_time = now
        metrics = self.metrics
        try:
            packet = (
                _HDR.pack(0x80, marker | codec.payload_type, seq, entry.out_ts, entry.out_ssrc)
                + payload
            )
            if entry.srtp_out is not None:
                packet = entry.srtp_out.protect(packet)
            entry.sock.sendto(packet, dest)
        except OSError:
            metrics.send_errors += 1
            return
        entry.packets_out += 1
        metrics.packets_out += 1

    def _send_dtmf(self, now: float) -> None:
        for entry in list(self._dtmf_legs):
            if not entry.dtmf_out or entry.dest is None or entry.te_pt is None or not entry.sending:
                if not entry.dtmf_out:
                    self._dtmf_legs.discard(entry)
                continue
            sender = entry.dtmf_out[0]
            if entry.dtmf_ts is None:
                entry.dtmf_ts = entry.out_ts
            for marker, payload in sender.next_packets():
                # Our own packet in the leg's stream: it takes a sequence number, so a relayed
                # stream behind it shifts by one.
                entry.out_seq = seq = (entry.out_seq + 1) & 0xFFFF
                entry.seq_off = (entry.seq_off + 1) & 0xFFFF
                pkt = (
                    _HDR.pack(
                        0x80,
                        (0x80 if marker else 0) | entry.te_pt,
                        seq,
                        entry.dtmf_ts,
                        entry.out_ssrc,
                    )
                    + payload
                )
                try:
                    if entry.srtp_out is not None:
                        pkt = entry.srtp_out.protect(pkt)
                    entry.sock.sendto(pkt, entry.dest)
                    entry.packets_out += 1
                    self.metrics.packets_out += 1
                except OSError:
                    self.metrics.send_errors += 1
            if sender.done:
                entry.dtmf_out.popleft()
                entry.dtmf_ts = None

    def _housekeeping(self, now: float) -> None:
        metrics = self.metrics
        late, lost, dropped = self._retired
        for entry in list(self._legs.values()):
            jb = entry.jb
            late += jb.late
            lost += jb.lost
            dropped += jb.dropped + jb.duplicates
            if entry.packets_in != entry.rx_seen:
                entry.rx_seen = entry.packets_in
                entry.last_activity = now
            elif (
                entry.rtp_timeout is not None
                and not entry.timed_out
                and entry.remote is not None
                and now - entry.last_activity >= entry.rtp_timeout
            ):
                entry.timed_out = True
                metrics.timeouts += 1
                self._emit(MediaTimeout(entry.id, now - entry.last_activity))
            if (self._tick_no + hash(entry.id)) % self._rtcp_every < _CHECK_EVERY:
                self._send_rtcp(entry)
        # Jitter-buffer counters live in each buffer; the engine-wide figure is their sum (with
        # released legs' final counts), refreshed here every 0.5 s.
        metrics.late_frames = late
        metrics.lost_frames = lost
        metrics.dropped_frames = dropped

    def _send_rtcp(self, entry: _Leg) -> None:
        dest = entry.rtcp_dest
        if entry.webrtc is not None:
            dest = entry.dest if entry.srtp_out is not None else None  # rtcp-mux
        if dest is None:
            return
        blocks = [entry.stats.report_block(time.time())] if entry.stats.ssrc is not None else []
        if entry.packets_out:
            pkt = rtp.build_sr(
                entry.out_ssrc,
                ntp=rtp.ntp_timestamp(time.time()),
                rtp_timestamp=entry.out_ts,
                packet_count=entry.packets_out,
                octet_count=entry.packets_out * FRAME,
                reports=blocks,
            )
        else:
            pkt = rtp.build_rr(entry.out_ssrc, blocks)
        with contextlib.suppress(OSError):
            if entry.srtp_out is not None:
                pkt = entry.srtp_out.protect_rtcp(pkt)
            (entry.sock if entry.webrtc is not None else entry.rtcp_sock).sendto(pkt, dest)

    # ---- plumbing --------------------------------------------------------------------------

    def _after_graph_change(self) -> None:
        """Apply the mixer's direct-relay and fan-out changes to the legs, and emit its
        events."""
        for leg_id, peer_id in self.mixer.take_direct_changes().items():
            entry = self._legs.get(leg_id)
            if entry is None:
                continue
            self._set_relay(entry, self._legs.get(peer_id) if peer_id is not None else None)
            entry.out_resync = True  # our outgoing stream changes source
            if peer_id is None:
                entry.jb.reset()  # we start buffering this leg's audio afresh
            self._update_xcode(entry)
        if self.mixer.fanout:
            self._apply_fanout(self.mixer.take_fanout_changes())
        self._emit_mixer_events()

    def _apply_fanout(self, changes: dict[str, str | None]) -> None:
        now = self._loop.time()
        for leg_id, source_id in changes.items():
            entry = self._legs.get(leg_id)
            if entry is None:
                continue
            old = entry.fanout_from
            if old is not None and entry in old.fanout:
                old.fanout.remove(entry)
            source = self._legs.get(source_id) if source_id is not None else None
            entry.fanout_from = source
            entry.out_resync = True  # our outgoing stream changes source
            if source is None:
                entry.jb.reset()  # heard again through the mix: buffer its audio afresh
                continue
            source.fanout.append(entry)
            # What the speaker said just now and the mix has not played yet: at once.
            for arrived, marker, seq, ts, ssrc, payload in list(source.recent):
                if now - arrived <= _FLUSH and ssrc == source.in_ssrc and source.jb.unplayed(ts):
                    self._relay_to_listener(source, entry, marker, seq, ts, ssrc, payload)

    @staticmethod
    def _set_relay(entry: _Leg, peer: _Leg | None) -> None:
        """Point the leg's relay at ``peer``, keeping the peer's reverse index."""
        old = entry.relay_to
        if old is peer:
            return
        if old is not None and entry in old.relay_from:
            old.relay_from.remove(entry)
        entry.relay_to = peer
        if peer is not None:
            peer.relay_from.append(entry)

    def _update_xcode(self, entry: _Leg) -> None:
        """The PCMU/PCMA translation of the relays into and out of this leg (its codec, or
        its peer, changed)."""
        for src in (entry, *entry.relay_from):
            dst = src.relay_to
            if (
                src.codec is None
                or dst is None
                or dst.codec is None
                or src.codec.name == dst.codec.name
            ):
                src.relay_xcode = None
            else:
                src.relay_xcode = (
                    g711.ULAW_TO_ALAW if src.codec.name == "PCMU" else g711.ALAW_TO_ULAW
                )

    def _emit_mixer_events(self) -> None:
        for event in self.mixer.take_events():
            self._emit(event)

    def _emit(self, event: MediaEvent) -> None:
        if self._listener is None:
            return
        try:
            self._listener(event)
        except Exception:  # the listener's bug must not break the media path
            log.exception("media event listener failed on %r", event)

    def _leg(self, leg: str) -> _Leg:
        self._check_open()
        entry = self._legs.get(leg)
        if entry is None:
            raise MediaError(f"no media for leg {leg!r}")
        return entry

    def _owner_exists(self, target: Target) -> None:
        if target.leg is not None:
            self._leg(target.leg)
        elif target.meeting is not None:
            self.mixer.meeting_members(target.meeting)  # raises MediaError if unknown

    def _check_open(self) -> None:
        if self._closed:
            raise MediaError("the media engine is closed")
