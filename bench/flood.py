"""SIP flood benchmark (issue 14, finding 8): do legitimate calls still get through while
garbage INVITEs pour in?

Legitimate traffic is the SIP signalling benchmark's (``bench/sip_cps.py``): a SIPp UAC (static
contacts) calls a SIPp UAS through Baton — the core's ``inbound_call`` flow for every call, RTP
ports allocated for both legs — at ``--rate`` calls/s. Meanwhile a second process (the
*flooder*, on another socket of 127.0.0.1) sends ``--flood`` garbage INVITE/s for the same
``--seconds``: 80 % well-formed INVITEs from unknown callers without credentials (each is
challenged), 10 % with forged digest credentials, 10 % malformed bytes. Everything is bounded
in count (rate × seconds) and time, on 127.0.0.1.

Run ``python bench/flood.py`` (or ``--quick``); the last line of output is one JSON object:
``legit_success_pct`` (target ≥ 99), the legitimate calls, failures and SIPp retransmissions,
what the flooder sent and what it was answered, and Baton's counters (challenges, 503s, the
loop lag) and memory (peak RSS) — see ``definitions`` in the object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness.net import free_port
from sip_cps import baton, uac_files, uas_scenario
from sip_cps import step as legit_step

FLOODER = r"""
import os, random, socket, sys, time
target = ("127.0.0.1", int(sys.argv[1])); rate = int(sys.argv[2]); seconds = float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); s.setblocking(False)
me = s.getsockname()[1]
def invite(i, auth):
    cid = os.urandom(8).hex()
    extra = ('Authorization: Digest username="caller%d", realm="baton", nonce="%s", '
             'uri="sip:2%04d@127.0.0.1", response="%s"\r\n' % (i % 1000, os.urandom(16).hex(),
             i % 1000, os.urandom(16).hex())) if auth else ""
    sdp = "v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
    return ("INVITE sip:2%04d@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK%s;rport\r\n"
            "From: <sip:eve%d@127.0.0.1>;tag=%s\r\nTo: <sip:2%04d@127.0.0.1>\r\nCall-ID: %s\r\n"
            "CSeq: 1 INVITE\r\nContact: <sip:eve@127.0.0.1:%d>\r\nMax-Forwards: 70\r\n%s"
            "Content-Type: application/sdp\r\nContent-Length: %d\r\n\r\n%s"
            % (i % 1000, me, cid, i, cid[:8], i % 1000, cid, me, extra, len(sdp), sdp)).encode()
sent = answered = 0; statuses = {}
start = time.perf_counter(); total = int(rate * seconds); tick = 0.005
while sent < total:
    due = min(total, int((time.perf_counter() - start) * rate) + 1)
    while sent < due:
        r = random.random()
        if r < 0.1:
            data = os.urandom(random.randrange(20, 600))
        elif r < 0.2:
            data = invite(sent, True)
        else:
            data = invite(sent, False)
        try:
            s.sendto(data, target)
        except OSError:
            pass
        sent += 1
    while True:
        try:
            reply = s.recv(65536)
        except OSError:
            break
        answered += 1
        code = reply[8:11].decode(errors="replace")
        statuses[code] = statuses.get(code, 0) + 1
    time.sleep(tick)
end = time.perf_counter() + 2
while time.perf_counter() < end:
    try:
        reply = s.recv(65536)
    except OSError:
        time.sleep(0.01); continue
    answered += 1
    code = reply[8:11].decode(errors="replace")
    statuses[code] = statuses.get(code, 0) + 1
import json
print(json.dumps({"sent": sent, "seconds": round(time.perf_counter() - start - 2, 2),
                  "answered": answered, "statuses": statuses}))
"""


async def run(args: argparse.Namespace) -> dict[str, Any]:
    sipp = shutil.which("sipp")
    if sipp is None:
        raise SystemExit("sipp not found (Debian package sip-tester)")
    seconds = args.seconds or (3.0 if args.quick else 20.0)
    with tempfile.TemporaryDirectory(prefix="baton-flood-") as tmp:
        folder = Path(tmp)
        uas, uac = uas_scenario(sipp, folder), uac_files(folder)
        uac_port, uas_port, baton_port = (free_port() for _ in range(3))
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        async with baton(baton_port, uac_port, uas_port) as manager:
            switch = manager.switch
            lag_max = 0.0

            async def watch_lag() -> None:
                nonlocal lag_max
                while True:
                    lag_max = max(lag_max, switch.transport.lag)  # type: ignore[attr-defined]
                    await asyncio.sleep(0.05)

            watcher = asyncio.create_task(watch_lag())
            flooder = await asyncio.create_subprocess_exec(
                sys.executable, "-c", FLOODER, str(baton_port), str(args.flood), str(seconds),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            cpu0 = time.process_time()
            t0 = time.monotonic()
            try:
                legit = await legit_step(sipp, f"127.0.0.1:{baton_port}", uac_port, uas_port, uas,
                                         uac, args.rate, seconds, args.hold, folder)  # fmt: skip
                async with asyncio.timeout(seconds + 30):
                    out, err = await flooder.communicate()
            finally:
                if flooder.returncode is None:
                    flooder.kill()  # only the process this benchmark started
                    await flooder.wait()
                watcher.cancel()
            wall = time.monotonic() - t0
            cpu = time.process_time() - cpu0
            metrics = switch.metrics()
        flood = json.loads(out.decode().strip().splitlines()[-1]) if out.strip() else {}
        if not flood:
            print(err.decode(errors="replace"), file=sys.stderr)
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    pct = 100.0 * legit.successful / legit.calls if legit.calls else 0.0
    return {
        "legit_success_pct": round(pct, 2),
        "legit_calls": legit.calls,
        "legit_successful": legit.successful,
        "legit_failed": legit.failed,
        "legit_retransmissions": legit.retransmissions,
        "legit_rate": args.rate,
        "flood_rate": args.flood,
        "flood_sent": flood.get("sent"),
        "flood_seconds": flood.get("seconds"),
        "flood_answered": flood.get("answered"),
        "flood_statuses": flood.get("statuses"),
        "seconds": seconds,
        "baton_cpu_pct": round(100 * cpu / wall, 1) if wall else None,
        "baton_challenges": metrics.get("auth_challenges_total"),
        "baton_overload_503": metrics.get("overload_503_total"),
        "baton_max_loop_lag_ms": round(lag_max * 1000, 1),
        "baton_peak_rss_mb": round(rss_after / 1024, 1),
        "baton_peak_rss_growth_mb": round((rss_after - rss_before) / 1024, 1),
        "definitions": {
            "legit_success_pct": "SIPp calls that completed (INVITE, 200, ACK, BYE, 200) out of "
            "those placed while the flood ran (target ≥ 99)",
            "legit_retransmissions": "SIPp retransmissions, UAC and UAS (0 = no reply was late)",
            "flood_statuses": "what Baton answered the flooder, by status",
            "baton_max_loop_lag_ms": "the largest event-loop lag Baton measured (sampled every "
            "50 ms)",
        },
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 s instead of 20 s")
    parser.add_argument("--seconds", type=float, default=0.0, help="length of the run")
    parser.add_argument("--rate", type=int, default=50, help="legitimate calls per second")
    parser.add_argument("--flood", type=int, default=2000, help="garbage INVITEs per second")
    parser.add_argument("--hold", type=int, default=100, help="legitimate call hold (ms)")
    print(json.dumps(asyncio.run(run(parser.parse_args()))))
