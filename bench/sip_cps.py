"""SIP signalling benchmark (issue "Real SIP signalling", Benchmark): call setup rate.

SIPp UAC → B2BUA → SIPp UAS, short calls (``--hold`` ms, no media), all on 127.0.0.1. The UAC
calls from 1,000 callers to 1,000 numbers in turn (a CSV), since a Baton user has one live leg
at a time. Two B2BUAs
in the same run, under the same load:

* **Baton**: the core (:class:`~baton.core.UserManager`) driving the ``sip`` switch. The UAC is a
  user identified by its static contact; it dials the UAS's number, and a minimal numbering plan
  starts the library's ``inbound_call`` for it — ring the callee, answer the caller, bridge them,
  settle a P2P — so every call is a real flow, with RTP ports allocated in the media engine
  for both legs. The UAC hangs up; the P2P hangs up the UAS.
* **sippy** ``b2bua_simple`` (PyPI ``sippy``), the peer: it forwards each INVITE to the UAS.

Baton's process freezes its start-up objects out of the garbage collector and makes full
collections rare (``gc.freeze()``, ``gc.set_threshold(2000, 20, 1000)``), as a server should;
``--default-gc`` measures it with CPython's defaults instead. sippy runs as it ships.

For each, the rate climbs (×2 from ``--start``) until a rate is not *clean*, then bisects: a
step is clean when every call of the UAC succeeded and neither SIPp retransmitted anything
(``Retransmissions`` of the UAC and UAS, from ``-trace_stat``), and a rate is clean when two of
up to three steps at it are. The figure is the highest clean rate. The UAS scenario is SIPp's built-in ``uas`` (dumped with ``sipp -sd uas``) without
``;transport=[transport]`` in Contact and without the 180, which sippy needs (docs/benchmarks.md §Peers), and
without its closing pause.

Each B2BUA runs on one core and SIPp on the other, all SCHED_FIFO at ``--rt`` (10; 0 for the
normal scheduler), and the Baton and sippy searches take turns, one step each, so that both meet
the same machine.

Run ``python bench/sip_cps.py`` (or ``--quick``); the last line of output is one JSON object:
``baton_cps``, ``sippy_cps``, ``cps_ratio`` (target ≥ 2) and the steps. sippy must be installed
(``pip install sippy``); without it ``sippy_cps`` and ``cps_ratio`` are ``null``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import gc
import json
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from baton.core import Leg, User, UserManager
from baton.core.port import Cause, InboundCall
from baton.flows import inbound_call
from baton.switch.sip import create_switch
from harness.net import free_port, wait_bound
from harness.procs import pick_cores, place

USERS = 1000  # callers and callees each: a user has one live leg, so calls need many users

UAC_SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<!-- SIPp's built-in uac, with the caller (field0) and the dialled number (field1) from -inf. -->
<scenario name="uac from csv">
  <send retrans="500">
    <![CDATA[
      INVITE sip:[field1]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:[field0]@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[field1]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: sip:[field0]@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rtd="true"/>
  <send>
    <![CDATA[
      ACK sip:[field1]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:[field0]@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <pause/>
  <send retrans="500">
    <![CDATA[
      BYE sip:[field1]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:[field0]@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" crlf="true"/>
</scenario>
"""


def uac_files(folder: Path) -> tuple[Path, Path]:
    """The UAC scenario and its CSV: call *i* is from ``caller<i>`` to number ``2<i>``."""
    scenario = folder / "uac.xml"
    scenario.write_text(UAC_SCENARIO)
    table = folder / "calls.csv"
    table.write_text("SEQUENTIAL\n" + "".join(f"caller{i};{20000 + i};\n" for i in range(USERS)))
    return scenario, table


@dataclass(frozen=True)
class _User:
    id: str
    numbers: tuple[str, ...] = ()
    password: str = "unused"
    contact: str | None = None
    max_priority: int | None = None


@dataclass
class Step:
    rate: int
    calls: int
    ok: bool
    successful: int
    failed: int
    retransmissions: int
    seconds: float
    #: CPU time of Baton's process during the step (None for sippy, a process of its own)
    cpu_seconds: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def uas_scenario(sipp: str, folder: Path) -> Path:
    """SIPp's built-in UAS, made acceptable to sippy: no 180, no transport in Contact, no
    closing pause."""
    # sipp -sd prints the scenario and exits with status 99.
    text = subprocess.run([sipp, "-sd", "uas"], capture_output=True, text=True).stdout
    if "<scenario" not in text:
        raise RuntimeError("sipp -sd uas printed no scenario")
    text = text.replace(";transport=[transport]", "")
    text = re.sub(r"\s*<send>\s*<!\[CDATA\[\s*SIP/2\.0 180 Ringing.*?\]\]>\s*</send>", "", text,
                  count=1, flags=re.S)  # fmt: skip
    text = re.sub(r"\s*<pause milliseconds=\"4000\"/>", "", text)
    path = folder / "uas.xml"
    path.write_text(text)
    return path


def read_stats(path: Path) -> dict[str, int]:
    """The last (cumulative) row of a SIPp ``-trace_stat`` CSV."""
    with path.open(newline="") as f:
        rows = list(csv.reader(f, delimiter=";"))
    if len(rows) < 2:
        return {}
    header, last = rows[0], rows[-1]
    out: dict[str, int] = {}
    for name, value in zip(header, last, strict=False):
        if name.endswith("(C)"):
            with contextlib.suppress(ValueError):
                out[name[:-3]] = int(value)
    return out


# Where SIPp runs: (core, SCHED_FIFO priority), set by main() from --rt; None leaves SIPp where
# this process is.
_SIPP_PLACE: tuple[int, int] | None = None


def _place_sipp() -> None:
    """preexec_fn of SIPp: the load generator's core and priority."""
    if _SIPP_PLACE is not None:
        place(*_SIPP_PLACE)


async def run_sipp(sipp: str, args: Sequence[str], cwd: Path, seconds: float) -> int:
    proc = await asyncio.create_subprocess_exec(
        sipp, *args, "-nostdin", "-trace_stat", "-fd", "1",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, cwd=cwd,
        preexec_fn=_place_sipp,
    )  # fmt: skip
    try:
        async with asyncio.timeout(seconds):
            return await proc.wait()
    except TimeoutError:
        return -1
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()  # only the process this benchmark started
            await proc.wait()


async def step(
    sipp: str, target: str, uac_port: int, uas_port: int, uas: Path, uac: tuple[Path, Path],
    rate: int, seconds: float, hold_ms: int, folder: Path,
) -> Step:  # fmt: skip
    """One load step: ``rate`` calls/s for ``seconds`` through the B2BUA at ``target``."""
    calls = max(10, int(rate * seconds))
    work = folder / f"r{rate}-{time.monotonic_ns()}"
    (work / "uas").mkdir(parents=True)
    (work / "uac").mkdir()
    limit = seconds + hold_ms / 1000 + 20
    uas_run = asyncio.create_task(run_sipp(sipp, [
        "-sf", str(uas), "-i", "127.0.0.1", "-p", str(uas_port), "-m", str(calls),
        "-timeout", f"{int(limit)}s",
    ], work / "uas", limit + 5))  # fmt: skip
    try:
        await wait_bound(uas_port)
        t0 = time.monotonic()
        uac_status = await run_sipp(sipp, [
            target, "-sf", str(uac[0]), "-inf", str(uac[1]), "-i", "127.0.0.1", "-p", str(uac_port),
            "-r", str(rate), "-m", str(calls), "-d", str(hold_ms), "-recv_timeout", "10000",
            "-timeout", f"{int(limit)}s", "-l", str(max(1000, rate * 10)),
        ], work / "uac", limit + 5)  # fmt: skip
        elapsed = time.monotonic() - t0
        try:  # calls that never reached the UAS would keep it waiting until its -timeout
            uas_status = await asyncio.wait_for(uas_run, hold_ms / 1000 + 5)
        except TimeoutError:
            uas_status = -1
    finally:
        if not uas_run.done():
            uas_run.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await uas_run
    uac_stats = read_stats(next((work / "uac").glob("*_.csv"), work / "none"))
    uas_stats = read_stats(next((work / "uas").glob("*_.csv"), work / "none"))
    successful = uac_stats.get("SuccessfulCall", 0)
    failed = uac_stats.get("FailedCall", 0)
    retrans = uac_stats.get("Retransmissions", 0) + uas_stats.get("Retransmissions", 0)
    ok = (
        uac_status == 0 and uas_status == 0 and failed == 0 and successful == calls and retrans == 0
    )
    shutil.rmtree(work, ignore_errors=True)
    return Step(rate, calls, ok, successful, failed, retrans, round(elapsed, 2))


async def search(
    run: Callable[[int], Awaitable[Step]], start: int, ceiling: int, bisect: int, name: str = ""
) -> tuple[int, list[Step]]:
    """Double the rate until a step fails, then bisect ``bisect`` times; the best clean rate.

    Every rate is decided by a majority of three steps (two clean, or two not clean; the third
    only runs when the first two disagree): one stray step — a scheduling hiccup on a shared
    machine, or a lucky quiet moment — must not decide the figure either way, for either
    B2BUA."""
    steps: list[Step] = []

    async def clean(rate: int) -> bool:
        votes = {True: 0, False: 0}
        while max(votes.values()) < 2:
            s = await run(rate)
            steps.append(s)
            votes[s.ok] += 1
            print(f"  {name}{rate:5d} calls/s: {'clean' if s.ok else 'NOT clean'} "
                  f"({s.successful}/{s.calls} ok, {s.failed} failed, {s.retransmissions} retrans)",
                  file=sys.stderr, flush=True)  # fmt: skip
        return votes[True] == 2

    good, bad = 0, None
    rate = start
    while rate <= ceiling:
        if not await clean(rate):
            bad = rate
            break
        good = rate
        rate *= 2
    if bad is None:
        return good, steps
    for _ in range(bisect):
        mid = (good + bad) // 2
        if mid <= good or mid >= bad:
            break
        if await clean(mid):
            good = mid
        else:
            bad = mid
    return good, steps


def _router(manager: UserManager, caller: User, leg: Leg, ev: InboundCall) -> None:
    callee = manager.by_number(ev.to)
    if callee is None or callee is caller:
        manager.spawn(manager.switch.hangup(leg.id, Cause.UNREACHABLE), f"refuse:{leg.id}")
        return
    manager.start(inbound_call, caller, callee)


@contextlib.asynccontextmanager
async def baton(
    port: int, uac_port: int, uas_port: int, *, tune_gc: bool = True
) -> AsyncIterator[UserManager]:
    # Every caller is hosted at the UAC's address (the From user says which one calls),
    # every callee at the UAS's.
    users = [_User(f"caller{i}", (str(10000 + i),), contact=f"sip:caller{i}@127.0.0.1:{uac_port}")
             for i in range(USERS)]  # fmt: skip
    users += [_User(f"callee{i}", (str(20000 + i),), contact=f"sip:callee{i}@127.0.0.1:{uas_port}")
              for i in range(USERS)]  # fmt: skip
    switch = create_switch(
        {"listen": [f"udp:127.0.0.1:{port}"], "rtp_ports": "50000-59999", "rtp_timeout": 0,
         "session_expires": 0},
        users,
    )  # fmt: skip
    manager = UserManager(switch, history=1000)
    for u in users:
        manager.add_user(User(u.id, numbers=u.numbers))
    manager.router = _router
    await switch.start()
    if tune_gc:
        # The deployment setting for a latency-bound asyncio server: the objects built at
        # start-up (modules, users, bindings) leave the collector's view, and full collections
        # become rare. With CPython's defaults a full collection of this process stalls the
        # loop for 100-300 ms under load - longer than SIP's T1 (500 ms) allows at high rates.
        gc.collect()
        gc.freeze()
        gc.set_threshold(2000, 20, 1000)
    try:
        yield manager
    finally:
        await manager.close()
        await switch.close()
        if tune_gc:
            gc.unfreeze()
            gc.set_threshold(*_GC_DEFAULTS)


_GC_DEFAULTS = gc.get_threshold()


def sippy_path() -> str | None:
    """sippy's ``b2bua_simple``, on the PATH or beside this Python."""
    return shutil.which("b2bua_simple") or shutil.which(
        "b2bua_simple", path=str(Path(sys.executable).parent)
    )


@contextlib.asynccontextmanager
async def sippy(port: int, uas_port: int) -> AsyncIterator[None]:
    exe = sippy_path()
    assert exe is not None
    proc = await asyncio.create_subprocess_exec(
        exe, "-f", "-l", "127.0.0.1", "-p", str(port), "-n", f"127.0.0.1:{uas_port}",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await wait_bound(port)
        yield
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()  # only the process this benchmark started
            try:
                async with asyncio.timeout(5):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def cpu_per_call(rate: int, run: Callable[[int], Awaitable[Step]]) -> dict[str, Any]:
    """One step at a fixed ``rate`` through Baton, and the CPU Baton's process spent per call.

    Baton runs in this process and SIPp in child processes, so this process's own CPU time
    (user + system, children excluded) during the step is Baton's. Far less sensitive to a busy
    machine than the clean rate: compare two trees by running both in turn, several times
    (docs/benchmarks.md).
    """
    done = await run(rate)
    assert done.cpu_seconds is not None
    cpu = done.cpu_seconds
    print(f"  {rate} calls/s: {done.successful} ok, {done.failed} failed, "
          f"{done.retransmissions} retrans, {cpu:.2f} s of CPU", file=sys.stderr)  # fmt: skip
    return {
        "baton_cpu_ms_per_call": round(cpu * 1000 / max(1, done.successful), 3),
        "step": done.as_dict(),
        "definitions": {
            "baton_cpu_ms_per_call": "CPU time (user + system) of Baton's process during one "
            "step at a fixed rate, per successful call",
        },
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    sipp = shutil.which("sipp")
    if sipp is None:
        raise SystemExit("sipp not found (Debian package sip-tester)")
    global _SIPP_PLACE
    # Each B2BUA on one core, the SIPp load on the other, all SCHED_FIFO (--rt, as in
    # bench/media.py): on a shared machine a B2BUA otherwise gets what the scheduler leaves it,
    # and sippy's seven threads count as seven claims on a busy core against Baton's one.
    # Baton runs in this process; sippy is its child and inherits the core and the priority.
    b2bua_core, sipp_core = pick_cores()
    policy = place(b2bua_core, args.rt)
    _SIPP_PLACE = (sipp_core, args.rt)
    seconds = args.seconds or (2.0 if args.quick else 6.0)
    bisect = 1 if args.quick else 3
    ceiling = args.ceiling or (400 if args.quick else 3200)
    with tempfile.TemporaryDirectory(prefix="baton-sip-cps-") as tmp:
        folder = Path(tmp)
        uas = uas_scenario(sipp, folder)
        uac = uac_files(folder)
        uac_port, uas_port, baton_port, sippy_port = (free_port() for _ in range(4))
        result: dict[str, Any] = {}

        # Each step gets a fresh B2BUA: a saturated step leaves calls behind (ringing legs,
        # users still busy) that must not count against the next one.
        async def through_baton(rate: int) -> Step:
            async with baton(baton_port, uac_port, uas_port, tune_gc=not args.default_gc):
                started = _cpu()
                done = await step(sipp, f"127.0.0.1:{baton_port}", uac_port, uas_port, uas, uac,
                                  rate, seconds, args.hold, folder)  # fmt: skip
                done.cpu_seconds = round(_cpu() - started, 3)
                return done

        async def through_sippy(rate: int) -> Step:
            async with sippy(sippy_port, uas_port):
                return await step(sipp, f"127.0.0.1:{sippy_port}", uac_port, uas_port, uas, uac,
                                  rate, seconds, args.hold, folder)  # fmt: skip

        if args.cpu_at:
            return await cpu_per_call(args.cpu_at, through_baton)
        # The two searches take turns, one step each (a FIFO lock), so that both B2BUAs meet
        # the same machine: on a shared box the load changes over minutes, and measuring one
        # B2BUA after the other would compare two different machines.
        turn = asyncio.Lock()

        def in_turn(run: Callable[[int], Awaitable[Step]]) -> Callable[[int], Awaitable[Step]]:
            async def taking_turns(rate: int) -> Step:
                async with turn:
                    return await run(rate)

            return taking_turns

        searches: list[Awaitable[tuple[int, list[Step]]]] = [
            search(in_turn(through_baton), args.start, ceiling, bisect, "Baton ")
        ]
        print("Baton (core + sip switch, inbound_call flow per call) and sippy b2bua_simple, "
              "one step each in turn:", file=sys.stderr)  # fmt: skip
        if args.baton_only:
            print("  sippy skipped (--baton-only)", file=sys.stderr)
        elif sippy_path() is not None:
            searches.append(search(in_turn(through_sippy), args.start, ceiling, bisect, "sippy "))
        else:
            print("  sippy is not installed (pip install sippy): skipped", file=sys.stderr)
        found = await asyncio.gather(*searches)
        baton_cps, baton_steps = found[0]
        sippy_cps: int | None = found[1][0] if len(found) > 1 else None
        sippy_steps: list[Step] = found[1][1] if len(found) > 1 else []
        result = {
            "baton_cps": baton_cps,
            "sippy_cps": sippy_cps,
            "cps_ratio": round(baton_cps / sippy_cps, 2) if sippy_cps else None,
            "hold_ms": args.hold,
            "baton_gc": "default" if args.default_gc else "frozen after start-up, (2000, 20, 1000)",
            "step_seconds": seconds,
            "rate_rule": "clean when 2 of up to 3 steps at the rate are clean",
            "order": "Baton and sippy steps alternate",
            "placement": f"B2BUA on core {b2bua_core} ({policy}), SIPp on core {sipp_core}",
            "baton_steps": [s.as_dict() for s in baton_steps],
            "sippy_steps": [s.as_dict() for s in sippy_steps],
            "definitions": {
                "baton_cps": "highest call rate (calls/s) SIPp UAC → Baton → SIPp UAS sustains "
                "with no failed call and no retransmission; each call is an inbound_call flow",
                "sippy_cps": "the same through sippy's b2bua_simple",
                "cps_ratio": "baton_cps / sippy_cps (target ≥ 2)",
            },
        }
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short steps, a low ceiling")
    parser.add_argument("--start", type=int, default=50, help="first rate (calls/s)")
    parser.add_argument("--ceiling", type=int, default=0, help="highest rate to try")
    parser.add_argument("--seconds", type=float, default=0.0, help="length of each step")
    parser.add_argument("--hold", type=int, default=100, help="call hold time (ms)")
    parser.add_argument("--baton-only", action="store_true", help="do not run sippy")
    parser.add_argument(
        "--rt", type=int, default=10, help="SCHED_FIFO priority of the B2BUAs and SIPp (0: none)"
    )
    parser.add_argument(
        "--cpu-at", type=int, default=0, help="one step at this rate: Baton's CPU per call"
    )
    parser.add_argument(
        "--default-gc", action="store_true", help="run Baton with CPython's default GC settings"
    )
    print(json.dumps(asyncio.run(main(parser.parse_args()))))
