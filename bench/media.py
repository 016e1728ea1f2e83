"""Benchmark of the RTP media engine (issue "RTP media engine", section Benchmark).

Measures, in one run, with the engine under test alone on one core:

  cpu_per_packet_ratio   CPU per relayed packet for N two-party calls through Baton's engine,
                         divided by the same for rtpengine (userspace) on the same traffic;
                         also ``baton_us_per_packet`` and ``rtpengine_us_per_packet``.
  max_calls_one_core     the most concurrent two-party calls the engine carries on one core with
                         under 1 % late or dropped frames (see ``LATE_MS`` and :func:`judge`).
  meeting100_cpu_pct     CPU (percent of one core) of one 100-member meeting, every member
                         sending.
  added_latency_p99_ms   delay the engine adds between a packet in and the corresponding packet
                         out, p50 and p99: relayed (the headline, what a two-party call uses),
                         and mixed (a 100-member meeting; and two-party calls forced onto the
                         mixing path by recording one leg).

Processes (so that the engine's CPU is its own):

* the orchestrator (this script): starts the others, drives them over pipes (JSON lines);
* the engine under test: rtpengine (a subprocess, run as docs/benchmarks.md §Peers says), or Baton's
  ``MediaEngine`` in a child process (``--child engine``), pinned with ``sched_setaffinity``
  to one core;
* the load generator (``--child gen``), pinned to another core: it sends one 20 ms PCMU packet
  per stream per period, streams spread over the period in 1 ms slots, with ``sendmmsg`` and
  receives with ``recvmmsg`` (through ctypes) so that it stays cheap at 200,000 packets/s.
  It reads the engine's CPU time from ``/proc/<pid>/stat`` (utime + stime, all threads) at the
  start and end of the measuring window, which is defined in send periods.

Both engines and the generator run SCHED_FIFO at a low priority where allowed (see
:func:`place`): the build machine is shared, and at normal priority the other work on it adds
tens of milliseconds of scheduling delay that is not the engine's.

Relayed packets carry, after the RTP header, the stream id, the period number, the send time
(CLOCK_REALTIME ns) and a per-run tag, so every packet's transit and loss is known; arrival
times are the kernel's receive timestamps (SO_TIMESTAMPNS), which are exact however late the
generator reads its sockets. Mixed audio cannot carry a stamp, so the streams send a quiet tone
with one loud "marker" frame now and then; a receiver's first loud frame after a marker's send
time gives that marker's delay (markers one stream hears are at least 200 ms apart).

``python bench/media.py`` (full, about 2½ minutes) or ``--quick`` (about 30 s). The last line
of output is one JSON object. Needs rtpengine (Debian ``rtpengine-daemon``; see
``scripts/system-packages.txt``). Binds 127.0.0.1 only; every child is stopped by its pid (and
gets SIGTERM if this process dies).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from harness.g711 import FRAME, ULAW_DECODE, tone_frame
from harness.net import (
    HOST,
    MsgVector,
    discard_pending,
    open_rtp_pairs,
    recvmmsg,
    sendmmsg,
    sockaddr_in,
)
from harness.ng import NgClient
from harness.procs import (
    Child,
    commands,
    cpu_seconds,
    die_with_parent,
    pick_cores,
    place,
    raise_fd_limit,
    reply,
    serve_commands,
)
from harness.stats import percentile, rnd

# ---- constants -------------------------------------------------------------------------------

PERIOD: Final = 0.020  # one G.711 frame per stream per period
SLOTS: Final = 20  # the period is cut into 1 ms send slots, streams spread over them
PACKET: Final = 12 + FRAME  # RTP header + 20 ms of PCMU
LATE_MS: Final = 20.0  # a relayed frame is late when its transit exceeds one frame period
LOSS_LIMIT: Final = 0.01  # max_calls_one_core: under 1 % late or dropped frames
LOUD: Final = 16000  # a decoded sample above this is a marker (the quiet tone sums below 10,000)
TONE_AMP: Final = 100  # the quiet tone of a mixed stream, lowered for big meetings (sum < 10,000)
MARKER_AMP: Final = 24000

RTPENGINE_NG_PORT: Final = 22222
RTPENGINE_PORTS: Final = (30000, 30999)  # docs/benchmarks.md §Peers: room for 250 calls
BATON_PORTS: Final = (20000, 29990)  # below the kernel's ephemeral range; 2,497 calls
GEN_PORT_BASE: Final = 18000  # the generator binds RTP/RTCP pairs from here up

# An RTP packet as the generator writes it: the header, then (relay mode) the stamp.
PKT_DTYPE: Final = np.dtype(
    [
        ("b0", "u1"),
        ("b1", "u1"),
        ("seq", ">u2"),
        ("ts", ">u4"),
        ("ssrc", ">u4"),
        ("sid", "<u4"),
        ("n", "<u4"),
        ("t_ns", "<u8"),
        ("run", "<u4"),
        ("rest", "V140"),
    ]
)
assert PKT_DTYPE.itemsize == PACKET


MARKER_FRAME: Final = tone_frame(1000.0, MARKER_AMP)
SILENT_FRAME: Final = np.full(FRAME, 0xFF, dtype=np.uint8)


# ---- SDP for rtpengine's offer/answer ------------------------------------------------------------


def sdp(port: int, session: int) -> str:
    """A minimal PCMU offer/answer for a phone at 127.0.0.1:``port``."""
    return (
        f"v=0\r\no=- {session} 1 IN IP4 {HOST}\r\ns=-\r\nc=IN IP4 {HOST}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
    )


def sdp_port(body: bytes) -> int:
    m = re.search(rb"m=audio (\d+) ", body)
    if m is None:
        raise RuntimeError("rtpengine's SDP has no audio port")
    return int(m.group(1))


# ---- the load generator (child process) -------------------------------------------------------


@dataclasses.dataclass
class _Group:
    """The streams of one (slot, socket): one packet buffer, one sendmmsg vector."""

    fd: int
    streams: npt.NDArray[np.int64]
    buf: npt.NDArray[Any]
    vec: MsgVector
    seq0: npt.NDArray[np.uint32]
    ts0: npt.NDArray[np.uint32]


class _Receiver(threading.Thread):
    """Drains the generator's sockets every few milliseconds with ``recvmmsg`` and keeps, per
    packet, what the analysis needs. Arrival times are the kernel's (SO_TIMESTAMPNS, taken when
    the packet reached our socket), so reading in batches costs no accuracy and keeps the
    generator's Python overhead per packet small."""

    def __init__(self, socks: Sequence[socket.socket], stamp: bool, run_tag: int) -> None:
        super().__init__(daemon=True)
        self.fds = [s.fileno() for s in socks]
        self.stamp = stamp
        self.run_tag = run_tag
        self.stop = False
        self.stale = 0
        self.buf = np.zeros((512, 256), dtype=np.uint8)
        self.vec = MsgVector(self.buf, 256, None, control=True)
        self.chunks: list[tuple[npt.NDArray[Any], ...]] = []

    def run(self) -> None:
        while not self.stop:
            time.sleep(0.004)
            self.drain()
        self.drain()

    def drain(self) -> None:
        vec, buf = self.vec, self.buf
        for fd in self.fds:
            while True:
                vec.reset_for_recv()
                r = recvmmsg(fd, vec)
                if r <= 0:
                    break
                names = vec.names_view[:r]
                src = names[:, 2].astype(np.int64) * 256 + names[:, 3]
                t = vec.rx_times(r)
                rows = buf[:r]
                if self.stamp:
                    stamp = rows[:, :PACKET].copy().view(PKT_DTYPE)[:, 0]
                    # Only this run's packets: a previous run's may still be on their way.
                    mine = stamp["run"] == self.run_tag
                    self.stale += r - int(np.count_nonzero(mine))
                    self.chunks.append(
                        (
                            src[mine],
                            t[mine],
                            stamp["sid"][mine],
                            stamp["n"][mine],
                            stamp["t_ns"][mine].astype(np.int64),
                        )
                    )
                else:
                    pcm = ULAW_DECODE[rows[:, 12:PACKET]]
                    loud = np.abs(pcm.astype(np.int32)).max(axis=1) > LOUD
                    self.chunks.append((src, t, loud))
                if r < vec.n:
                    break


def _gen_run(
    socks: list[socket.socket], cmd: dict[str, Any], emit: Callable[[Any], None]
) -> dict[str, Any]:
    """Send the streams of ``cmd`` for warm-up + window periods, receive, and analyse."""
    stamp = cmd["mode"] == "stamp"
    dests: list[int] = cmd["dests"]  # stream i sends to HOST:dests[i] from socket i % K
    n_streams = len(dests)
    warm, window = int(cmd["warmup_periods"]), int(cmd["window_periods"])
    pid = int(cmd["cpu_pid"])
    markers = {(int(p), int(s)) for p, s in cmd.get("markers", [])}
    # Everyone in a meeting hears everyone else's quiet tone, in phase: keep the sum well below
    # the marker threshold whatever the size.
    hearers = n_streams - 1 if cmd.get("topology") == "meeting" else 1
    quiet = tone_frame(400.0, min(TONE_AMP, 9000 / max(1, hearers)))
    k_socks = len(socks)
    rng = np.random.default_rng()
    run_tag = int(rng.integers(1, 2**32 - 1))

    # Streams are spread over the 1 ms slots of the period; each (slot, socket) is one group.
    sock_of = np.arange(n_streams) % k_socks
    slot_of = (np.arange(n_streams) // k_socks) % SLOTS
    groups: list[list[_Group]] = [[] for _ in range(SLOTS)]
    for slot in range(SLOTS):
        for k in range(k_socks):
            members = np.flatnonzero((slot_of == slot) & (sock_of == k))
            if len(members) == 0:
                continue
            buf = np.zeros((len(members), PACKET), dtype=np.uint8)
            buf[:, 12:] = SILENT_FRAME if stamp else quiet  # first: the stamp goes over it
            pkt = buf.view(PKT_DTYPE)[:, 0]
            pkt["b0"] = 0x80
            pkt["b1"] = 0  # PCMU
            pkt["ssrc"] = rng.integers(1, 2**32 - 1, len(members), dtype=np.uint32)
            if stamp:
                pkt["sid"] = members  # audio mode must keep its payload pure audio
                pkt["run"] = run_tag
            names = b"".join(sockaddr_in(HOST, dests[i]) for i in members)
            groups[slot].append(
                _Group(
                    socks[k].fileno(),
                    members,
                    buf,
                    MsgVector(buf, PACKET, names),
                    rng.integers(0, 2**16, len(members), dtype=np.uint32),
                    rng.integers(0, 2**32 - 1, len(members), dtype=np.uint32),
                )
            )
    # Markers by (group, period) -> rows, so the send loop finds them with one dict lookup.
    group_index = {id(g): i for i, g in enumerate(g for sg in groups for g in sg)}
    stream_at: dict[int, tuple[int, int]] = {}
    for sg in groups:
        for g in sg:
            for row, s in enumerate(g.streams.tolist()):
                stream_at[s] = (group_index[id(g)], row)
    marker_rows: dict[tuple[int, int], list[int]] = {}
    for p, s in markers:
        gi, row = stream_at[s]
        marker_rows.setdefault((gi, p), []).append(row)
    marker_sent: dict[tuple[int, int], int] = {}

    # Whatever a previous run left in our sockets (an overloaded engine relays its backlog
    # until its legs are released) must not be taken for this run's packets.
    stale = discard_pending(socks)
    receivers = [_Receiver(socks, stamp, run_tag)]
    for r in receivers:
        r.start()
    late_slots = failed = 0
    cpu0 = cpu1 = 0.0
    t_start = t_end = 0
    gen_cpu0, gen_wall0 = time.process_time(), time.monotonic()
    start = time.monotonic() + 0.02
    total = (warm + window) * SLOTS
    try:
        for k in range(total + 1):
            period, slot = divmod(k, SLOTS)
            if slot == 0 and period == warm:
                cpu0, t_start = cpu_seconds(pid), time.time_ns()
                emit({"mark": "start"})
            if k == total:
                cpu1, t_end = cpu_seconds(pid), time.time_ns()
                emit({"mark": "end"})
                break
            delay = start + k * (PERIOD / SLOTS) - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -0.002:
                late_slots += 1  # the generator itself fell behind its schedule
            now = time.time_ns()
            for g in groups[slot]:
                pkt = g.buf.view(PKT_DTYPE)[:, 0]
                pkt["seq"] = (g.seq0 + period) & 0xFFFF
                pkt["ts"] = (g.ts0 + FRAME * period) & 0xFFFFFFFF
                if stamp:
                    pkt["n"] = period
                    pkt["t_ns"] = now
                else:
                    rows = marker_rows.get((group_index[id(g)], period))
                    if rows is not None:
                        g.buf[rows, 12:] = MARKER_FRAME
                        for row in rows:
                            marker_sent[(period, int(g.streams[row]))] = now
                failed += sendmmsg(g.fd, g.vec)
                if not stamp and rows is not None:
                    g.buf[rows, 12:] = quiet
        time.sleep(float(cmd.get("tail", 0.3)))  # packets still on their way
    finally:
        for r in receivers:
            r.stop = True
        for r in receivers:
            r.join(timeout=2.0)
    gen_cpu = time.process_time() - gen_cpu0
    window_s = (t_end - t_start) / 1e9
    common = {
        "window_s": window_s,
        "cpu_s": cpu1 - cpu0,
        "slots": total,
        "gen_late_slots": late_slots,
        "send_failed": failed,
        "stale_dropped": stale + sum(r.stale for r in receivers),
        "gen_cpu_pct": 100.0 * gen_cpu / max(1e-9, time.monotonic() - gen_wall0),
    }
    port_to_stream = {port: i for i, port in enumerate(dests)}
    if stamp:
        return common | _analyse_stamps(
            receivers, n_streams, warm, window, port_to_stream, t_start, t_end
        )
    return common | _analyse_markers(
        receivers, cmd["topology"], n_streams, marker_sent, port_to_stream, t_start, t_end
    )


def _concat(receivers: Sequence[_Receiver], field: int) -> npt.NDArray[Any]:
    parts = [c[field] for r in receivers for c in r.chunks]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _analyse_stamps(
    receivers: Sequence[_Receiver],
    n_streams: int,
    warm: int,
    window: int,
    port_to_stream: dict[int, int],
    t_start: int,
    t_end: int,
) -> dict[str, Any]:
    """Loss, lateness and transit of relayed packets sent in the window (by their period)."""
    src = _concat(receivers, 0)
    t_recv = _concat(receivers, 1)
    sid = _concat(receivers, 2).astype(np.int64)
    n = _concat(receivers, 3).astype(np.int64)
    t_send = _concat(receivers, 4)
    # Sanity: a packet must come out of the leg of the stream's peer (stream i talks to i ^ 1).
    lut = np.full(65536, -1, dtype=np.int64)
    for port, i in port_to_stream.items():
        lut[port] = i
    out_of = lut[src]
    misrouted = int(np.count_nonzero((out_of < 0) | ((out_of ^ 1) != sid)))
    rx_in_window = int(np.count_nonzero((t_recv >= t_start) & (t_recv < t_end)))
    inside = (n >= warm) & (n < warm + window) & (sid >= 0) & (sid < n_streams)
    key = sid[inside] * window + (n[inside] - warm)
    transit_ms = (t_recv[inside] - t_send[inside]) / 1e6
    order = np.argsort(key, kind="stable")
    key, transit_ms = key[order], transit_ms[order]
    first = np.ones(len(key), dtype=bool)
    first[1:] = key[1:] != key[:-1]
    duplicates = int(len(key) - np.count_nonzero(first))
    transit_ms = transit_ms[first]
    expected = n_streams * window
    received = len(transit_ms)
    late_mask = transit_ms > LATE_MS
    late = int(np.count_nonzero(late_mask))
    # Whether lateness is one stall or spread out: the 100 ms spans (by period) holding any.
    periods = key[first] % window
    late_spans = len(np.unique(periods[late_mask] // 5))
    # Receiver-side gaps: runs of missing periods in each stream (a gap of k frames counts once).
    got = np.zeros((n_streams, window), dtype=bool)
    got.flat[key[first]] = True
    gaps = int(np.count_nonzero(got[:, 1:] < got[:, :-1]))
    return {
        "expected": expected,
        "received": received,
        "lost": expected - received,
        "late": late,
        "late_spans_100ms": late_spans,
        "gaps": gaps,
        "duplicates": duplicates,
        "misrouted": misrouted,
        "rx_in_window": rx_in_window,
        "lat_p50_ms": percentile(transit_ms, 50),
        "lat_p99_ms": percentile(transit_ms, 99),
        "lat_max_ms": float(transit_ms.max()) if received else None,
        "lat_samples": received,
    }


def _analyse_markers(
    receivers: Sequence[_Receiver],
    topology: str,
    n_streams: int,
    marker_sent: dict[tuple[int, int], int],
    port_to_stream: dict[int, int],
    t_start: int,
    t_end: int,
) -> dict[str, Any]:
    """Delay of each marker to each stream that hears it: the first loud frame there after it
    was sent (markers are spaced so that the next one cannot be mistaken for it)."""
    src = _concat(receivers, 0)
    t_recv = _concat(receivers, 1)
    loud = _concat(receivers, 2).astype(bool)
    lut = np.full(65536, -1, dtype=np.int64)
    for port, i in port_to_stream.items():
        lut[port] = i
    stream = lut[src]
    rx_in_window = int(np.count_nonzero((t_recv >= t_start) & (t_recv < t_end) & (stream >= 0)))
    loud_at: list[npt.NDArray[np.int64]] = []
    for r in range(n_streams):
        loud_at.append(np.sort(t_recv[(stream == r) & loud]))
    delays: list[float] = []
    missed = 0
    spacing_ns = int(0.19e9)  # markers heard by one stream are at least 200 ms apart
    for (_, s), sent in marker_sent.items():
        hearers = [s ^ 1] if topology == "pairs" else [r for r in range(n_streams) if r != s]
        for r in hearers:
            times = loud_at[r]
            i = int(np.searchsorted(times, sent))
            if i < len(times) and times[i] - sent < spacing_ns:
                delays.append((times[i] - sent) / 1e6)
            else:
                missed += 1
    d = np.array(delays, dtype=np.float64)
    ours = stream >= 0
    return {
        "rx_in_window": rx_in_window,
        # Sanity: the share of loud frames heard should be what the markers explain.
        "loud_fraction": float(np.count_nonzero(loud & ours)) / max(1, int(np.count_nonzero(ours))),
        "markers": len(marker_sent),
        "lat_p50_ms": percentile(d, 50),
        "lat_p99_ms": percentile(d, 99),
        "lat_max_ms": float(d.max()) if len(d) else None,
        "lat_samples": len(d),
        "markers_missed": missed,
    }


def gen_main(core: int, rt_priority: int, port_base: int) -> None:
    """The load generator: JSON commands on stdin, JSON lines on stdout."""
    place(core, rt_priority)
    raise_fd_limit()
    socks: list[socket.socket] = []
    rtcp: list[socket.socket] = []

    for cmd in commands():
        if cmd["op"] == "open":
            socks, rtcp = open_rtp_pairs(int(cmd["sockets"]), port_base)
            reply({"ports": [s.getsockname()[1] for s in socks]})
        elif cmd["op"] == "run":
            reply({"result": _gen_run(socks, cmd, reply)})
    for s in socks + rtcp:
        s.close()


# ---- Baton's engine (child process) -----------------------------------------------------------


def engine_main(core: int, rt_priority: int, port_range: tuple[int, int], record_dir: str) -> None:
    """Baton's ``MediaEngine`` in its own process, driven by JSON commands on stdin."""
    import asyncio

    from baton.core.port import Member, Target
    from baton.switch.media.engine import MediaEngine

    place(core, rt_priority)
    raise_fd_limit()

    async def serve() -> None:
        engine = MediaEngine(host=HOST, port_range=port_range)
        legs: list[str] = []
        meetings: list[str] = []
        serial = 0

        def handle(cmd: dict[str, Any]) -> None:
            nonlocal serial
            op = cmd["op"]
            if op == "setup":
                # Legs in stream order; stream i's phone is the generator socket at remotes[i].
                serial += 1
                remotes: list[int] = cmd["remotes"]
                ports = []
                for i, port in enumerate(remotes):
                    leg = f"s{serial}-{i}"
                    ports.append(engine.allocate(leg)[1])
                    engine.set_remote(leg, HOST, port, payload_type=0)
                    legs.append(leg)
                if cmd["topology"] == "pairs":
                    for i in range(0, len(remotes), 2):
                        engine.bridge(legs[-len(remotes) + i], legs[-len(remotes) + i + 1])
                        if cmd.get("record"):
                            # A recorded call is mixed, not relayed: the mixed two-party path.
                            leg = legs[-len(remotes) + i]
                            engine.record(Target(leg=leg), os.path.join(record_dir, f"{leg}.wav"))
                else:
                    meeting = f"m{serial}"
                    engine.create_meeting(meeting)
                    meetings.append(meeting)
                    for leg in legs[-len(remotes) :]:
                        engine.join(meeting, Member(leg))
                reply({"ports": ports})
            elif op == "stats":
                stats: dict[str, Any] = dict(engine.metrics.as_dict())
                if cmd.get("legs"):
                    targets = [engine.leg_stats(leg).jitter_target_frames for leg in legs]
                    stats["jitter_targets"] = {
                        str(v): targets.count(v) for v in sorted(set(targets))
                    }
                reply(stats)
            elif op == "teardown":
                for meeting in meetings:
                    engine.destroy_meeting(meeting)
                for leg in legs:
                    engine.release(leg)
                legs.clear()
                meetings.clear()
                for name in os.listdir(record_dir):
                    os.unlink(os.path.join(record_dir, name))
                reply({"ok": True})

        reply({"ready": True})
        try:
            await serve_commands(handle)
        finally:
            await engine.close()

    asyncio.run(serve())


# ---- the orchestrator -------------------------------------------------------------------------


class RtpEngine:
    """rtpengine in userspace (docs/benchmarks.md §Peers), pinned to the engine core."""

    def __init__(
        self, core: int, rt_priority: int, ng_port: int, ports: tuple[int, int], log_path: str
    ) -> None:
        binary = shutil.which("rtpengine")
        if binary is None:
            raise RuntimeError(
                "rtpengine not found: install the Debian package rtpengine-daemon "
                "(scripts/install-system-deps.sh, as root)"
            )
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()

        def prepare() -> None:
            die_with_parent()
            place(core, rt_priority)  # threads inherit both: the whole daemon on one core

        self.proc = subprocess.Popen(
            [
                binary,
                "--config-file=none",
                "--table=-1",
                f"--interface={HOST}",
                f"--listen-ng={HOST}:{ng_port}",
                "--foreground",
                "--log-stderr",
                f"--port-min={ports[0]}",
                f"--port-max={ports[1]}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            preexec_fn=prepare,
        )
        self.ng = NgClient(ng_port)
        deadline = time.monotonic() + 10.0
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rtpengine exited at start: {self.log_tail()}")
            try:
                self.ng.request({"command": "ping"}, timeout=0.3, tries=1)
                break
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"rtpengine did not answer ping: {self.log_tail()}"
                    ) from None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read()[-600:].decode(errors="replace")

    def stop(self) -> None:
        self.ng.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()


@dataclasses.dataclass
class Config:
    """Sizes and durations of one run (``full()``, ``quick()``, or tiny for the smoke test)."""

    ratio_calls: int = 200  # rtpengine's 1,000-port range holds 250 calls
    ratio_rounds: int = 2  # rtpengine, Baton, rtpengine, Baton: drift hits both alike
    warmup_s: float = 2.0
    window_s: float = 8.0
    search_start: int = 300
    search_growth: float = 1.4
    search_max: int = 2000
    search_refine: int = 3  # bisection steps between the last pass and the first failure
    search_window_s: float = 5.0
    search_budget_s: float = 150.0
    meeting_size: int = 100
    mixed_calls: int = 300
    gen_sockets: int = 4
    rt_priority: int = 10  # SCHED_FIFO for both engines and the generator (0: no; see ``place``)
    ng_port: int = RTPENGINE_NG_PORT
    rtpengine_ports: tuple[int, int] = RTPENGINE_PORTS
    baton_ports: tuple[int, int] = BATON_PORTS
    gen_port_base: int = GEN_PORT_BASE

    @classmethod
    def quick(cls) -> Config:
        return cls(
            ratio_calls=100,
            ratio_rounds=1,
            warmup_s=1.0,
            window_s=3.0,
            search_start=300,
            search_growth=2.0,
            search_max=600,
            search_refine=0,
            search_window_s=3.0,
            search_budget_s=30.0,
            mixed_calls=100,
        )


class Bench:
    """One run: the generator, rtpengine and Baton's engine, and the scenarios between them."""

    def __init__(self, config: Config, log: Callable[[str], None] = print) -> None:
        self.cfg = config
        self.log = log
        self.engine_core, self.gen_core = pick_cores()
        self.tmp = tempfile.mkdtemp(prefix="baton-bench-media-")
        self.gen: Child | None = None
        self.baton: Child | None = None
        self.rtpe: RtpEngine | None = None
        self.gen_ports: list[int] = []

    # -- lifecycle

    def __enter__(self) -> Bench:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for child in (self.gen, self.baton):
            if child is not None:
                child.stop()
        self.gen = self.baton = None
        if self.rtpe is not None:
            self.rtpe.stop()
            self.rtpe = None
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _script(self, *args: str) -> list[str]:
        return [sys.executable, os.path.abspath(__file__), "--child", *args]

    def start(self) -> None:
        # The orchestrator waits most of the time; keep it off the engine's core.
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {self.gen_core})
        raise_fd_limit()
        self.rtpe = RtpEngine(
            self.engine_core,
            self.cfg.rt_priority,
            self.cfg.ng_port,
            self.cfg.rtpengine_ports,
            os.path.join(self.tmp, "rtpengine.log"),
        )
        self.gen = Child(
            self._script(
                "gen", str(self.gen_core), str(self.cfg.rt_priority), str(self.cfg.gen_port_base)
            ),
            "generator",
        )
        self.gen_ports = self.gen.request({"op": "open", "sockets": self.cfg.gen_sockets})["ports"]
        rec = os.path.join(self.tmp, "rec")
        os.mkdir(rec)
        lo, hi = self.cfg.baton_ports
        self.baton = Child(
            self._script(
                "engine", str(self.engine_core), str(self.cfg.rt_priority), str(lo), str(hi), rec
            ),
            "baton engine",
        )
        self.baton.read(timeout=30)  # ready

    def scheduling(self) -> dict[str, str]:
        """The scheduling policy each measured process actually got (see :func:`place`)."""
        out: dict[str, str] = {}
        for name, proc in (
            ("rtpengine", self.rtpe),
            ("baton", self.baton),
            ("generator", self.gen),
        ):
            if proc is None:
                continue
            try:
                policy = os.sched_getscheduler(proc.pid)
                nice = os.getpriority(os.PRIO_PROCESS, proc.pid)
            except OSError:
                continue
            out[name] = "fifo" if policy == os.SCHED_FIFO else f"other, nice {nice}"
        return out

    def _remote(self, stream: int) -> int:
        return self.gen_ports[stream % len(self.gen_ports)]

    # -- one measurement

    def _run(
        self,
        dests: list[int],
        pid: int,
        *,
        mode: str,
        topology: str,
        window_s: float,
        warmup_s: float,
        markers: list[tuple[int, int]] | None = None,
        baton: bool,
    ) -> dict[str, Any]:
        """Drive the generator; sample Baton's counters at the window's marks."""
        assert self.gen is not None
        warm = max(1, round(warmup_s / PERIOD))
        window = max(1, round(window_s / PERIOD))
        self.gen.send(
            {
                "op": "run",
                "mode": mode,
                "topology": topology,
                "dests": dests,
                "warmup_periods": warm,
                "window_periods": window,
                "cpu_pid": pid,
                "markers": markers or [],
            }
        )
        marks: dict[str, dict[str, Any]] = {}
        while True:
            msg = self.gen.read(timeout=warmup_s + window_s + 60)
            if "mark" in msg:
                if baton:
                    assert self.baton is not None
                    marks[msg["mark"]] = self.baton.request(
                        {"op": "stats", "legs": msg["mark"] == "end"}
                    )
            else:
                result: dict[str, Any] = msg["result"]
                break
        if baton:
            a, b = marks["start"], marks["end"]
            result["engine"] = {
                k: b[k] - a[k] for k in a if isinstance(a[k], int | float) and k in b
            }
            result["engine"]["jitter_targets"] = b.get("jitter_targets")
        return result

    def _baton_setup(self, streams: int, topology: str, record: bool = False) -> list[int]:
        assert self.baton is not None
        remotes = [self._remote(i) for i in range(streams)]
        ports: list[int] = self.baton.request(
            {"op": "setup", "remotes": remotes, "topology": topology, "record": record},
            timeout=60,
        )["ports"]
        return ports

    def _baton_teardown(self) -> None:
        assert self.baton is not None
        self.baton.request({"op": "teardown"}, timeout=60)
        time.sleep(0.2)  # let the last packets drain before the next scenario binds ports

    # -- scenarios

    def relay_rtpengine(self, calls: int) -> dict[str, Any]:
        """``calls`` two-party calls through rtpengine: offer/answer, traffic, delete."""
        assert self.rtpe is not None
        ng = self.rtpe.ng
        dests = [0] * (2 * calls)
        call_ids = [f"bench-{os.getpid()}-{time.monotonic_ns()}-{c}" for c in range(calls)]
        try:
            for c, cid in enumerate(call_ids):
                a, b = 2 * c, 2 * c + 1
                offer = ng.request(
                    {
                        "command": "offer",
                        "call-id": cid,
                        "from-tag": "a",
                        "sdp": sdp(self._remote(a), c),
                    }
                )
                answer = ng.request(
                    {
                        "command": "answer",
                        "call-id": cid,
                        "from-tag": "a",
                        "to-tag": "b",
                        "sdp": sdp(self._remote(b), c),
                    }
                )
                dests[b] = sdp_port(offer["sdp"])  # B sends to the port of the offer's SDP
                dests[a] = sdp_port(answer["sdp"])
            return self._run(
                dests,
                self.rtpe.pid,
                mode="stamp",
                topology="pairs",
                window_s=self.cfg.window_s,
                warmup_s=self.cfg.warmup_s,
                baton=False,
            )
        finally:
            for cid in call_ids:
                with contextlib.suppress(TimeoutError, RuntimeError):
                    ng.request({"command": "delete", "call-id": cid, "delete-delay": 0})

    def relay_baton(self, calls: int, window_s: float, warmup_s: float) -> dict[str, Any]:
        assert self.baton is not None
        try:
            dests = self._baton_setup(2 * calls, "pairs")
            return self._run(
                dests,
                self.baton.pid,
                mode="stamp",
                topology="pairs",
                window_s=window_s,
                warmup_s=warmup_s,
                baton=True,
            )
        finally:
            self._baton_teardown()

    def mixed_baton(self, streams: int, topology: str, *, record: bool) -> dict[str, Any]:
        """Mixed legs: a meeting of ``streams`` members, or ``streams/2`` recorded calls."""
        assert self.baton is not None
        warm = max(1, round(self.cfg.warmup_s / PERIOD))
        window = max(1, round(self.cfg.window_s / PERIOD))
        markers: list[tuple[int, int]] = []
        if topology == "pairs":
            # Each stream a marker every 25 periods (0.5 s), streams staggered.
            for p in range(warm, warm + window):
                markers.extend((p, s) for s in range(streams) if (p + s) % 25 == 0)
        else:
            # One marker in the whole meeting every 10 periods (200 ms), members in turn.
            # A stride coprime with the size walks the members over every send slot.
            stride = next(k for k in (37, 41, 43, 47, 53) if streams % k)
            markers = [
                (p, (i * stride) % streams)
                for i, p in enumerate(range(warm + 1, warm + window, 10))
            ]
        try:
            dests = self._baton_setup(streams, topology, record=record)
            return self._run(
                dests,
                self.baton.pid,
                mode="audio",
                topology=topology,
                window_s=self.cfg.window_s,
                warmup_s=self.cfg.warmup_s,
                markers=markers,
                baton=True,
            )
        finally:
            self._baton_teardown()

    def search_max_calls(self) -> tuple[int, str, list[dict[str, Any]]]:
        """Grow N geometrically until a step fails ``judge``, then bisect; bounded in steps
        and time. Returns (max calls, what limited it, the steps). A failure is not retried:
        one bad step decides, which keeps the figure conservative."""
        cfg = self.cfg
        steps: list[dict[str, Any]] = []
        deadline = time.monotonic() + cfg.search_budget_s
        best, fail = 0, 0
        limit = "bound"

        n = cfg.search_start
        while True:
            step = self._search_step(n)
            steps.append(step)
            if step["generator_behind"]:
                limit = "generator"
                break
            if step["ok"]:
                best = n
                if n >= cfg.search_max:
                    break
                n = min(cfg.search_max, int(n * cfg.search_growth))
            else:
                fail = n
                limit = "engine"
                break
            if time.monotonic() > deadline:
                limit = "time"
                break
        for _ in range(cfg.search_refine):
            if not fail or fail - best <= max(10, best // 20) or time.monotonic() > deadline:
                break
            n = (best + fail) // 2
            step = self._search_step(n)
            steps.append(step)
            if step["generator_behind"]:
                break
            if step["ok"]:
                best = n
            else:
                fail = n
        return best, limit, steps

    def _search_step(self, calls: int) -> dict[str, Any]:
        r = self.relay_baton(calls, self.cfg.search_window_s, min(self.cfg.warmup_s, 1.5))
        verdict = judge(r)
        step = {
            "calls": calls,
            "cpu_pct": rnd(100.0 * r["cpu_s"] / r["window_s"], 1),
            **verdict,
            "lat_p99_ms": rnd(r["lat_p99_ms"]),
            "gen_cpu_pct": rnd(r["gen_cpu_pct"], 1),
        }
        self.log(
            f"  {calls:5d} calls: engine {step['cpu_pct']}% of a core, "
            f"bad {100 * verdict['bad_fraction']:.3f}% (lost {verdict['lost']}, late "
            f"{verdict['late']}), late ticks {verdict['late_ticks']}/{verdict['ticks']}, "
            f"p99 {step['lat_p99_ms']} ms -> {'ok' if verdict['ok'] else 'FAIL'}"
            + (" (generator behind)" if verdict["generator_behind"] else "")
        )
        return step


def judge(r: dict[str, Any]) -> dict[str, Any]:
    """The max-calls criterion for one relay run (Baton's counters in ``r["engine"]``).

    A frame is *bad* when it was sent in the window and is lost (never reached the far phone:
    dropped in a socket buffer, or not forwarded by the engine) or late (transit over
    ``LATE_MS``). The run passes when bad frames are under 1 % of those sent, the engine's late
    ticks (its 20 ms clock starting over 10 ms late) are under 1 % of ticks, and the packets the
    engine read but did not forward are under 1 % of those it read.
    """
    e = r.get("engine", {})
    expected = max(1, r["expected"])
    bad = (r["lost"] + r["late"]) / expected
    ticks = int(e.get("ticks", 0))
    late_ticks = int(e.get("late_ticks", 0))
    read = int(e.get("packets_in", 0))
    not_forwarded = max(0, read - int(e.get("relayed", 0)))
    behind = r["gen_late_slots"] > 0.01 * r["slots"] or r["send_failed"] > 0
    ok = (
        bad < LOSS_LIMIT
        and late_ticks < LOSS_LIMIT * max(1, ticks)
        and not_forwarded < LOSS_LIMIT * max(1, read)
    )
    return {
        "ok": ok,
        "bad_fraction": round(bad, 6),
        "lost": r["lost"],
        "late": r["late"],
        "late_spans_100ms": r["late_spans_100ms"],
        "gaps": r["gaps"],
        "late_ticks": late_ticks,
        "ticks": ticks,
        "not_forwarded": not_forwarded,
        "generator_behind": behind,
    }


def us_per_packet(r: dict[str, Any]) -> float:
    """Engine CPU in the window per packet relayed (received by the far phone) in it."""
    return 1e6 * float(r["cpu_s"]) / max(1, int(r["rx_in_window"]))


def run_bench(config: Config, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Every measurement of the benchmark, in one run; returns the result object."""
    wall0 = time.monotonic()
    with Bench(config, log) as bench:
        bench.start()
        cfg = bench.cfg
        log(
            f"engine core {bench.engine_core}, generator core {bench.gen_core}; "
            f"{cfg.ratio_calls} calls for the ratio, {cfg.window_s:g} s windows"
        )

        # 1. CPU per relayed packet: rtpengine and Baton, same calls, rate and window.
        rounds: list[dict[str, Any]] = []
        baton_runs: list[dict[str, Any]] = []
        for i in range(cfg.ratio_rounds):
            rp = bench.relay_rtpengine(cfg.ratio_calls)
            bt = bench.relay_baton(cfg.ratio_calls, cfg.window_s, cfg.warmup_s)
            baton_runs.append(bt)
            rnd_ = {
                "rtpengine_us": us_per_packet(rp),
                "baton_us": us_per_packet(bt),
                "rtpengine_cpu_pct": 100.0 * rp["cpu_s"] / rp["window_s"],
                "baton_cpu_pct": 100.0 * bt["cpu_s"] / bt["window_s"],
                "rtpengine_lat_p99_ms": rp["lat_p99_ms"],
                "rtpengine_lat_p50_ms": rp["lat_p50_ms"],
                "rtpengine_lost": rp["lost"],
                "baton_lost": bt["lost"],
                "baton_relayed_check": bt["engine"].get("relayed"),
                "packets": bt["rx_in_window"],
            }
            rounds.append(rnd_)
            log(
                f"relay round {i + 1}: rtpengine {rnd_['rtpengine_us']:.2f} us/packet "
                f"({rnd_['rtpengine_cpu_pct']:.1f}%), Baton {rnd_['baton_us']:.2f} us/packet "
                f"({rnd_['baton_cpu_pct']:.1f}%), {rnd_['packets']} packets each"
            )
        rtpe_us = float(np.mean([x["rtpengine_us"] for x in rounds]))
        baton_us = float(np.mean([x["baton_us"] for x in rounds]))
        relay_lat = np.concatenate([[b["lat_p50_ms"], b["lat_p99_ms"]] for b in baton_runs])

        scheduling = bench.scheduling()

        # 2. The most calls on one core.
        log("max calls on one core (relay):")
        max_calls, limited_by, steps = bench.search_max_calls()

        # 3. A 100-member meeting, everyone sending; its mixed legs' delay.
        meeting = bench.mixed_baton(cfg.meeting_size, "meeting", record=False)
        meeting_pct = 100.0 * meeting["cpu_s"] / meeting["window_s"]
        log(
            f"meeting of {cfg.meeting_size}: {meeting_pct:.1f}% of a core, delay p50 "
            f"{meeting['lat_p50_ms']} p99 {meeting['lat_p99_ms']} ms "
            f"({meeting['lat_samples']} samples)"
        )

        # 4. Two-party calls on the mixing path (one leg of each recorded).
        mixed = bench.mixed_baton(2 * cfg.mixed_calls, "pairs", record=True)
        mixed_pct = 100.0 * mixed["cpu_s"] / mixed["window_s"]
        log(
            f"{cfg.mixed_calls} recorded (mixed) calls: {mixed_pct:.1f}% of a core, delay p50 "
            f"{mixed['lat_p50_ms']} p99 {mixed['lat_p99_ms']} ms ({mixed['lat_samples']} samples)"
        )

    relay_p50 = float(np.max(relay_lat[0::2]))
    relay_p99 = float(np.max(relay_lat[1::2]))
    ratio = baton_us / rtpe_us if rtpe_us > 0 else None
    result: dict[str, Any] = {
        "cpu_per_packet_ratio": rnd(ratio),
        "baton_us_per_packet": rnd(baton_us),
        "rtpengine_us_per_packet": rnd(rtpe_us),
        "ratio_calls": cfg.ratio_calls,
        "ratio_rounds": [
            {k: rnd(v) if isinstance(v, float) else v for k, v in x.items()} for x in rounds
        ],
        "max_calls_one_core": max_calls,
        "max_calls_limited_by": limited_by,
        "max_calls_steps": steps,
        "meeting100_cpu_pct": rnd(meeting_pct, 1),
        "meeting_size": cfg.meeting_size,
        "added_latency_p50_ms": rnd(relay_p50),
        "added_latency_p99_ms": rnd(relay_p99),
        "mixed_meeting_latency_p50_ms": rnd(meeting["lat_p50_ms"]),
        "mixed_meeting_latency_p99_ms": rnd(meeting["lat_p99_ms"]),
        "mixed_meeting_markers_missed": meeting["markers_missed"],
        "mixed_calls": cfg.mixed_calls,
        "mixed_calls_cpu_pct": rnd(mixed_pct, 1),
        "mixed_calls_latency_p50_ms": rnd(mixed["lat_p50_ms"]),
        "mixed_calls_latency_p99_ms": rnd(mixed["lat_p99_ms"]),
        "mixed_calls_markers_missed": mixed["markers_missed"],
        "mixed_engine": {
            k: mixed["engine"].get(k)
            for k in (
                "late_ticks",
                "ticks",
                "late_frames",
                "lost_frames",
                "dropped_frames",
                "jitter_targets",
            )
        },
        "rtpengine_latency_p50_ms": rnd(max(x["rtpengine_lat_p50_ms"] for x in rounds)),
        "rtpengine_latency_p99_ms": rnd(max(x["rtpengine_lat_p99_ms"] for x in rounds)),
        "definitions": {
            "late": f"a relayed frame whose transit (generator send to far generator receive) exceeds {LATE_MS:g} ms",
            "lost": "a frame sent in the window that never reached the far phone (socket overflow or not forwarded)",
            "max_calls_ok": "late+lost < 1% of frames sent, engine late ticks < 1% of ticks, read-but-not-forwarded < 1%",
            "cpu": "utime+stime of the engine process (all threads) from /proc/<pid>/stat over the window",
            "latency": "generator send to generator receive, CLOCK_MONOTONIC; includes two loopback hops",
        },
        "scheduling": scheduling,
        "cores": {
            "engine": bench.engine_core,
            "generator": bench.gen_core,
            "online": os.cpu_count(),
        },
        "config": dataclasses.asdict(cfg),
        "seconds": round(time.monotonic() - wall0, 1),
        "date": datetime.date.today().isoformat(),
        "python": platform.python_version(),
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (under a minute)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        role, *rest = args.child
        if role == "gen":
            gen_main(int(rest[0]), int(rest[1]), int(rest[2]))
        elif role == "engine":
            engine_main(int(rest[0]), int(rest[1]), (int(rest[2]), int(rest[3])), rest[4])
        return
    config = Config.quick() if args.quick else Config()
    result = run_bench(config, log=lambda s: print(s, flush=True))
    result["quick"] = args.quick
    print(json.dumps(result))


if __name__ == "__main__":
    main()
