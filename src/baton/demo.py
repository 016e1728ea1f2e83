"""``baton demo``: scripted dispatch scenarios on the sim switch, told as a timestamped trace.

Each scenario runs in virtual time (a minute of calls takes milliseconds) on virtual phones and
prints every flow start and end, every ownership hand-over with its priority and reason, every
media change, and after each media change who hears whom. ``baton demo`` with no name tells the
story Baton exists for: a preemption in the middle of a transfer.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TextIO

from baton.core.port import Prompt
from baton.flows import (
    DispatcherQueue,
    attended_transfer,
    barge_in,
    blind_transfer,
    broadcast,
    call,
    conference,
    emergency_call,
    emergency_inbound,
    force_release,
    group_call,
    hold,
    inbound_call,
    monitor,
    pickup,
    polling,
    queued_call,
    roll_call,
    take_call,
    whisper,
)
from baton.switch.sim import answers, busy, never_answers
from baton.testing import World, run_virtual
from baton.trace import Tracer

__all__ = ["SCENARIOS", "main", "run"]

Script = Callable[[World], Awaitable[None]]


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    script: Script


SCENARIOS: dict[str, Scenario] = {}


def scenario(name: str, title: str) -> Callable[[Script], Script]:
    def register(fn: Script) -> Script:
        SCENARIOS[name] = Scenario(name, title, fn)
        return fn

    return register


def _world() -> World:
    """Field users alice, bob, carol, dave; dispatchers disp and sup (always-on lines)."""
    w = World("alice", "bob", "carol", "dave", grace=3.0)
    w.add("disp", keep=True, name="Dispatcher 1")
    w.add("sup", keep=True, name="Supervisor")
    return w


async def _talking(w: World, a: str, b: str) -> None:
    await w.start(call, w[a], w[b]).result()


@scenario("preemption", "A transfer is ringing when an emergency takes its target")
async def _preemption(w: World) -> None:
    """alice talks to bob; bob transfers alice to carol, whose phone rings for 10 s. After 3 s
    the supervisor declares an emergency on carol. carol's ringing call is not dropped: the
    emergency inherits it, and the transfer puts alice back with bob."""
    await _talking(w, "alice", "bob")
    w.behave("carol", answers(10))
    t = w.start(attended_transfer, w["alice"], w["bob"], w["carol"])
    await w.run(3)
    e = w.start(emergency_call, w["sup"], w["carol"])
    await t.wait()
    await w.run(10)
    await e.send("end", by="sup")
    await w.run(1)


@scenario("call", "A dispatcher calls a field user")
async def _call(w: World) -> None:
    await _talking(w, "disp", "alice")
    w.sim.hang_up("alice")
    await w.run(1)


@scenario("call_busy", "A dispatcher calls a user who is busy")
async def _call_busy(w: World) -> None:
    w.behave("alice", busy())
    await w.start(call, w["disp"], w["alice"]).wait()
    await w.run(3)


@scenario("inbound_call", "alice dials bob's number")
async def _inbound(w: World) -> None:
    w.sim.call_in("alice", "bob")
    await w.start(inbound_call, w["alice"], w["bob"]).wait()
    await w.run(1)


@scenario("queue", "Callers wait in the dispatcher queue; two dispatchers race for one")
async def _queue(w: World) -> None:
    q = DispatcherQueue("ops", w.manager, [w["disp"], w["sup"]], auto_assign=False)
    for caller in ("alice", "bob"):
        w.sim.call_in(caller, "110")
        w.start(queued_call, w[caller], q)
        await w.run(1)
    w.start(take_call, w["disp"], q, w["alice"])
    w.start(take_call, w["sup"], q, w["alice"])  # the same instant: one of them wins
    await w.run(2)
    w.start(take_call, w["sup"], q)
    await w.run(2)


@scenario("group_call", "A dispatcher rings a group; a late answerer joins")
async def _group(w: World) -> None:
    w.behave("carol", answers(6))
    w.behave("dave", never_answers())
    g = w.start(group_call, w["disp"], [w["alice"], w["bob"], w["carol"], w["dave"]], ring=10.0)
    await w.run(12)
    await g.send("end")
    await g.wait()


@scenario("conference", "A controlled conference: mute, listen-only, kick, the chair leaves")
async def _conference(w: World) -> None:
    from baton.flows import OnLeave

    c = w.start(conference, w["disp"], [w["alice"], w["bob"], w["carol"]], OnLeave.CONTINUE)
    await w.run(3)
    await c.send("mute", user="bob")
    await c.send("listen", user="carol")
    await c.send("kick", user="bob")
    await w.run(1)
    await c.send("end")
    await c.wait()


@scenario("broadcast", "A recorded message to every member, who listen only")
async def _broadcast(w: World) -> None:
    w.sim.prompt_seconds["evacuate.wav"] = 6
    b = w.start(broadcast, [w["alice"], w["bob"], w["carol"]], None, Prompt("evacuate.wav"), 1, 3.0)
    await b.wait()


@scenario("barge_in", "A supervisor barges into a call, then leaves")
async def _barge_in(w: World) -> None:
    await _talking(w, "alice", "bob")
    b = w.start(barge_in, w["sup"], w["alice"])
    await w.run(5)
    await b.send("leave")
    await b.wait()


@scenario("force_release", "A dispatcher cuts a call: the other party hears the notice")
async def _force(w: World) -> None:
    await _talking(w, "alice", "bob")
    await w.start(force_release, w["alice"]).wait()
    await w.run(1)


@scenario("monitor", "A supervisor listens to a call silently")
async def _monitor(w: World) -> None:
    await _talking(w, "alice", "bob")
    m = w.start(monitor, w["sup"], w["alice"])
    await w.run(5)
    await m.send("leave")
    await m.wait()


@scenario("whisper", "A supervisor coaches one party of a call")
async def _whisper(w: World) -> None:
    await _talking(w, "disp", "alice")
    m = w.start(whisper, w["sup"], w["disp"])
    await w.run(5)
    await m.send("leave")
    await m.wait()


@scenario("blind_transfer", "bob hands alice to carol without asking")
async def _blind(w: World) -> None:
    await _talking(w, "alice", "bob")
    await w.start(blind_transfer, w["alice"], w["bob"], w["carol"]).wait()


@scenario("attended_transfer", "bob consults carol while alice waits on hold, then completes")
async def _attended(w: World) -> None:
    await _talking(w, "alice", "bob")
    t = w.start(attended_transfer, w["alice"], w["bob"], w["carol"])
    await w.run(4)
    await t.send("complete")
    await t.wait()


@scenario("hold", "alice puts bob on hold with music, then resumes")
async def _hold(w: World) -> None:
    w.sim.prompt_seconds["music.wav"] = 30
    await _talking(w, "alice", "bob")
    h = w.start(hold, w["alice"], w["bob"], Prompt("music.wav"))
    await w.run(5)
    await h.send("resume")
    await h.wait()


@scenario("pickup", "carol picks up a call ringing at bob's desk")
async def _pickup(w: World) -> None:
    w.behave("bob", never_answers())
    w.start(call, w["alice"], w["bob"])
    await w.run(3)
    await w.start(pickup, w["carol"], w["bob"]).wait()


@scenario("roll_call", "Everyone is called in turn and confirms with 1")
async def _roll_call(w: World) -> None:
    w.behave("alice", answers(1).presses("1", 1))
    w.behave("bob", busy())
    w.behave("carol", answers(2))
    await w.start(roll_call, [w["alice"], w["bob"], w["carol"]], "1", 10.0, 3.0).wait()


@scenario("polling", "Users are called in order until one answers")
async def _polling(w: World) -> None:
    w.behave("alice", never_answers())
    w.behave("bob", busy())
    await w.start(polling, w["disp"], [w["alice"], w["bob"], w["carol"]], 5.0).wait()


@scenario("emergency_call", "An emergency takes a user out of a conference, then is ended")
async def _emergency(w: World) -> None:
    c = w.start(conference, w["disp"], [w["alice"], w["bob"], w["carol"]])
    await w.run(3)
    e = w.start(emergency_call, w["sup"], w["alice"])
    await w.run(5)
    await e.send("end", by="sup")
    await c.send("end")
    await w.run(1)


@scenario("emergency_inbound", "A user dials the emergency number while both dispatchers are busy")
async def _emergency_inbound(w: World) -> None:
    await _talking(w, "disp", "bob")
    await _talking(w, "sup", "carol")
    w.sim.call_in("alice", "112")
    e = w.start(emergency_inbound, w["alice"], [w["disp"], w["sup"]])
    await w.run(6)
    await e.send("end")
    await w.run(1)


@scenario("ptt_group", "A push-to-talk group: talk bursts, a queue, an override, an emergency")
async def _ptt(w: World) -> None:
    """Four members in a PTT group with a dispatcher. alice presses * and talks; bob and carol
    queue; the dispatcher overrides; dave raises an emergency (9) and gets the floor."""
    from baton.flows.ptt import ptt_group

    g = w.start(
        ptt_group, [w[u] for u in ("alice", "bob", "carol", "dave")], [w["disp"]], hang_time=5.0
    )
    await w.run(2)
    w.sim.press("alice", "*")
    await w.run(1)
    w.sim.press("bob", "*")
    w.sim.press("carol", "*", 0.1)
    await w.run(2)
    await g.send("override", user="disp")
    await w.run(2)
    w.sim.press("dave", "9")
    await w.run(2)
    await g.send("clear_emergency", by="disp")
    w.sim.press("dave", "#")
    await w.run(1)
    await g.send("end")
    await g.wait()


def run(name: str = "preemption", out: TextIO | None = None) -> None:
    """Run one scenario and print its trace to ``out`` (stdout by default)."""
    sc = SCENARIOS[name]
    out = out or sys.stdout

    async def main() -> None:
        w = _world()
        tracer = Tracer(out, hears=w.sim.hears, users=lambda: [u.id for u in w.manager.users()])
        w.manager.events.subscribe(tracer)
        out.write(f"== {sc.name}: {sc.title}\n")
        doc = (sc.script.__doc__ or "").strip()
        if doc:
            out.write("   " + " ".join(doc.split()) + "\n")
        out.write("   users: alice, bob, carol, dave (field); disp, sup (dispatchers)\n\n")
        out.write("     time  event\n")
        await sc.script(w)
        tracer.flush()
        problems = w.problems()
        out.write("\n   invariants: " + ("all held" if not problems else "; ".join(problems)))
        out.write("\n")
        await w.close()

    run_virtual(main())


def main(argv: list[str]) -> int:
    """Entry for ``baton demo [--list] [NAME]``."""
    if argv and argv[0] in ("--list", "-l"):
        width = max(map(len, SCENARIOS))
        for sc in SCENARIOS.values():
            print(f"  {sc.name:<{width}}  {sc.title}")
        return 0
    name = argv[0] if argv else "preemption"
    if name not in SCENARIOS:
        print(f"baton demo: no scenario {name!r}; try `baton demo --list`", file=sys.stderr)
        return 2
    run(name)
    return 0
