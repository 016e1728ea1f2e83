"""Benchmark of push-to-talk floor access (issue "Push-to-talk groups", Benchmark).

Floor access time: from a member's floor request reaching Baton to the switch being told to
let that member be heard (the talker switched to *speak* in the group's meeting — on the media
engine the next 20 ms mixer tick then carries the first frame out). Measured for requests made
while the floor is idle (granted at once), p50 and p99, with ``--groups`` groups of
``--members`` members under load: in every group, members keep asking for the floor and
releasing it at random, and a dispatcher overrides now and then.

On one core (one asyncio loop), on the sim switch. Run ``python bench/ptt.py`` (or
``--quick``); the last output line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from typing import Any

from baton.core import Flow, User, UserManager
from baton.flows.ptt import ptt_group
from baton.switch.port import MeetingMode, Member
from baton.switch.sim import Behaviour, SimSwitch

INSTANT = Behaviour(answer_after=0.0, ring_after=0.0)


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run")
    parser.add_argument("--groups", type=int, default=100)
    parser.add_argument("--members", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    seconds = 5.0 if args.quick else 30.0
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
