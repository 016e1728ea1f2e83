"""A dispatcher's line that fails does not drop the caller who came from the queue.

The position's phone dies (media timeout) while it talks to or holds a queued caller: the
caller goes back to the queue in their old place, hears the queue's music again and is offered
to the next ready position; the failed position is reported (not ready) and rests. A normal
hang-up by the dispatcher still ends the call. Each scenario runs with instant commands and
with a switch that takes its time (docs/flows.md, "queued_call", "hold").
"""

from __future__ import annotations

from typing import Any

import pytest

from baton.core import Flow, Prompt
from baton.core.events import Event, FlowStarted
from baton.core.port import Cause
from baton.flows import DispatcherQueue, Overflow, hold, queued_call
from baton.switch.sim import Behaviour, answers
from baton.testing import World

SLOW = {
    "originate": 0.3,
    "answer": 0.2,
    "bridge": 0.2,
    "play": 0.2,
    "stop_play": 0.2,
    "hangup": 0.3,
    "clear": 0.3,
}
LATENCIES = [pytest.param(None, id="instant"), pytest.param(SLOW, id="latency")]
MUSIC = "prompt:queue.wav"
HOLD_MUSIC = "prompt:moh.wav"


class _Desk:
    """Positions with an agent state the queue reads (``ready``) and ``on_missed`` sets."""

    def __init__(self, w: World, *ids: str) -> None:
        self.ready = dict.fromkeys(ids, True)
        self.missed: list[tuple[str, Cause]] = []
        self.w = w

    def is_ready(self, d: Any) -> bool:
        return self.ready[d.id]

    def on_missed(self, d: Any, cause: Cause) -> None:
        self.missed.append((d.id, cause))
        self.ready[d.id] = False  # what the service does: not ready


def _world(
    latency: dict[str, float] | None, *behaviours: Behaviour, **queue_kw: Any
) -> tuple[World, DispatcherQueue, _Desk]:
    w = World("c1", "c2", latency=latency)
    ds = [w.add(f"d{i}", b, keep=True) for i, b in enumerate(behaviours, 1)]
    desk = _Desk(w, *(d.id for d in ds))
    q = DispatcherQueue(
        "ops",
        w.manager,
        ds,
        music="queue.wav",
        ready=desk.is_ready,
        on_missed=desk.on_missed,
        **queue_kw,
    )
    _started(w)  # watch for the flows that take re-queued callers back
    return w, q, desk


def _requeued(w: World) -> list[Flow]:
    """The ``requeued_call`` flows started so far (running or ended)."""
    return list(_started(w))


def _started(w: World) -> list[Flow]:
    seen: list[Flow] | None = getattr(w, "_requeued_seen", None)
    if seen is None:
        found: list[Flow] = []

        def on_event(ev: Event) -> None:
            if isinstance(ev, FlowStarted) and ev.name == "requeued_call":
                found.append(w.manager.flows[ev.flow])

        w.manager.events.subscribe(on_event)
        w._requeued_seen = seen = found  # type: ignore[attr-defined]
    return seen


async def _follow(
    w: World, caller: str, until: str, *, limit: float = 30.0
) -> tuple[list[str], float]:
    """Run until ``caller`` hears ``until``; return what they heard (in order of first hearing)
    and the longest stretch in which their line was up and they heard nothing."""
    heard: list[str] = []
    silent_since: float | None = None
    longest = 0.0
    end = w.manager.now() + limit
    while until not in w.hears(caller):
        assert w.manager.now() < end, f"{caller} never heard {until}; heard {heard}"
        await w.run(0.05)
        now = w.hears(caller)
        leg = w.manager.leg_of(w[caller])
        assert leg is not None and leg.connected, f"{caller} was hung up; heard {heard}"
        if now:
            silent_since = None
        elif silent_since is None:
            silent_since = w.manager.now()
        else:
            longest = max(longest, w.manager.now() - silent_since)
        heard += [x for x in sorted(now) if x not in heard]
    return heard, longest


def _max_gap(latency: dict[str, float] | None) -> float:
    # the time for the new owner's clear and play commands (and a poll), nothing more
    return 0.0 if latency is None else latency["clear"] + latency["play"] + 0.1


@pytest.mark.parametrize("latency", LATENCIES)
async def test_a_position_whose_line_fails_mid_call_sends_the_caller_back_to_the_queue(
    latency: dict[str, float] | None,
) -> None:
    w, q, desk = _world(latency, answers(1), answers(2))
    w.sim.call_in("c1", "100")
    f = w.start(queued_call, w["c1"], q)
    assert await f.result() is w["d1"]
    assert w.hears("c1") == {"d1"}
    await w.run(30)  # they talk
    w.sim.kill("d1")  # the dispatcher's phone dies: media timeout, not a hang-up
    heard, gap = await _follow(w, "c1", "d2")
    assert heard[0] == MUSIC and heard[-1] == "d2"  # music again, then the next position
    assert gap <= _max_gap(latency)
    await w.run(1)  # the music stops once they are bridged
    assert w.hears("c1") == {"d2"} and w.hears("d2") == {"c1"}
    (again,) = _requeued(w)
    assert await again.result() is w["d2"]
    assert desk.missed == [("d1", Cause.MEDIA_TIMEOUT)] and desk.ready["d1"] is False
    figures = q.snapshot()
    assert (figures.requeued, figures.answered, figures.waiting) == (1, 1, 0)
    w.assert_ok()


@pytest.mark.interaction("queued_call", "hold")
@pytest.mark.parametrize("latency", LATENCIES)
async def test_a_position_whose_line_fails_while_holding_sends_the_caller_back_to_the_queue(
    latency: dict[str, float] | None,
) -> None:
    w, q, desk = _world(latency, answers(1), answers(2))
    w.sim.call_in("c1", "100")
    assert await w.start(queued_call, w["c1"], q).result() is w["d1"]
    h = w.start(hold, w["d1"], w["c1"], Prompt("moh.wav"))
    await w.run(5)
    assert w.hears("c1") == {HOLD_MUSIC}
    w.sim.kill("d1")
    heard, gap = await _follow(w, "c1", "d2")
    # the hold music plays on until the queue's music replaces it, then the next position
    assert heard[0] in (HOLD_MUSIC, MUSIC) and MUSIC in heard and heard[-1] == "d2"
    assert gap <= _max_gap(latency)
    assert await h.result() == "holder's line lost"
    (again,) = _requeued(w)
    assert await again.result() is w["d2"]
    assert w.hears("c1") == {"d2"}
    assert desk.missed == [("d1", Cause.MEDIA_TIMEOUT)]
    w.assert_ok()


@pytest.mark.parametrize("latency", LATENCIES)
async def test_a_resumed_call_keeps_the_way_back_to_the_queue(
    latency: dict[str, float] | None,
) -> None:
    w, q, _ = _world(latency, answers(1), answers(1))
    w.sim.call_in("c1", "100")
    assert await w.start(queued_call, w["c1"], q).result() is w["d1"]
    h = w.start(hold, w["d1"], w["c1"])
    await w.run(3)
    h.send("resume")
    assert await h.result() == "resumed"
    await w.run(1)
    assert w.hears("c1") == {"d1"}
    w.sim.kill("d1")
    heard, _ = await _follow(w, "c1", "d2")
    assert MUSIC in heard
    assert q.snapshot().requeued == 1
    w.assert_ok()


@pytest.mark.parametrize("latency", LATENCIES)
@pytest.mark.parametrize("holding", [False, True], ids=["talking", "holding"])
async def test_a_dispatcher_hanging_up_still_ends_the_call(
    latency: dict[str, float] | None, holding: bool
) -> None:
    w, q, desk = _world(latency, answers(1), answers(1))
    w.sim.call_in("c1", "100")
    assert await w.start(queued_call, w["c1"], q).result() is w["d1"]
    if holding:
        w.start(hold, w["d1"], w["c1"])
        await w.run(3)
    w.sim.hang_up("d1")  # a normal hang-up (BYE): the call is over
    await w.run(10)
    assert w.state("c1") == "idle"
    assert _requeued(w) == [] and w.state("d2") == "idle"
    assert q.snapshot().requeued == 0 and desk.missed == []
    w.assert_ok(quiescent=True)


@pytest.mark.parametrize("latency", LATENCIES)
async def test_the_callers_own_line_failing_ends_the_call(
    latency: dict[str, float] | None,
) -> None:
    w, q, desk = _world(latency, answers(1), answers(1))
    w.sim.call_in("c1", "100")
    assert await w.start(queued_call, w["c1"], q).result() is w["d1"]
    w.sim.kill("c1")
    await w.run(10)
    assert _requeued(w) == [] and q.snapshot().requeued == 0 and desk.missed == []
    assert w.state("d2") == "idle"
    w.assert_ok()


@pytest.mark.parametrize("latency", LATENCIES)
async def test_with_no_ready_position_the_caller_waits_with_music_until_overflow(
    latency: dict[str, float] | None,
) -> None:
    w, q, desk = _world(latency, answers(1), timeout=60, overflow=Overflow.BUSY, retry_after=5)
    w.sim.call_in("c1", "100")
    assert await w.start(queued_call, w["c1"], q).result() is w["d1"]
    await w.run(45)  # c1 talks for most of the queue's timeout
    w.sim.call_in("c2", "100")
    later = w.start(queued_call, w["c2"], q)  # arrives after c1, waits for the only position
    await w.run(5)
    w.sim.kill("d1")
    at = w.manager.now()
    _, gap = await _follow(w, "c1", MUSIC)
    assert gap <= _max_gap(latency)
    await w.run(30)
    # back at the head, ahead of c2 who arrived later; hearing the music; d1 not ready
    assert [e.caller.id for e in q.waiting()] == ["c1", "c2"]
    assert w.hears("c1") == {MUSIC} and desk.ready["d1"] is False
    again, *_ = _requeued(w)
    assert again.outcome is None and later.outcome is None
    # the overflow clock restarted: a whole timeout from the re-queue, then busy and ended
    assert await again.result() is None
    busy_at = next(t for t, what in w.sim.phones["c1"].heard if what == "tone:busy")
    assert busy_at - at == pytest.approx(60, abs=1.0)
    assert q.snapshot().overflowed >= 1
    w.assert_ok()
