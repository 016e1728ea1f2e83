"""Benchmark of push-to-talk floor access (issue "Push-to-talk groups", Benchmark).

Two modes, each printing one JSON object as its last line.

**sim** (the default). Floor access time: from a member's floor request reaching Baton to the
switch being told to let that member be heard (the talker switched to *speak* in the group's
meeting). Measured for requests made while the floor is idle (granted at once), p50 and p99,
with ``--groups`` groups of ``--members`` members under load: in every group, members keep
asking for the floor and releasing it at random, and a dispatcher overrides now and then. On
one core (one asyncio loop), on the sim switch: the control path alone.

**media** (``--media``). The same, end to end through Baton with real media: from the floor
request reaching Baton — an RFC 4733 ``*`` from the member's phone — to the first RTP packet
carrying the granted talker's audio leaving Baton towards a listener. Three processes (and
SIPp):

* **Baton** (``--child baton``), pinned to one core: the core, 100 ``ptt_group`` flows, the
  ``sip`` switch and its RTP media engine, exactly as ``baton serve`` runs them. Every member
  and dispatcher is a SIP user whose static contact is a SIPp UAS; Baton calls them all (the
  groups dial their members), SIPp answers with an SDP pointing the media at the phones'
  socket. SIPp is only the signalling; it is idle once the calls are up.
* **the phones** (``--child phones``), pinned to the other core: one UDP socket standing in
  for every member's phone. Members send nothing while they listen (as PTT phones). In each
  group two members keep pressing PTT at random (pause 0.2–1 s, talk 0.1–0.6 s; the
  dispatcher 5 % of the time, at dispatcher priority): a press is an RFC 4733 ``*`` event
  (start, update, end ×3) sent to the member's leg, and from the same instant the member's
  voice — a tone of its own frequency — every 20 ms; ``#`` releases. Everything Baton sends
  is read with ``recvmmsg`` and the kernel's receive timestamps (SO_TIMESTAMPNS).
* the orchestrator (this process).

A request's *floor access time* for one listener is the listener's first packet carrying the
talker's tone (its amplitude at the talker's frequency, one 20 ms frame) after the ``*`` left
the phone, minus that send time: one loopback hop each way (tens of µs) plus everything in
Baton — reading the event, the flow granting the floor, the media graph change, the mixer.
Baton reports, per ``*`` it detected, whether the floor was granted at once (idle, or by
preempting a lower talker) or queued; queued requests are not floor access and are not
measured. Samples are (request, listener) pairs; ``floor_access_media_last_listener_p99_ms``
is per request, until every listener had it.

``python bench/ptt.py`` (sim, 30 s) or ``--quick`` (5 s); ``python bench/ptt.py --media`` (30 s
of load) or ``--media --quick`` (8 s). Binds 127.0.0.1 only; every child is stopped by its pid.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import random
import select
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np

from baton.core import Flow, User, UserManager
from baton.core.port import MeetingMode, Member
from baton.flows.ptt import ptt_group
from baton.switch.sim import Behaviour, SimSwitch
from harness.g711 import FRAME, ULAW_DECODE, tone_frame
from harness.net import HOST, MsgVector, free_port, open_rtp_pairs, port_bound, recvmmsg
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
from harness.stats import percentile_of

INSTANT = Behaviour(answer_after=0.0, ring_after=0.0)


# ==== sim mode ==================================================================================


class TimedSim(SimSwitch):
    """The sim, noting when each member is switched to speak."""

    def __init__(self) -> None:
        super().__init__(default=INSTANT)
        self.log_commands = False
        self.spoke: dict[str, float] = {}  # leg -> perf_counter when made a speaker

    async def join(self, meeting: str, member: Member) -> None:
        await super().join(meeting, member)
        if member.mode is MeetingMode.SPEAK:
            self.spoke[member.leg] = time.perf_counter()


async def run(groups: int, members: int, seconds: float, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    sim = TimedSim()
    manager = UserManager(sim, history=2000)
    flows: list[tuple[Flow, list[User], User]] = []
    for g in range(groups):
        users = []
        for m in range(members):
            u = manager.add_user(User(f"g{g}m{m}"))
            sim.add_phone(u.id)
            users.append(u)
        d = manager.add_user(User(f"g{g}d", keep=True))
        sim.add_phone(d.id)
        f = manager.start(ptt_group, users, [d], persistent=True, max_burst=30.0)
        flows.append((f, users, d))
    await asyncio.sleep(0.5)  # everyone answered and joined
    samples: list[float] = []
    queued = 0
    deadline = time.perf_counter() + seconds
    holder: dict[str, str | None] = {}  # group -> who holds its floor (as last answered)

    async def drive(f: Flow, users: list[User], d: User) -> None:
        """One member pressing PTT at random: request, talk a while, release."""
        nonlocal queued
        while time.perf_counter() < deadline:
            await asyncio.sleep(rng.uniform(0.2, 1.0))
            who = d if rng.random() < 0.05 else rng.choice(users)
            leg = manager.leg_of(who)
            if leg is None:
                continue
            idle = holder.get(f.name) is None
            sim.spoke.pop(leg.id, None)
            t0 = time.perf_counter()
            got = await f.send("override" if who is d else "request", user=who.id)
            holder[f.name] = got
            if got == who.id and leg.id in sim.spoke and idle:
                samples.append(sim.spoke[leg.id] - t0)
            elif got != who.id:
                queued += 1
            await asyncio.sleep(rng.uniform(0.1, 0.6))
            holder[f.name] = await f.send("release", user=who.id)

    # two independent pressers per group: requests also meet a busy floor and queue
    await asyncio.gather(*(drive(f, u, d) for f, u, d in flows for _ in range(2)))
    await asyncio.gather(*(f.send("end") for f, _, _ in flows), return_exceptions=True)
    await manager.close()
    ms = sorted(x * 1000 for x in samples)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))] if ms else float("nan")
    return {
        "floor_access_p50_ms": round(statistics.median(ms), 3) if ms else None,
        "floor_access_p99_ms": round(p99, 3) if ms else None,
        "grants_measured": len(ms),
        "requests_queued": queued,
        "groups": groups,
        "members_per_group": members,
        "seconds": seconds,
    }


# ==== media mode ================================================================================

PT_PCMU: Final = 0
PT_EVENT: Final = 101  # telephone-event, as the phones' SDP (SIPp's answer) says
TALK_AMP: Final = 12000.0  # a talker's tone; Baton's own PTT tones are at most ~5,100
HEARD_AMP: Final = 6000.0  # a frame holds the talker when its tone is at least this strong
CENSOR_S: Final = 0.3  # a listener not reached within this is a miss (the MCPTT budget)
BATON_PORTS: Final = (10000, 14998)  # Baton's RTP ports in this bench (2 per leg)
PHONES_PORT_BASE: Final = 9000


def talker_freq(member: int) -> float:
    """Each member's voice: a whole number of cycles per 20 ms frame (so one frame repeats
    seamlessly and tones are orthogonal over a frame), 100 Hz apart."""
    return 400.0 + 100.0 * member


@dataclass(frozen=True)
class BenchUser:
    """A SIP user of the bench (the shape ``create_switch`` wants)."""

    id: str
    contact: str
    numbers: tuple[str, ...] = ()
    password: str = "unused"
    max_priority: int | None = None
    keep: bool = False


def user_ids(groups: int, members: int) -> list[str]:
    """Every user in a fixed order: group by group, members then the dispatcher."""
    return [f"g{g}{'d' if m == members else f'm{m}'}" for g in range(groups)
            for m in range(members + 1)]  # fmt: skip


UAS_SCENARIO: Final = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<!-- Every PTT member's signalling: answer Baton's INVITE with media at the phones' socket, wait
for the BYE. -->
<scenario name="ptt members">
  <recv request="INVITE" crlf="true"/>
  <send retrans="500">
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=phones 1 1 IN IP4 127.0.0.1
      s=-
      c=IN IP4 127.0.0.1
      t=0 0
      m=audio PHONES_PORT RTP/AVP 0 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-15

    ]]>
  </send>
  <recv request="ACK" crlf="true"/>
  <recv request="BYE"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
</scenario>
"""


# ---- Baton (child process) ----------------------------------------------------------------------


def baton_main(cfg: dict[str, Any]) -> None:
    """Baton under test: the core, the PTT groups, the sip switch and its media engine."""
    place(int(cfg["core"]), int(cfg["rt_priority"]))
    raise_fd_limit()
    asyncio.run(_baton_serve(cfg))


async def _baton_serve(cfg: dict[str, Any]) -> None:
    from baton.core.events import DtmfDigit, Event, MediaChanged
    from baton.flows.ptt import FloorDenied, FloorGranted, FloorQueued, FloorRevoked
    from baton.switch.sip import create_switch

    groups, members = int(cfg["groups"]), int(cfg["members"])
    contact = f"127.0.0.1:{int(cfg['sipp_port'])}"
    ids = user_ids(groups, members)
    users = [BenchUser(u, f"sip:{u}@{contact}") for u in ids]
    first, last = cfg["rtp_ports"]
    table = {
        "listen": ["udp:127.0.0.1:0"],
        "rtp_ports": f"{first}-{last}",
        "rtp_timeout": 0,  # listeners send nothing: that is not a dead phone
        "session_expires": 0,
    }
    switch = create_switch(table, users)
    manager = UserManager(switch, history=1000)
    for u in ids:
        manager.add_user(User(u, keep=u.endswith("d")))
    await switch.start()
    switch.media.mixer.fanout = bool(cfg["fanout"])  # --no-fanout: every listener mixed

    # Per user, one entry per "*" Baton detected, in order: when, and what came of it.
    requests: dict[str, list[dict[str, Any]]] = {u: [] for u in ids}

    def pending(user: str) -> dict[str, Any] | None:
        entries = requests.get(user)
        if entries and entries[-1]["outcome"] is None:
            return entries[-1]
        return None

    def on_event(e: Event) -> None:
        now = time.time_ns()
        if isinstance(e, DtmfDigit):
            if e.digit == "*":
                requests[e.user].append({"t_dtmf": now, "outcome": None})
        elif isinstance(e, MediaChanged):
            if e.command == "join" and e.detail == MeetingMode.SPEAK.value:
                p = pending(e.users[0])
                if p is not None:
                    p["t_speak"] = now  # the media graph change reaches the switch
        elif isinstance(e, FloorRevoked):
            p = pending(e.by) if e.by else None
            if p is not None:
                p["preempting"] = True
            entries = requests.get(e.user)
            if entries and entries[-1]["outcome"] == "granted":
                entries[-1].setdefault("t_revoked", now)
        elif isinstance(e, FloorGranted):
            p = pending(e.user)
            if p is not None:
                p["outcome"] = "granted"
                # Was a tone playing to the whole group (the floor-idle tone of a release just
                # before)? Then its listeners hear a mix, on the mixer's clock.
                room = manager.rec(manager.user(e.user)).meeting
                p["room_tone"] = room is not None and any(
                    pb.target.meeting == room.id for pb in switch.media.mixer.playbacks.values()
                )
        elif isinstance(e, FloorQueued):
            for user, _ in e.queue:
                p = pending(user)
                if p is not None:
                    p["outcome"] = "queued"
        elif isinstance(e, FloorDenied):
            p = pending(e.user)
            if p is not None:
                p["outcome"] = "denied"

    manager.events.subscribe(on_event)
    t_setup = time.monotonic()
    flows = []
    for g in range(groups):
        group = [manager.user(f"g{g}m{m}") for m in range(members)]
        disp = manager.user(f"g{g}d")
        flows.append(manager.start(ptt_group, group, [disp], persistent=True, max_burst=30.0))

    def joined() -> bool:
        legs = {leg.user: leg.id for leg in switch.legs.values()}  # leg_of() scans every leg
        return all(u in legs and switch.meeting_of(legs[u]) is not None for u in ids)

    async with asyncio.timeout(120):
        while not joined():  # noqa: ASYNC110 - the state is spread over the switch
            await asyncio.sleep(0.05)
    setup_s = time.monotonic() - t_setup
    legs = {leg.user: leg.id for leg in switch.legs.values()}
    ports = {u: switch.media.leg_stats(legs[u]).local[1] for u in ids}
    # As a server should after start-up (see bench/sip_cps.py): keep the collector off the
    # long-lived objects, so a full collection does not stall the media clock.
    gc.collect()
    gc.freeze()
    gc.set_threshold(2000, 20, 1000)

    def handle(cmd: dict[str, Any]) -> None:
        if cmd["op"] == "report":
            reply(
                {
                    "requests": requests,
                    "engine": switch.media.metrics.as_dict(),
                    "legs": len(switch.legs),
                }
            )

    reply({"ports": ports, "setup_s": setup_s})
    try:
        await serve_commands(handle)
    finally:
        with contextlib.suppress(Exception):
            await manager.close()
        await switch.close()


# ---- the phones (child process) ----------------------------------------------------------------


@dataclass
class _Phone:
    """One member's RTP stream (sent from the shared socket to the member's leg)."""

    dest: tuple[str, int]
    ssrc: int
    seq: int
    ts0: int
    voice: bytes
    ts: int = 0
    frames: int = 0  # frames of the RTP clock since the start, at the last timestamp used
    talking: bool = False
    next_frame: float = 0.0

    def packet(
        self, pt: int, payload: bytes, *, marker: bool = False, ts: int | None = None
    ) -> bytes:
        self.seq = (self.seq + 1) & 0xFFFF
        b1 = (0x80 if marker else 0) | pt
        return struct.pack("!BBHII", 0x80, b1, self.seq, self.ts if ts is None else ts,
                           self.ssrc) + payload  # fmt: skip


@dataclass
class _Request:
    """One ``*`` press and who has heard the talker since."""

    user: int
    group: int
    t0: int  # CLOCK_REALTIME ns, just before the first event packet was sent
    closes: float  # monotonic: stop waiting for listeners then
    heard: dict[int, int] = field(default_factory=dict)  # listener -> rx time (ns)


@dataclass
class _Presser:
    """One finger on the PTT buttons of a group: press, talk, release, pause."""

    group: int
    next_at: float
    user: int | None = None  # who is pressing now


def _event(digit: int, *, end: bool, duration: int) -> bytes:
    return struct.pack("!BBH", digit, (0x80 if end else 0) | 10, duration)


STAR, POUND = 10, 11  # RFC 4733 event codes


def phones_main(cfg: dict[str, Any]) -> None:
    """The phones: JSON commands on stdin, JSON lines on stdout."""
    place(int(cfg["core"]), int(cfg["rt_priority"]))
    raise_fd_limit()
    rtp, rtcp = open_rtp_pairs(1, int(cfg["port_base"]))
    sock = rtp[0]
    sock.setblocking(False)

    reply({"port": sock.getsockname()[1]})
    for cmd in commands():
        if cmd["op"] == "run":
            reply({"result": _phones_run(sock, cmd, reply)})
    for s in rtp + rtcp:
        s.close()


def _phones_run(
    sock: socket.socket, cmd: dict[str, Any], emit: Callable[[Any], None]
) -> dict[str, Any]:
    rng = random.Random(int(cmd["seed"]))
    groups, members = int(cmd["groups"]), int(cmd["members"])
    per_group = members + 1
    ids = user_ids(groups, members)
    n_users = len(ids)
    ports = [int(cmd["ports"][u]) for u in ids]
    user_of_port = np.full(65536, -1, dtype=np.int64)
    user_of_port[ports] = np.arange(n_users)
    member_of = np.arange(n_users) % per_group
    refs = np.exp(-2j * np.pi * np.outer([talker_freq(m) for m in range(per_group)],
                                         np.arange(FRAME)) / 8000.0)  # fmt: skip
    voices = [bytes(tone_frame(talker_freq(m), TALK_AMP)) for m in range(per_group)]
    phones = [
        _Phone(
            (HOST, ports[u]),
            rng.getrandbits(32),
            rng.getrandbits(16),
            rng.getrandbits(32),
            voices[member_of[u]],
        )
        for u in range(n_users)
    ]
    # Waiting listeners: wait[u] is the open request listener u has not heard yet (two slots:
    # two fingers per group can have requests open at once).
    wait = np.full((n_users, 2), -1, dtype=np.int64)
    requests: list[_Request] = []
    open_requests: list[int] = []
    presses: dict[int, list[int]] = {u: [] for u in range(n_users)}  # user -> request ids
    later: list[tuple[float, int, bytes]] = []  # (due, user, packet): event updates and ends
    sent = failed = 0

    def send(u: int, data: bytes) -> None:
        nonlocal sent, failed
        try:
            sock.sendto(data, phones[u].dest)
            sent += 1
        except OSError:
            failed += 1

    def press(u: int, digit: int, now: float) -> int:
        """A key press as a phone sends it: start (marker), an update, the end three times."""
        p = phones[u]
        # The RTP clock runs while the phone is silent: a press gets a timestamp of its own
        # (a receiver tells presses apart by timestamp), later than anything sent before.
        p.frames = max(p.frames + 1, int((now - start) / 0.020))
        p.ts = (p.ts0 + FRAME * p.frames) & 0xFFFFFFFF
        ts = p.ts
        t0 = time.time_ns()
        send(u, p.packet(PT_EVENT, _event(digit, end=False, duration=160), marker=True, ts=ts))
        later.append((now + 0.020, u, p.packet(PT_EVENT, _event(digit, end=False, duration=320),
                                                ts=ts)))  # fmt: skip
        for _ in range(3):
            later.append((now + 0.040, u, p.packet(PT_EVENT, _event(digit, end=True, duration=480),
                                                    ts=ts)))  # fmt: skip
        return t0

    def talk(u: int, now: float) -> None:
        p = phones[u]
        send(u, p.packet(PT_PCMU, p.voice, marker=not p.talking))
        p.talking = True
        p.next_frame = now + 0.020

    seconds, warmup = float(cmd["seconds"]), float(cmd["warmup"])
    start = time.monotonic()
    deadline = start + warmup + seconds
    pressers = [_Presser(g, start + rng.uniform(0.2, 1.0)) for g in range(groups) for _ in range(2)]
    talking: set[int] = set()
    buf = np.zeros((512, 256), dtype=np.uint8)
    vec = MsgVector(buf, 256, None, control=True)
    fd = sock.fileno()
    received = 0
    gen_cpu0 = time.process_time()
    late = 0

    measure_from = 0
    while True:
        now = time.monotonic()
        if not measure_from and now >= start + warmup:
            measure_from = time.time_ns()
            emit({"mark": "start"})
        if now >= deadline and all(p.user is None for p in pressers) and not later:
            break
        # 1. the fingers
        for pr in pressers:
            if now < pr.next_at:
                continue
            if pr.user is None:
                if now >= deadline:
                    continue
                busy = {q.user for q in pressers if q.group == pr.group}
                base = pr.group * per_group
                # the dispatcher now and then, else a member
                u = base + members if rng.random() < 0.05 else base + rng.randrange(members)
                if u in busy:
                    pr.next_at = now + 0.05
                    continue
                t0 = press(u, STAR, now)
                talk(u, now)  # the voice starts with the press
                talking.add(u)
                rid = len(requests)
                requests.append(_Request(u, pr.group, t0, now + CENSOR_S))
                presses[u].append(rid)
                for listener in range(base, base + per_group):
                    if listener != u:
                        slot = 0 if wait[listener, 0] < 0 else 1
                        wait[listener, slot] = rid
                open_requests.append(rid)
                pr.user = u
                pr.next_at = now + rng.uniform(0.1, 0.6)
            else:
                u = pr.user
                talking.discard(u)
                phones[u].talking = False
                press(u, POUND, now)
                pr.user = None
                pr.next_at = now + rng.uniform(0.2, 1.0)
        # 2. voices and pending event packets
        for u in talking:
            p = phones[u]
            if now >= p.next_frame:
                if now - p.next_frame > 0.005:
                    late += 1
                p.ts = (p.ts + FRAME) & 0xFFFFFFFF
                p.frames += 1
                send(u, p.packet(PT_PCMU, p.voice))
                p.next_frame += 0.020
        if later:
            due = [x for x in later if x[0] <= now]
            if due:
                later = [x for x in later if x[0] > now]
                for _, u, data in due:
                    send(u, data)
        # 3. requests that waited long enough
        if open_requests and requests[open_requests[0]].closes <= now:
            still = []
            for rid in open_requests:
                if requests[rid].closes <= now:
                    wait[wait == rid] = -1
                else:
                    still.append(rid)
            open_requests = still
        # 4. what Baton sent
        while True:
            vec.reset_for_recv()
            r = recvmmsg(fd, vec)
            if r <= 0:
                break
            received += r
            names = vec.names_view[:r]
            src = names[:, 2].astype(np.int64) * 256 + names[:, 3]
            users = user_of_port[src]
            known = users >= 0
            cand = np.flatnonzero(known & ((wait[np.maximum(users, 0), 0] >= 0)
                                           | (wait[np.maximum(users, 0), 1] >= 0)))  # fmt: skip
            if len(cand):
                t_rx = vec.rx_times(r)
                lengths = vec.view[:r, 14]
                for slot in (0, 1):
                    rids = wait[users[cand], slot]
                    rows = cand[rids >= 0]
                    rids = rids[rids >= 0]
                    if not len(rows):
                        continue
                    ok = (buf[rows, 1] & 0x7F == PT_PCMU) & (lengths[rows] >= 12 + FRAME)
                    rows, rids = rows[ok], rids[ok]
                    if not len(rows):
                        continue
                    talkers = np.array([requests[i].user for i in rids.tolist()])
                    t0s = np.array([requests[i].t0 for i in rids.tolist()])
                    pcm = ULAW_DECODE[buf[rows, 12 : 12 + FRAME]].astype(np.float64)
                    amp = np.abs(np.sum(pcm * refs[member_of[talkers]], axis=1)) * 2 / FRAME
                    hit = (amp >= HEARD_AMP) & (t_rx[rows] > t0s)
                    for row, rid in zip(rows[hit].tolist(), rids[hit].tolist(), strict=True):
                        listener = int(users[row])
                        req = requests[rid]
                        if listener not in req.heard:
                            req.heard[listener] = int(t_rx[row])
                            wait[listener][wait[listener] == rid] = -1
            if r < vec.n:
                break
        # 5. sleep until something is due (or Baton's next packets arrive)
        nexts = [pr.next_at for pr in pressers]
        nexts += [phones[u].next_frame for u in talking]
        if later:
            nexts.append(min(x[0] for x in later))
        pause = min(nexts, default=now + 0.001) - time.monotonic()
        if pause > 0:
            select.select([fd], [], [], min(pause, 0.002))

    cpu = time.process_time() - gen_cpu0
    wall = time.monotonic() - start
    return {
        "requests": [
            {"user": ids[q.user], "t0": q.t0, "heard": {ids[k]: v for k, v in q.heard.items()}}
            for q in requests
        ],
        "presses": {ids[u]: rids for u, rids in presses.items() if rids},
        "measure_from_ns": measure_from,
        "packets_sent": sent,
        "send_failed": failed,
        "packets_received": received,
        "late_frames": late,
        "phones_cpu_pct": 100.0 * cpu / wall,
        "listeners_per_group": members,
    }


# ---- the orchestrator -------------------------------------------------------------------------


@dataclass
class MediaConfig:
    """One ``--media`` run (the smoke test makes a tiny one)."""

    groups: int = 100
    members: int = 20
    seconds: float = 30.0
    warmup: float = 2.0
    seed: int = 1
    rt_priority: int = 10  # SCHED_FIFO for Baton and the phones, as bench/media.py (0: no)
    rtp_ports: tuple[int, int] = BATON_PORTS
    phones_port_base: int = PHONES_PORT_BASE
    fanout: bool = True  # False: the engine mixes every listener (as before fan-out)


def run_media(cfg: MediaConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """One ``--media`` run; returns the result object."""
    sipp = shutil.which("sipp")
    if sipp is None:
        raise RuntimeError("sipp not found: install the Debian package sip-tester")
    if cfg.members + 1 > 35:
        raise ValueError("at most 34 members a group (each needs its own tone under 4 kHz)")
    ids = user_ids(cfg.groups, cfg.members)
    if 2 * len(ids) > cfg.rtp_ports[1] - cfg.rtp_ports[0]:
        raise ValueError(f"{len(ids)} legs do not fit Baton's RTP ports {cfg.rtp_ports}")
    baton_core, phones_core = pick_cores()
    me = str(Path(__file__).resolve())
    child_cfg = {"rt_priority": cfg.rt_priority}
    with tempfile.TemporaryDirectory(prefix="baton-ptt-") as tmp:
        phones = Child([sys.executable, me, "--child", "phones", json.dumps(
            child_cfg | {"core": phones_core, "port_base": cfg.phones_port_base})], "phones")  # fmt: skip
        baton: Any = None  # a Child
        uas: subprocess.Popen[bytes] | None = None
        try:
            phones_port = int(phones.read(15)["port"])
            scenario = Path(tmp) / "uas.xml"
            scenario.write_text(UAS_SCENARIO.replace("PHONES_PORT", str(phones_port)))
            sipp_port = free_port()
            with open(Path(tmp) / "sipp.log", "wb") as sipp_log:
                uas = subprocess.Popen(
                    [sipp, "-sf", str(scenario), "-i", HOST, "-p", str(sipp_port),
                     "-mp", str(free_port()), "-m", str(len(ids)), "-nostdin", "-trace_err",
                     "-timeout", f"{int(cfg.seconds + cfg.warmup + 300)}s"],
                    cwd=tmp, stdout=sipp_log, stderr=subprocess.STDOUT,
                    preexec_fn=die_with_parent,
                )  # fmt: skip
            deadline = time.monotonic() + 10
            while not port_bound(sipp_port):
                if time.monotonic() > deadline or uas.poll() is not None:
                    raise RuntimeError("SIPp did not start")
                time.sleep(0.02)
            baton = Child([sys.executable, me, "--child", "baton", json.dumps(child_cfg | {
                "core": baton_core, "groups": cfg.groups, "members": cfg.members,
                "sipp_port": sipp_port, "rtp_ports": list(cfg.rtp_ports),
                "fanout": cfg.fanout})], "baton")  # fmt: skip
            setup = baton.read(timeout=240)
            log(f"{len(ids)} calls up (groups dialled their members through SIPp) in "
                f"{setup['setup_s']:.1f} s; Baton on core {baton_core}, phones on core "
                f"{phones_core}")  # fmt: skip
            phones.send({"op": "run", "ports": setup["ports"], "groups": cfg.groups,
                         "members": cfg.members, "seconds": cfg.seconds, "warmup": cfg.warmup,
                         "seed": cfg.seed})  # fmt: skip
            assert phones.read(cfg.warmup + 30).get("mark") == "start"
            cpu0, wall0 = cpu_seconds(baton.pid), time.monotonic()
            engine0 = baton.request({"op": "report"})["engine"]
            result = phones.read(cfg.seconds + 60)["result"]
            cpu1, wall1 = cpu_seconds(baton.pid), time.monotonic()
            report = baton.request({"op": "report"}, timeout=60)
        finally:
            if baton is not None:
                baton.stop()
            phones.stop()
            if uas is not None and uas.poll() is None:
                uas.kill()  # by pid, through our own Popen
                uas.wait(timeout=5)
    out = analyse(cfg, result, report)
    engine = report["engine"]
    ticks = engine["ticks"] - engine0["ticks"]
    out |= {
        "baton_cpu_pct": round(100.0 * (cpu1 - cpu0) / (wall1 - wall0), 1),
        "engine_late_ticks_pct": round(
            100.0 * (engine["late_ticks"] - engine0["late_ticks"]) / max(1, ticks), 2
        ),
        "phones_cpu_pct": round(result["phones_cpu_pct"], 1),
        "setup_s": round(setup["setup_s"], 2),
        "legs": len(ids),
    }
    return out


def analyse(cfg: MediaConfig, result: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
    """Pair each press the phones made with what Baton made of it, and measure the grants."""
    phone_requests = result["requests"]
    baton_requests: dict[str, list[dict[str, Any]]] = report["requests"]
    per_group = cfg.members + 1
    ids = user_ids(cfg.groups, cfg.members)
    index = {u: i for i, u in enumerate(ids)}
    samples: list[float] = []  # (request, listener): ms
    clear: list[float] = []  # the same, for grants made while no tone played to the group
    last: list[float] = []  # per request: until every listener had it
    control: list[float] = []  # the "*" leaving the phone -> the speak join reaching the switch
    detect: list[float] = []  # the "*" leaving the phone -> Baton's DTMF event
    measured = preempting = queued = missed = revoked = unmatched = toned = 0
    for user, rids in result["presses"].items():
        seen = baton_requests.get(user, [])
        if len(seen) != len(rids):  # a press Baton did not see: this user's pairs are unsure
            unmatched += abs(len(seen) - len(rids))
            continue
        group = index[user] // per_group
        listeners = [ids[group * per_group + m] for m in range(per_group)]
        listeners.remove(user)
        for rid, outcome in zip(rids, seen, strict=True):
            req = phone_requests[rid]
            if req["t0"] < result["measure_from_ns"]:
                continue
            if outcome["outcome"] != "granted":
                queued += outcome["outcome"] == "queued"
                continue
            measured += 1
            preempting += bool(outcome.get("preempting"))
            t0 = req["t0"]
            got = [(req["heard"][u] - t0) / 1e6 for u in listeners if u in req["heard"]]
            samples += got
            if outcome.get("room_tone"):
                toned += 1
            else:
                clear += got
            if (
                len(got) < len(listeners)
                and outcome.get("t_revoked", t0 + 1e18) - t0 < CENSOR_S * 1e9
            ):
                revoked += 1  # taken back (a dispatcher) before every listener heard it
            else:
                missed += len(listeners) - len(got)
            if len(got) == len(listeners):
                last.append(max(got))
            detect.append((outcome["t_dtmf"] - t0) / 1e6)
            if "t_speak" in outcome:
                control.append((outcome["t_speak"] - t0) / 1e6)
    return {
        "floor_access_media_p50_ms": percentile_of(samples, 50),
        "floor_access_media_p99_ms": percentile_of(samples, 99),
        "floor_access_media_p95_ms": percentile_of(samples, 95),
        "floor_access_media_last_listener_p99_ms": percentile_of(last, 99),
        "floor_access_media_no_group_tone_p50_ms": percentile_of(clear, 50),
        "floor_access_media_no_group_tone_p99_ms": percentile_of(clear, 99),
        "floor_control_p50_ms": percentile_of(control, 50),
        "floor_control_p99_ms": percentile_of(control, 99),
        "dtmf_detect_p99_ms": percentile_of(detect, 99),
        "grants_measured": measured,
        "grants_by_preemption": preempting,
        "grants_during_group_tone": toned,
        "listener_samples": len(samples),
        "listeners_missed": missed,
        "grants_revoked_before_heard": revoked,
        "requests_queued": queued,
        "presses_unmatched": unmatched,
        "groups": cfg.groups,
        "members_per_group": cfg.members,
        "seconds": cfg.seconds,
        "mode": "media",
        "fanout": cfg.fanout,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run")
    parser.add_argument("--media", action="store_true",
                        help="end to end through the sip switch and the media engine")  # fmt: skip
    parser.add_argument("--groups", type=int, default=100)
    parser.add_argument("--members", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=None, help="length of the load")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-rt", action="store_true", help="media: no SCHED_FIFO")
    parser.add_argument("--no-fanout", action="store_true",
                        help="media: mix every listener (the engine before fan-out)")  # fmt: skip
    parser.add_argument("--child", choices=("baton", "phones"), help=argparse.SUPPRESS)
    parser.add_argument("child_cfg", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child = baton_main if args.child == "baton" else phones_main
        child(json.loads(args.child_cfg))
        return
    if args.media:
        seconds = args.seconds or (8.0 if args.quick else 30.0)
        cfg = MediaConfig(args.groups, args.members, seconds, seed=args.seed,
                          rt_priority=0 if args.no_rt else 10, fanout=not args.no_fanout)  # fmt: skip
        result = run_media(cfg)
        print(
            f"floor access with media (the RFC 4733 * leaving the phone → the talker's first "
            f"audio packet leaving Baton towards a listener), {cfg.groups} groups × "
            f"{cfg.members} members + a dispatcher, {seconds:g} s: p50 "
            f"{result['floor_access_media_p50_ms']} ms, p99 {result['floor_access_media_p99_ms']}"
            f" ms over {result['listener_samples']} listener samples of "
            f"{result['grants_measured']} grants ({result['requests_queued']} requests queued); "
            f"Baton at {result['baton_cpu_pct']} % of a core"
        )
        result["quick"] = args.quick
        print(json.dumps(result))
        return
    seconds = args.seconds or (5.0 if args.quick else 30.0)
    result = asyncio.run(run(args.groups, args.members, seconds, args.seed))
    print(
        f"floor access (idle floor → talker made a speaker), {args.groups} groups × "
        f"{args.members} members, {seconds:g} s: p50 {result['floor_access_p50_ms']} ms, "
        f"p99 {result['floor_access_p99_ms']} ms over {result['grants_measured']} grants "
        f"({result['requests_queued']} requests queued behind a talker)"
    )
    result["quick"] = args.quick
    print(json.dumps(result))


if __name__ == "__main__":
    main()
