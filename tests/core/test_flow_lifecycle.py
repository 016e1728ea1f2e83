"""Flow life cycle: outcomes, child tasks, handlers, notices, composition, bad arguments."""

from __future__ import annotations

import asyncio

import pytest
from core_flows import call, emergency, hold

from baton.core import (
    CancelResult,
    FlowCancelled,
    FlowEndedError,
    FlowUsageError,
    NoAnswer,
    NotOwner,
    Preempted,
    Priority,
    Session,
    User,
    flow,
)
from baton.switch.sim import busy, never_answers, rejects, unreachable
from baton.testing import World


@pytest.mark.parametrize(
    ("behaviour", "error"),
    [
        (never_answers(), "NoAnswer"),
        (busy(), "Busy"),
        (rejects(), "Rejected"),
        (unreachable(), "Unreachable"),
    ],
)
async def test_dial_failures_raise_by_cause(behaviour: object, error: str) -> None:
    w = World("a", "b")
    w.behave("b", behaviour)  # type: ignore[arg-type]
    f = w.start(call, w["a"], w["b"], 30.0)
    with pytest.raises(Exception) as info:
        await f.result()
    assert type(info.value).__name__ == error
    assert "call to user 'b' failed" in str(info.value)
    await w.run(10)
    w.assert_ok(quiescent=True)


async def test_ring_timeout_in_virtual_time() -> None:
    w = World("a", "b")
    w.behave("b", never_answers())
    f = w.start(call, w["a"], w["b"], 30.0)
    with pytest.raises(NoAnswer):
        await f.result()
    assert w.manager.now() == pytest.approx(1.0 + 30.0)  # a answered at 1 s, b rang 30 s
    assert w.sim.hangups[-1][1].value == "no_answer"  # the ringing leg was cancelled


async def test_cancelled_flow_result_raises_flow_cancelled() -> None:
    w = World("a")
    f = w.start(hold, w["a"])
    await w.run(1)
    await f.stop("operator")
    with pytest.raises(FlowCancelled, match="operator"):
        await f.result()


async def test_cancel_before_first_step_still_ends_cleanly() -> None:
    w = World("a")
    f = w.start(hold, w["a"])
    assert f.cancel("at once") is CancelResult.CANCELLED
    assert await f.wait() == "cancelled"
    assert [e.kind for e in w.events] == ["flow.started", "flow.ended"]
    w.assert_ok()


async def test_child_failure_fails_the_flow_and_compensation_runs() -> None:
    ran: list[str] = []

    @flow()
    async def parent(s: Session, a: User) -> None:
        await s.claim(a)

        async def undo() -> None:
            ran.append("undo")

        s.compensate(undo)

        async def child() -> None:
            await asyncio.sleep(1)
            raise ValueError("child broke")

        s.spawn(child())
        await s.sleep(100)

    w = World("a")
    f = w.start(parent, w["a"])
    with pytest.raises(ValueError, match="child broke"):
        await f.result()
    assert ran == ["undo"]
    assert w.manager.now() == pytest.approx(1.0)


async def test_children_are_cancelled_when_the_flow_ends() -> None:
    stopped: list[bool] = []

    @flow()
    async def parent(s: Session) -> None:
        async def child() -> None:
            try:
                await asyncio.sleep(1000)
            except asyncio.CancelledError:
                stopped.append(True)
                raise

        s.spawn(child())
        await s.sleep(1)

    w = World()
    assert await w.start(parent).wait() == "completed"
    assert stopped == [True]
    assert not w.manager.tasks


async def test_a_child_not_started_yet_never_runs_once_the_body_returns() -> None:
    """A child spawned in the body's last step is stopped before its first step: otherwise it
    would dial (here: ring a phone) after the flow ended, behind its clean-up's back."""

    @flow()
    async def parent(s: Session, a: User) -> None:
        await s.claim(a)
        s.spawn(s.dial(a))  # the body returns in this same step

    w = World("a")
    assert await w.start(parent, w["a"]).wait() == "completed"
    await w.run(5)
    assert w.sim.phones["a"].calls == 0
    assert w.state("a") == "idle"
    w.assert_ok(quiescent=True)


async def test_queued_commands_are_seen_without_being_taken() -> None:
    """``queued_commands`` names what waits in the inbox, oldest first, and takes nothing:
    ``command`` still returns every one, in the order sent."""
    seen: list[object] = []

    @flow(commands={"add": "add", "end": "end"})
    async def looks_first(s: Session) -> None:
        seen.append(s.queued_commands())
        await s.sleep(2)  # the commands are sent meanwhile
        seen.append(s.queued_commands())
        s.post("mine")
        seen.append(s.queued_commands())
        while (cmd := await s.command()) is not None:
            seen.append(cmd.name)
            cmd.reply("ok")
            if cmd.name == "mine":
                seen.append(s.queued_commands())
                return

    w = World()
    f = w.start(looks_first)
    await w.run(1)
    replies = [f.send("add"), f.send("end")]
    await f.result()
    assert seen == [[], ["add", "end"], ["add", "end", "mine"], "add", "end", "mine", []]
    assert [await r for r in replies] == ["ok", "ok"]


async def test_a_command_nobody_will_answer_is_flow_ended() -> None:
    """A command left unread when its flow ends, and one sent after, fail with
    ``FlowEndedError`` (``flow-ended``, a 409 of that id from the API) — not the plain
    ``flow-usage`` of a flow using the API wrongly; an unknown command stays ``flow-usage``."""

    @flow(commands={"end": "end"})
    async def deaf(s: Session) -> None:
        await s.sleep(5)  # never reads its inbox

    w = World()
    f = w.start(deaf)
    await w.run(1)
    unread = f.send("end")
    await f.result()
    with pytest.raises(FlowEndedError, match="ended before answering") as info:
        await unread
    assert info.value.code == "flow-ended"
    with pytest.raises(FlowEndedError, match="has ended"):
        f.send("end")
    with pytest.raises(FlowUsageError, match="accepts no command") as wrong:
        f.send("louder")
    assert not isinstance(wrong.value, FlowEndedError)


async def test_pending_notice_is_raised_at_the_next_operation() -> None:
    """The flow is not in a session wait when it loses a user: it is told at its next op."""
    seen: list[str] = []

    @flow()
    async def busywork(s: Session, a: User, b: User) -> None:
        await s.claim(a, b)
        await s.dial(a)
        await s.dial(b)
        await asyncio.sleep(5)  # not a session wait: cannot be told here
        try:
            await s.play(b, "confirm")
        except Preempted as exc:
            seen.append(exc.user.id)
        await s.play(b, "confirm")  # goes on with b
        seen.append("b ok")

    w = World("a", "b", "d")
    f = w.start(busywork, w["a"], w["b"])
    await w.run(3)
    w.start(emergency, w["d"], w["a"])
    await f.result()
    assert seen == ["a", "b ok"]
    assert any(e.kind == "flow.notified" and e.via == "pending" for e in w.events)


async def test_handler_runs_and_the_flow_goes_on() -> None:
    @flow()
    async def group(s: Session, a: User, b: User) -> list[str]:
        lost: list[str] = []
        await s.claim(a, b)
        await s.dial(a)
        await s.dial(b)

        async def on_lost(exc: BaseException) -> None:
            lost.append(str(exc.user.id))  # type: ignore[attr-defined]

        s.on_preempted(a, on_lost)
        await s.sleep(10)
        return [*lost, *(u.id for u in s.users)]

    w = World("a", "b", "d")
    f = w.start(group, w["a"], w["b"])
    await w.run(3)
    w.start(emergency, w["d"], w["a"])
    assert await f.result() == ["a", "b"]


async def test_a_handler_for_a_user_lost_and_not_yet_told_runs_at_once() -> None:
    """docs/guide.md: a handler registered for a user lost while the flow could not be told
    (here a raw wait; in the library, a user gone in the instant its claim was granted) runs
    at once with that loss's notice — the notice is told once, by the handler, not raised
    again at the next operation."""
    told: list[str] = []

    @flow()
    async def late(s: Session, a: User, b: User) -> list[str]:
        await s.claim(a, b)
        await s.dial(a)
        await s.dial(b)
        await asyncio.sleep(5)  # not a session wait: a's loss stays pending

        async def lost(exc: BaseException) -> None:
            told.append(f"{type(exc).__name__}:{exc.user.id}")  # type: ignore[attr-defined]

        s.on_lost(a, lost)
        await s.play(b, "confirm")  # not interrupted by a's notice: it was told
        await s.sleep(1)
        return [u.id for u in s.users]

    w = World("a", "b", "d")
    f = w.start(late, w["a"], w["b"])
    await w.run(3)
    w.start(emergency, w["d"], w["a"])
    assert await f.result() == ["b"]
    assert told == ["Preempted:a"]


async def test_a_handler_for_a_user_the_flow_does_not_hold_is_refused() -> None:
    """A loss the flow was told of already, or a user it never held: nothing would ever call
    the handler, so registering it fails at once with NotOwner (saying how the user was
    lost) instead of waiting forever for a notice that will not come."""
    errors: list[str] = []

    async def nothing(exc: BaseException) -> None:
        raise AssertionError("never called")

    @flow()
    async def told_already(s: Session, a: User, b: User, c: User) -> None:
        await s.claim(a, b)
        await s.dial(a)
        await s.dial(b)
        with pytest.raises(Preempted):
            await s.sleep(10)
        for user, register in ((a, s.on_lost), (a, s.on_preempted), (c, s.on_hangup)):
            with pytest.raises(NotOwner) as info:
                register(user, nothing)
            errors.append(str(info.value))
        await s.sleep(1)

    w = World("a", "b", "c", "d")
    f = w.start(told_already, w["a"], w["b"], w["c"])
    await w.run(3)
    w.start(emergency, w["d"], w["a"])
    await f.result()
    assert "does not own user 'a' (it was preempted" in errors[0]
    assert "does not own user 'c'; the user is owned by nobody" in errors[2]


async def test_composition_runs_a_flow_inline() -> None:
    @flow()
    async def outer(s: Session, a: User, b: User) -> str:
        await call(s, a, b)  # the call flow's procedure, inside this session
        return s.name

    w = World("a", "b")
    assert await w.start(outer, w["a"], w["b"]).result() == "outer#1"
    assert w.hears("a") == {"b"}


async def test_bad_arguments_fail_at_start() -> None:
    w = World("a")
    with pytest.raises(FlowUsageError, match="bad arguments for flow call"):
        w.start(call, w["a"])


def test_flow_must_be_async() -> None:
    with pytest.raises(TypeError, match="async def"):
        flow()(lambda s: None)  # type: ignore[arg-type, return-value]


async def test_priority_override_and_spec_metadata() -> None:
    w = World("a")
    f = w.start(hold, w["a"], priority=Priority.FLASH)
    assert f.priority == Priority.FLASH
    assert call.description.startswith("Dial both")
    await f.stop()


async def test_manager_close_stops_everything() -> None:
    w = World("a", "b", "c")
    w.start(hold, w["a"], w["b"])
    w.start(hold, w["c"])
    await w.run(3)
    await w.close()
    assert not w.manager.flows and not w.manager.tasks
    with pytest.raises(FlowUsageError, match="closing"):
        w.start(hold, w["a"])
