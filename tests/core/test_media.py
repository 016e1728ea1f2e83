"""Media operations through the core, checked against the sim's model of who hears whom."""

from __future__ import annotations

import pytest

from baton.core import (
    P2P,
    FlowUsageError,
    MeetingCall,
    Session,
    SwitchFailed,
    UnknownMeeting,
    User,
    flow,
)
from baton.core.port import MeetingMode, Prompt, Tone
from baton.switch.sim import answers
from baton.testing import World


@flow()
async def room(s: Session, *users: User) -> None:
    await s.claim(*users)
    for u in users:
        await s.dial(u)
    m = await s.meeting(*users)
    s.data["meeting"] = m
    await s.sleep(1000)


async def _room(*ids: str) -> tuple[World, object]:
    w = World(*ids)
    f = w.start(room, *(w[i] for i in ids))
    await w.run(len(ids) + 1)
    return w, f


async def test_meeting_each_hears_the_others() -> None:
    w, _ = await _room("a", "b", "c")
    assert w.hears("a") == {"b", "c"}
    assert w.hears("b") == {"a", "c"}
    assert w.state("a") == "meeting"


async def test_listen_whisper_and_muted_modes() -> None:
    @flow()
    async def modes(s: Session, a: User, b: User, d: User, m: User) -> None:
        await s.claim(a, b, d, m)
        for u in (a, b, d, m):
            await s.dial(u)
            s.quiet(u, "set-up")
        r = await s.meeting(a, b)
        await s.join(r, m, MeetingMode.LISTEN)  # monitor
        await s.join(r, d, MeetingMode.WHISPER, whisper_to=a)  # coach a
        await s.sleep(1000)

    w = World("a", "b", "d", "m")
    w.start(modes, w["a"], w["b"], w["d"], w["m"])
    await w.run(10)
    assert w.hears("a") == {"b", "d"}  # a hears the whisper
    assert w.hears("b") == {"a"}  # b hears neither the monitor nor the whisper
    assert w.hears("m") == {"a", "b"}  # the monitor hears the speakers (a whisper is for a only)
    assert w.sim.heard_by("m") == set()  # and nobody hears the monitor
    w.assert_ok()


async def test_whisper_target_must_be_a_member() -> None:
    @flow()
    async def bad(s: Session, a: User, d: User) -> None:
        await s.claim(a, d)
        await s.dial(a)
        await s.dial(d)
        r = await s.meeting(d)
        await s.join(r, d, MeetingMode.WHISPER, whisper_to=a)

    w = World("a", "d")
    with pytest.raises(FlowUsageError, match="whisper_to must name a member"):
        await w.start(bad, w["a"], w["d"]).result()


async def test_play_to_meeting_reaches_every_member_and_record() -> None:
    @flow()
    async def broadcast(s: Session, a: User, b: User) -> float:
        await s.claim(a, b)
        await s.dial(a)
        await s.dial(b)
        r = await s.meeting(a, b, mode=MeetingMode.LISTEN)
        rec = await s.record(r, "/tmp/x.wav")
        await s.play(r, Prompt("msg.wav"))
        await s.stop_recording(rec)
        return rec.seconds

    w = World("a", "b")
    w.sim.prompt_seconds["msg.wav"] = 4
    f = w.start(broadcast, w["a"], w["b"])
    assert await f.result() == pytest.approx(4.0)
    assert w.heard("a") == ["prompt:msg.wav"] == w.heard("b")
    assert not w.manager.meetings()  # destroyed with the flow
    w.assert_ok()


async def test_collect_digits_with_terminator_and_timeout() -> None:
    @flow()
    async def ivr(s: Session, a: User) -> tuple[str, str]:
        await s.claim(a)
        await s.dial(a)
        first = await s.collect(a, max_digits=4, timeout=10)
        second = await s.collect(a, max_digits=4, timeout=3)
        return first, second

    w = World("a")
    w.behave("a", answers(1).presses("12#9", after=1))
    f = w.start(ivr, w["a"])
    assert await f.result() == ("12", "9")
    assert any(e.kind == "dtmf" and e.digit == "#" for e in w.events)


async def test_clear_returns_to_connected_idle() -> None:
    @flow()
    async def busy_media(s: Session, a: User, b: User) -> None:
        await s.claim(a, b)
        await s.dial(a)
        await s.dial(b)
        await s.connect(a, b)
        await s.play(a, Tone("hold"), loop=True)
        await s.record(a, "/tmp/a.wav")
        await s.clear(a)
        s.quiet(a, "idle on purpose")
        s.quiet(b, "idle on purpose")
        await s.sleep(100)

    w = World("a", "b")
    w.start(busy_media, w["a"], w["b"])
    await w.run(5)
    assert w.sim.is_idle("a") and w.sim.is_idle("b")
    assert w.sim.leg_of("a") is not None
    w.assert_ok()


async def test_switch_failure_is_switch_failed_and_user_still_owned() -> None:
    @flow()
    async def try_bridge(s: Session, a: User, b: User) -> bool:
        await s.claim(a, b)
        await s.dial(a)
        await s.dial(b)
        try:
            await s.connect(a, b)
        except SwitchFailed:
            await s.clear(a)
            await s.clear(b)
            await s.connect(a, b)  # try again
        owned = s.owns(a) and s.owns(b)
        s.settle(P2P(a, b))
        return owned

    w = World("a", "b")
    w.sim.fail_next("bridge")
    assert await w.start(try_bridge, w["a"], w["b"]).result() is True
    assert w.hears("a") == {"b"}


async def test_settle_meetingcall_keeps_the_meeting_after_the_flow() -> None:
    @flow()
    async def conf(s: Session, a: User, b: User, c: User) -> None:
        await s.claim(a, b, c)
        for u in (a, b, c):
            await s.dial(u)
        s.settle(MeetingCall(await s.meeting(a, b, c)))

    w = World("a", "b", "c")
    await w.start(conf, w["a"], w["b"], w["c"]).result()
    assert len(w.manager.meetings()) == 1
    assert w.owner("a").startswith("meetingcall")
    w.assert_ok()


async def test_operations_on_unknown_meeting_and_unconnected_user() -> None:
    @flow()
    async def ghost(s: Session, a: User) -> None:
        await s.claim(a)
        r = await s.meeting()
        await s.end_meeting(r)
        await s.join(r, a)

    @flow()
    async def early(s: Session, a: User) -> None:
        await s.claim(a)
        await s.play(a, "busy")

    w = World("a")
    with pytest.raises(UnknownMeeting):
        await w.start(ghost, w["a"]).result()
    with pytest.raises(FlowUsageError, match="no connected call"):
        await w.start(early, w["a"]).result()


async def test_inbound_call_routing_and_answer() -> None:
    from baton.core import P2P

    @flow()
    async def inbound(s: Session, caller: User, callee: User) -> None:
        await s.claim(caller, callee)
        await s.answer(caller)
        await s.dial(callee)
        await s.connect(caller, callee)
        s.settle(P2P(caller, callee))

    w = World("a", "b")

    def route(manager, user, leg, ev):  # type: ignore[no-untyped-def]
        callee = manager.by_number(ev.to) or manager.user(ev.to)
        manager.start(inbound, user, callee)

    w.manager.router = route
    w.sim.call_in("a", "b")
    await w.run(3)
    assert w.hears("a") == {"b"}
    w.sim.call_in("zed" if False else "b", "a")  # b is busy on a call: rejected busy
    await w.run(1)
    assert w.hears("b") == {"a"}
    w.assert_ok()


async def test_unknown_caller_is_rejected() -> None:
    w = World("a")
    leg = w.sim.call_in("a", "999", authenticated=False)
    await w.run(1)
    assert w.sim.legs.get(leg) is None
    assert any(e.kind == "problem" and "unknown user" in e.message for e in w.events)
