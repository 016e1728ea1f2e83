"""Benchmark of the core on the sim switch (issue "Core flow runtime", item 7).

Measures, on one core, with 10,000 users:
  (a) flows_per_s       complete call flows per second: claim, dial both, answer, connect,
                        settle into a P2P, then a party hangs up and the P2P clears the other;
  (b) preempt_p50_ms /  claim-to-grant latency of a preemption (the loser is bridged, so its
      preempt_p99_ms    media must be cleared and its sleeping coroutine told), with 1,000
                        flows live;
  (c) bytes_per_idle_user, bytes_per_live_flow   (tracemalloc).

The loop is a real asyncio loop (uvloop is not used), the sim answers at once, and the event
bus keeps its default history. Run ``python bench/core.py`` (or ``--quick``); the last line of
output is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import time
import tracemalloc
from typing import Any

from baton.core import P2P, Priority, Session, User, UserManager, flow
from baton.switch.sim import Behaviour, SimSwitch

INSTANT = Behaviour(answer_after=0.0, ring_after=0.0)


@flow(priority=Priority.ROUTINE)
async def call(s: Session, caller: User, callee: User) -> None:
    await s.claim(caller, callee)
    await s.dial(caller)
    await s.dial(callee)
    await s.connect(caller, callee)
    s.settle(P2P(caller, callee))


@flow(priority=Priority.ROUTINE)
async def busy(s: Session, a: User, b: User) -> None:
    await s.claim(a, b)
    await s.dial(a)
    await s.dial(b)
    await s.connect(a, b)
    await s.sleep(3600)


@flow(priority=Priority.FLASH)
async def take(s: Session, a: User) -> float:
    t0 = time.perf_counter()
    await s.claim(a)
    return time.perf_counter() - t0


@flow(priority=Priority.ROUTINE)
async def idle_flow(s: Session, a: User) -> None:
    await s.claim(a)
    await s.sleep(3600)


def world(n_users: int) -> tuple[UserManager, SimSwitch, list[User]]:
    sim = SimSwitch(default=INSTANT)
    sim.log_commands = False
    manager = UserManager(sim, history=1000)
    users = []
    for i in range(n_users):
        u = manager.add_user(User(f"u{i}"))
        sim.add_phone(u.id)
        users.append(u)
    return manager, sim, users


async def bench_flows(n_users: int, n_flows: int, concurrency: int) -> float:
    """``concurrency`` workers, each on its own pair of users, run call flows back to back."""
    manager, sim, users = world(n_users)
    pairs = [(users[i], users[i + 1]) for i in range(0, 2 * concurrency, 2)]

    async def worker(a: User, b: User, n: int) -> None:
        for _ in range(n):
            await manager.start(call, a, b).wait()
            sim.hang_up(a.id)  # the P2P clears b: both idle again

    await asyncio.gather(*(worker(a, b, 2) for a, b in pairs))  # warm-up
    gc.collect()
    per_worker = max(1, n_flows // concurrency)
    start = time.perf_counter()
    await asyncio.gather(*(worker(a, b, per_worker) for a, b in pairs))
    elapsed = time.perf_counter() - start
    await manager.close()
    return per_worker * concurrency / elapsed


async def bench_preempt(n_users: int, live: int, samples: int) -> list[float]:
    manager, _, users = world(n_users)
    bridged = asyncio.Event()
    count = 0

    def on_event(ev: object) -> None:
        nonlocal count
        if getattr(ev, "command", None) == "bridge":
            count += 1
            if count == live:
                bridged.set()

    manager.events.subscribe(on_event)
    flows = [manager.start(busy, users[2 * i], users[2 * i + 1]) for i in range(live)]
    await bridged.wait()
    latencies = []
    for k in range(samples):
        victim = users[2 * (k % live)]
        f = manager.start(take, victim)
        latencies.append(await f.result())
        # give the user back to a fresh busy flow so the next sample preempts a live flow again
        if k % live == live - 1:
            break
    for f in flows:
        f.cancel()
    await manager.close()
    return latencies


async def bench_memory(n_users: int, n_flows: int) -> tuple[float, float]:
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    manager, _, users = world(n_users)
    gc.collect()
    after_users = tracemalloc.get_traced_memory()[0]
    flows = [manager.start(idle_flow, users[i]) for i in range(n_flows)]
    await asyncio.sleep(0.01)
    gc.collect()
    after_flows = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    for f in flows:
        f.cancel()
    await manager.close()
    return (after_users - base) / n_users, (after_flows - after_users) / n_flows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (seconds)")
    args = parser.parse_args()
    n_users = 10_000
    n_flows = 5_000 if args.quick else 50_000
    samples = 300 if args.quick else 1000

    flows_per_s = asyncio.run(bench_flows(n_users, n_flows, concurrency=1000))
    print(f"flows: {flows_per_s:,.0f} complete call flows/s ({n_flows} flows, 10,000 users)")
    lat = asyncio.run(bench_preempt(n_users, live=1000, samples=samples))
    lat_ms = sorted(x * 1000 for x in lat)
    p50 = statistics.median(lat_ms)
    p99 = lat_ms[min(len(lat_ms) - 1, int(len(lat_ms) * 0.99))]
    print(
        f"preemption claim-to-grant with 1,000 live flows: p50 {p50:.3f} ms, p99 {p99:.3f} ms "
        f"({len(lat_ms)} samples)"
    )
    per_user, per_flow = asyncio.run(bench_memory(n_users, 1000))
    print(f"memory: {per_user:,.0f} B per idle user, {per_flow:,.0f} B per live flow")
    result: dict[str, Any] = {
        "flows_per_s": round(flows_per_s),
        "preempt_p50_ms": round(p50, 3),
        "preempt_p99_ms": round(p99, 3),
        "bytes_per_idle_user": round(per_user),
        "bytes_per_live_flow": round(per_flow),
        "quick": args.quick,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
