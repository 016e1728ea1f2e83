"""Benchmark of browser legs in the media engine (issue "WebRTC positions", section Benchmarks).

Measures, in one run, Baton's ``MediaEngine`` alone in a child process pinned to one core:

  webrtc_legs_one_core   the most concurrent browser-profile legs (ICE-lite checks, DTLS-SRTP,
                         Opus both ways), each bridged to a G.711 phone leg, that the engine
                         carries with under 1 % bad frames (lost or late at the receivers, or
                         concealed/dropped by the engine's jitter buffers) and a core not
                         saturated; steps of ``--step`` legs up to ``--max``.
  opus_cpu_ratio         CPU per call "browser (Opus, SRTP) ↔ G.711 phone" divided by CPU per
                         call "G.711 phone ↔ G.711 phone" (PCMA ↔ PCMU), same run, same count:
                         what a browser position costs against a desk phone, as Baton carries
                         each (the phone call is relayed packet for packet; the browser call is
                         decrypted, decoded, mixed at 16 kHz, encoded and encrypted).
  added_latency_p99_ms   from a loud frame leaving the browser to its arrival at the phone
                         (p50 and p99 over markers at the largest clean step).

Processes: this script is the load generator (asyncio, one UDP socket per leg; the browser
side does a real STUN check with aioice's STUN, a real DTLS client handshake with pyOpenSSL,
and SRTP with pylibsrtp; the Opus payloads are encoded once beforehand with PyAV). The engine
runs in ``--child`` (a subprocess of this script, pinned to one core, SCHED_FIFO at a low
priority where allowed, as ``bench/media.py`` — the build machine is shared), driven over
its stdin/stdout with JSON lines; its CPU is its own ``time.process_time()``.

``python bench/webrtc.py`` (about a minute) or ``--quick``. Binds 127.0.0.1 only; the child is
stopped by its pid. The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import datetime
import json
import os
import platform
import socket
import struct
import sys
import time
from fractions import Fraction
from typing import Any

import av
import numpy as np
import pylibsrtp
from aioice import stun
from OpenSSL import SSL

from baton.switch.media import MediaEngine, g711
from baton.switch.media.webrtc import DtlsIdentity
from harness.procs import die_with_parent, place

PERIOD = 0.020
PORTS = (46000, 47999)
LOUD_EVERY = 25  # a marker (loud frame) every 0.5 s per leg
RT_PRIORITY = 10  # SCHED_FIFO, as bench/media.py (the machine is shared; see harness.procs.place)


# ---- the engine child -----------------------------------------------------------------------


async def child() -> None:
    die_with_parent()
    place(0, RT_PRIORITY)
    engine = MediaEngine(port_range=PORTS, host="127.0.0.1", rtp_timeout=None)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    legs: list[str] = []

    def reply(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    while line := await reader.readline():
        cmd = json.loads(line)
        op = cmd["op"]
        if op == "setup":
            out = []
            for i, spec in enumerate(cmd["calls"]):
                b, p = f"b{i}", f"p{i}"
                b_port = engine.allocate(b)[1]
                p_port = engine.allocate(p)[1]
                if spec["kind"] == "webrtc":
                    ufrag, pwd = f"u{i:07d}", f"{i:024d}"
                    engine.set_remote(
                        b, "127.0.0.1", spec["b"], codec="opus", payload_type=111,
                        webrtc=(ufrag, pwd, spec["fingerprint"]),
                    )  # fmt: skip
                else:
                    ufrag = pwd = ""
                    engine.set_remote(b, "127.0.0.1", spec["b"], payload_type=8)
                engine.set_remote(p, "127.0.0.1", spec["p"], payload_type=0)
                engine.bridge(b, p)
                legs += [b, p]
                out.append({"b": b_port, "p": p_port, "ufrag": ufrag, "pwd": pwd})
            reply({"calls": out, "fingerprint": engine.dtls_fingerprint})
        elif op == "stats":
            m = engine.metrics
            reply({
                "cpu": time.process_time(), "late_ticks": m.late_ticks,
                "skipped": m.skipped_ticks, "out": m.packets_out,
                "lost": m.lost_frames, "late": m.late_frames, "dropped": m.dropped_frames,
                "secure": sum(engine.secure(leg) for leg in legs if leg.startswith("b")
                              and engine._legs[leg].webrtc is not None),
            })  # fmt: skip
        elif op == "clear":
            for leg in legs:
                engine.release(leg)
            legs.clear()
            reply({"ok": True})
    await engine.close()


# ---- the generator --------------------------------------------------------------------------


def opus_payloads() -> tuple[list[bytes], bytes]:
    """A quiet tone's Opus packets (a loop of 50) and one loud packet (the marker)."""
    ctx = av.CodecContext.create("libopus", "w")
    assert isinstance(ctx, av.AudioCodecContext)
    ctx.sample_rate, ctx.layout, ctx.format = 48000, "stereo", "s16"
    ctx.time_base, ctx.bit_rate = Fraction(1, 48000), 32000
    ctx.open()
    out: list[bytes] = []
    for n in range(52):
        t = (np.arange(960) + n * 960) / 48000
        amp = 12000 if n == 51 else 300
        mono = (amp * np.sin(2 * np.pi * 700 * t)).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(np.repeat(mono, 2).reshape(1, -1), format="s16",
                                           layout="stereo")  # fmt: skip
        frame.sample_rate, frame.pts = 48000, n * 960
        out += [bytes(p) for p in ctx.encode(frame)]
    return out[:50], out[-1]


class Call:
    """One call's two generator sockets: the browser's (SRTP, Opus) and the phone's (PCMU)."""

    def __init__(self, index: int, kind: str) -> None:
        self.index, self.kind = index, kind
        self.b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.p = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for s in (self.b, self.p):
            s.bind(("127.0.0.1", 0))
            s.setblocking(False)
        self.b_dest: tuple[str, int] = ("127.0.0.1", 0)
        self.p_dest: tuple[str, int] = ("127.0.0.1", 0)
        self.tx: pylibsrtp.Session | None = None
        self.rx: pylibsrtp.Session | None = None
        self.seq = [0, 0]
        self.got = [0, 0]  # packets received: at the browser, at the phone
        self.sent = [0, 0]
        self.marks: list[float] = []  # send times of markers not yet heard
        self.delays: list[float] = []
        self.fail = 0


def dtls_client(identity: DtlsIdentity) -> SSL.Connection:
    ctx = SSL.Context(SSL.DTLS_METHOD)
    ctx.set_verify(SSL.VERIFY_PEER, lambda *_: True)
    ctx.use_certificate(identity.cert)
    ctx.use_privatekey(identity.key)
    ctx.set_tlsext_use_srtp(b"SRTP_AES128_CM_SHA1_80")
    conn = SSL.Connection(ctx, None)
    conn.set_connect_state()
    return conn


async def handshake(call: Call, ufrag: str, pwd: str, identity: DtlsIdentity) -> None:
    """ICE check, then DTLS as the client, then the SRTP sessions."""
    loop = asyncio.get_running_loop()
    msg = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
    msg.attributes["USERNAME"] = f"{ufrag}:gen"
    msg.attributes["USE-CANDIDATE"] = None
    msg.attributes["ICE-CONTROLLING"] = 1
    msg.attributes["PRIORITY"] = 1
    msg.add_message_integrity(pwd.encode())
    msg.add_fingerprint()
    await loop.sock_sendto(call.b, bytes(msg), call.b_dest)
    await asyncio.wait_for(loop.sock_recv(call.b, 2048), 5)
    conn = dtls_client(identity)
    while True:
        with contextlib.suppress(SSL.WantReadError):
            conn.do_handshake()
            break
        with contextlib.suppress(SSL.WantReadError):
            while data := conn.bio_read(1500):
                await loop.sock_sendto(call.b, data, call.b_dest)
        conn.bio_write(await asyncio.wait_for(loop.sock_recv(call.b, 2048), 5))
    with contextlib.suppress(SSL.WantReadError):
        while data := conn.bio_read(1500):
            await loop.sock_sendto(call.b, data, call.b_dest)
    m = conn.export_keying_material(b"EXTRACTOR-dtls_srtp", 60)
    client = m[0:16] + m[32:46]
    server = m[16:32] + m[46:60]
    call.tx = pylibsrtp.Session(pylibsrtp.Policy(client, pylibsrtp.Policy.SSRC_ANY_OUTBOUND))
    call.rx = pylibsrtp.Session(pylibsrtp.Policy(server, pylibsrtp.Policy.SSRC_ANY_INBOUND))


async def run_step(proc: asyncio.subprocess.Process, kind: str, n: int, seconds: float,
                   identity: DtlsIdentity, opus: tuple[list[bytes], bytes]) -> dict[str, Any]:  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None

    async def ask(obj: dict[str, Any]) -> dict[str, Any]:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write((json.dumps(obj) + "\n").encode())
        await proc.stdin.drain()
        answer: dict[str, Any] = json.loads(await proc.stdout.readline())
        return answer

    calls = [Call(i, kind) for i in range(n)]
    spec = [{"kind": kind, "b": c.b.getsockname()[1], "p": c.p.getsockname()[1],
             "fingerprint": identity.fingerprint} for c in calls]  # fmt: skip
    setup = await ask({"op": "setup", "calls": spec})
    for c, s in zip(calls, setup["calls"], strict=True):
        c.b_dest, c.p_dest = ("127.0.0.1", s["b"]), ("127.0.0.1", s["p"])
        if kind == "webrtc":
            await handshake(c, s["ufrag"], s["pwd"], identity)
    loop = asyncio.get_running_loop()
    quiet, loud = opus
    pcmu = g711.ulaw_encode(
        (300 * np.sin(2 * np.pi * 400 * np.arange(160) / 8000)).astype(np.int16)
    )
    pcma = g711.alaw_encode(
        (300 * np.sin(2 * np.pi * 400 * np.arange(160) / 8000)).astype(np.int16)
    )

    def on_b(c: Call) -> None:
        with contextlib.suppress(BlockingIOError):
            data = c.b.recv(2048)
            if len(data) <= 12 or 200 <= data[1] <= 204:
                return  # (S)RTCP
            if c.rx is not None:
                try:
                    c.rx.unprotect(data)
                except pylibsrtp.Error:
                    c.fail += 1
                    return
            c.got[0] += 1

    def on_p(c: Call) -> None:
        with contextlib.suppress(BlockingIOError):
            data = c.p.recv(2048)
            if len(data) <= 12 or 72 <= (data[1] & 0x7F) <= 76:
                return
            c.got[1] += 1
            if c.marks and g711.ULAW_TO_LINEAR[np.frombuffer(data[12:], np.uint8)].std() > 2000:
                c.delays.append(time.time() - c.marks.pop(0))
                c.marks.clear()

    for c in calls:
        loop.add_reader(c.b.fileno(), on_b, c)
        loop.add_reader(c.p.fileno(), on_p, c)
    start = loop.time()
    warm = 1.0
    before: dict[str, Any] = {}
    total = int((warm + seconds) / PERIOD)
    for tick in range(total):
        if tick == int(warm / PERIOD):
            before = await ask({"op": "stats"})
            for c in calls:
                c.got, c.sent = [0, 0], [0, 0]
                c.delays.clear()
        for c in calls:
            marker = kind == "webrtc" and tick % LOUD_EVERY == c.index % LOUD_EVERY
            if kind == "webrtc":
                payload = loud if marker else quiet[tick % len(quiet)]
                hdr = struct.pack("!BBHII", 0x80, 111, tick & 0xFFFF, tick * 960, 1000 + c.index)
                assert c.tx is not None
                c.b.sendto(c.tx.protect(hdr + payload), c.b_dest)
                if marker:
                    c.marks = [time.time()]
            else:
                hdr = struct.pack("!BBHII", 0x80, 8, tick & 0xFFFF, tick * 160, 1000 + c.index)
                c.b.sendto(hdr + pcma, c.b_dest)
            hdr = struct.pack("!BBHII", 0x80, 0, tick & 0xFFFF, tick * 160, 5000 + c.index)
            c.p.sendto(hdr + pcmu, c.p_dest)
            c.sent[0] += 1
            c.sent[1] += 1
        await asyncio.sleep(max(0.0, start + (tick + 1) * PERIOD - loop.time()))
    await asyncio.sleep(0.2)
    after = await ask({"op": "stats"})
    for c in calls:
        loop.remove_reader(c.b.fileno())
        loop.remove_reader(c.p.fileno())
    await ask({"op": "clear"})
    for c in calls:
        c.b.close()
        c.p.close()
    # What the receivers should have had: one packet a leg every 20 ms of the window (the
    # engine sends on its own clock, relayed or mixed); what they missed is bad, and so is
    # every frame the engine's jitter buffers lost, played late or dropped.
    expected = 2 * n * round(seconds / PERIOD)
    sent = sum(sum(c.sent) for c in calls)
    got = sum(sum(c.got) for c in calls)
    engine_bad = sum(after[k] - before[k] for k in ("lost", "late", "dropped"))
    bad = max(0, expected - got) + engine_bad
    delays = sorted(d for c in calls for d in c.delays)
    cpu = after["cpu"] - before["cpu"]
    return {
        "kind": kind, "legs": n, "cpu_pct": round(100 * cpu / seconds, 1),
        "cpu_ms_per_call_s": round(1000 * cpu / seconds / n, 3),
        "bad_pct": round(100 * bad / max(1, expected), 2), "sent": sent,
        "skipped_ticks": after["skipped"] - before["skipped"], "late_ticks": after["late_ticks"] - before["late_ticks"],
        "secure": after["secure"],
        "got_browser_pct": round(100 * sum(c.got[0] for c in calls) / max(1, sum(c.sent[0] for c in calls)), 1),
        "got_phone_pct": round(100 * sum(c.got[1] for c in calls) / max(1, sum(c.sent[1] for c in calls)), 1),
        "engine_bad": engine_bad,
        "srtp_fail": sum(c.fail for c in calls),
        "gen_late": round(loop.time() - start - (warm + seconds), 2),
        "delay_p50_ms": round(1000 * delays[len(delays) // 2], 1) if delays else None,
        "delay_p99_ms": round(1000 * delays[int(len(delays) * 0.99)], 1) if delays else None,
    }  # fmt: skip


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short steps, fewer of them")
    parser.add_argument("--step", type=int, default=20)
    parser.add_argument("--max", type=int, default=200)
    parser.add_argument("--ratio-legs", type=int, default=20)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--profile", metavar="FILE", help="write the engine's cProfile here")
    args = parser.parse_args()
    if args.child:
        if args.profile:  # the engine's own profile (cProfile), written when it stops
            profiler = cProfile.Profile()
            profiler.enable()
            try:
                await child()
            finally:
                profiler.disable()
                profiler.dump_stats(args.profile)
        else:
            await child()
        return
    policy = place(1, RT_PRIORITY)
    seconds = 2.0 if args.quick else 4.0
    top = min(args.max, 100 if args.quick else args.max)
    identity = DtlsIdentity()
    opus = opus_payloads()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--child", *(["--profile", args.profile] if args.profile else []),
        stdin=asyncio.subprocess.PIPE, stderr=None,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    results: list[dict[str, Any]] = []
    try:
        ratio_n = min(args.ratio_legs, top)
        g = await run_step(proc, "g711", ratio_n, seconds, identity, opus)
        w = await run_step(proc, "webrtc", ratio_n, seconds, identity, opus)
        print(json.dumps(g))
        print(json.dumps(w))
        best: dict[str, Any] | None = w if w["bad_pct"] < 1 and w["cpu_pct"] < 90 else None
        n = ratio_n + args.step
        while best is not None and n <= top:  # up in steps until a step is not clean
            r = await run_step(proc, "webrtc", n, seconds, identity, opus)
            print(json.dumps(r))
            results.append(r)
            if r["bad_pct"] >= 1 or r["cpu_pct"] >= 90 or r["secure"] < n:
                break
            best = r
            n += args.step
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    summary = {
        "bench": "webrtc",
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()} {os.cpu_count()} cpu, Python {platform.python_version()}",
        "scheduling": policy,
        "webrtc_legs_one_core": best["legs"] if best else 0,
        "webrtc_legs_tried_max": top,
        "opus_cpu_ratio": round(w["cpu_ms_per_call_s"] / max(1e-9, g["cpu_ms_per_call_s"]), 1),
        "browser_call_cpu_ms_per_s": w["cpu_ms_per_call_s"],
        "phone_call_cpu_ms_per_s": g["cpu_ms_per_call_s"],
        "added_latency_p50_ms": (best or w)["delay_p50_ms"],
        "added_latency_p99_ms": (best or w)["delay_p99_ms"],
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    asyncio.run(main())
