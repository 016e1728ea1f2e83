"""Errors that teach: each says what happened, to which user, by which flow, and what to do."""

from __future__ import annotations

import asyncio

import pytest
from core_flows import call as core_call
from core_flows import emergency, hold

from baton.core import (
    BatonError,
    Busy,
    CallFailed,
    ClaimDenied,
    NotOwner,
    Preempted,
    Priority,
    Session,
    Superseded,
    User,
    UserHungUp,
    errors,
    flow,
)
from baton.core.port import Cause
from baton.testing import World


def test_every_error_has_a_stable_code() -> None:
    classes = [
        c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, BatonError)
    ]
    codes = [c.code for c in classes]
    assert len(codes) == len(set(codes)), "codes must be unique"
    assert all(code and code == code.lower() and " " not in code for code in codes)


async def test_not_owner_names_the_user_the_holder_and_the_fix() -> None:
    @flow()
    async def rude(s: Session, a: User) -> None:
        await s.play(a, "busy")

    w = World("a")
    h = w.start(hold, w["a"])
    await w.run(2)
    f = w.start(rude, w["a"])
    with pytest.raises(NotOwner) as info:
        await f.result()
    msg = str(info.value)
    assert "rude#1 does not own user 'a'" in msg
    assert f"owned by {h.name}" in msg
    assert "Claim it before operating on it" in msg
    await h.stop()


async def test_claim_denied_names_both_priorities_and_what_to_do() -> None:
    w = World("a")
    w.start(hold, w["a"], priority=Priority.FLASH)
    await w.run(2)

    @flow()
    async def want(s: Session, a: User) -> None:
        await s.claim(a)

    with pytest.raises(ClaimDenied) as info:
        await w.start(want, w["a"]).result()
    msg = str(info.value)
    assert "want#1 (priority ROUTINE) cannot take user 'a' from hold#1 (priority FLASH)" in msg
    assert "strictly higher priority" in msg
    assert info.value.code == "claim-denied"


async def test_preempted_names_the_taker_its_priority_and_the_way_on() -> None:
    w = World("a", "b", "d")
    x = w.start(hold, w["a"], w["b"])
    await w.run(3)
    w.start(emergency, w["d"], w["a"])
    await x.wait()
    err = x.error
    assert isinstance(err, Preempted)
    msg = str(err)
    assert "user 'a' taken from hold#1 by emergency#1 at priority EMERGENCY" in msg
    assert "carry on with your other users" in msg
    assert err.by == "emergency#1" and err.priority == Priority.EMERGENCY


def test_the_other_notices_and_failures_read_well() -> None:
    u = User("alice")
    assert "user 'alice' hung up (normal) while owned by call#1" in str(
        UserHungUp(u, "call#1", Cause.NORMAL)
    )
    assert str(CallFailed.for_cause(u, Cause.BUSY)) == "call to user 'alice' failed: busy"
    assert isinstance(CallFailed.for_cause(u, Cause.BUSY), Busy)
    sup = Superseded(u, "barge_in#1", "emergency#2")
    assert "barge_in#1's claim on user 'alice' was superseded by emergency#2" in str(sup)


async def test_a_flow_started_with_arguments_of_the_wrong_type_is_refused_at_once() -> None:
    # A user given by id failed deep inside the flow ("'str' object has no attribute 'id'").
    w = World("a", "b")
    with pytest.raises(errors.FlowUsageError, match=r"callee must be a User object .* not str 'b'"):
        w.start(core_call, w["a"], "b")
    with pytest.raises(errors.FlowUsageError, match=r"ring must be a number, not str 'x'"):
        w.start(core_call, w["a"], w["b"], ring="x")
    with pytest.raises(errors.FlowUsageError, match=r"users must be a User object .* not str 'a'"):
        w.start(hold, w["b"], "a")
    assert w.manager.flows == {}  # nothing started
    f = w.start(core_call, w["a"], w["b"], ring=5)  # an int is a number of seconds
    await f.result()
    w.assert_ok()


async def test_a_flow_refused_for_missing_arguments_is_not_left_running() -> None:
    w = World("a", "b")
    with pytest.raises(errors.FlowUsageError, match="missing a required argument: 'callee'"):
        w.start(core_call, w["a"])
    assert w.manager.flows == {}  # it never ran: nothing to end, nothing listed as running


@flow(priority=Priority.ROUTINE, commands={"go": "go on"})
async def _slow_to_finish(s: Session) -> None:
    async def undo() -> None:
        await asyncio.sleep(5)

    s.compensate(undo)


async def test_a_command_to_a_finishing_or_ended_flow_says_which() -> None:
    w = World()
    f = w.start(_slow_to_finish)
    await w.run(1)  # returned; its compensation runs for five seconds
    with pytest.raises(errors.FlowUsageError, match=r"_slow_to_finish#1 is finishing: it takes"):
        f.send("go")
    await w.run(10)
    with pytest.raises(errors.FlowUsageError, match=r"_slow_to_finish#1 has ended: it takes"):
        f.send("go")


async def test_an_id_given_for_a_user_is_a_usage_error_that_says_how_to_look_it_up() -> None:
    # docs/core.md "Errors": messages name the user and what to do — a flow that passes the
    # id string where a User belongs hears that, not AttributeError("'str' has no 'id'")
    @flow()
    async def by_id(s: Session, a: User) -> None:
        await s.claim("a")  # type: ignore[arg-type]

    w = World("a")
    f = w.start(by_id, w["a"])
    with pytest.raises(errors.FlowUsageError) as info:
        await f.result()
    msg = str(info.value)
    assert "expected a User" in msg and "'a'" in msg
    assert "s.user('a')" in msg
    w.assert_ok()


async def test_a_play_of_something_neither_tone_nor_prompt_is_a_usage_error() -> None:
    @flow()
    async def odd(s: Session, a: User) -> None:
        await s.claim(a)
        await s.dial(a)
        await s.play(a, 42)  # type: ignore[arg-type]

    w = World("a")
    f = w.start(odd, w["a"])
    with pytest.raises(errors.FlowUsageError) as info:
        await f.result()
    assert "Tone" in str(info.value) and "Prompt" in str(info.value) and "42" in str(info.value)


async def test_a_timeout_that_is_no_number_is_a_usage_error_naming_it() -> None:
    @flow()
    async def slow(s: Session, a: User) -> None:
        await s.claim(a)
        await s.dial(a, timeout="soon")  # type: ignore[arg-type]

    w = World("a")
    f = w.start(slow, w["a"])
    with pytest.raises(errors.FlowUsageError) as info:
        await f.result()
    assert "timeout" in str(info.value) and "'soon'" in str(info.value)


async def test_claiming_a_user_the_flow_holds_is_a_no_op() -> None:
    # Session.claim's docstring (docs/api.md): the user stays as it is — same epoch, its call
    # untouched, no preemption of itself.
    @flow()
    async def twice(s: Session, a: User) -> int:
        await s.claim(a)
        await s.dial(a)
        await s.claim(a, a)
        assert s.owns(a) and s.leg_of(a) is not None
        await s.hangup(a)
        return len([ev for ev in w.kinds("owner.changed") if ev.user == "a"])  # type: ignore[attr-defined]

    w = World("a")
    f = w.start(twice, w["a"])
    assert await f.result() == 1  # taken once; the flow's end releases it afterwards
    assert not w.kinds("preemption.started")
    w.assert_ok()


def test_flow_misdeclared_says_how_to_declare_it() -> None:
    # @flow without its parentheses returned the decorator itself, so the "flow" was a plain
    # function that failed later and elsewhere; a priority by name and commands as a list
    # failed with int()'s and dict()'s own words.
    async def body(s: Session, a: User) -> None:
        await s.claim(a)

    with pytest.raises(TypeError, match=r"@flow\(\)"):
        flow(body)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"Priority\.FLASH"):
        flow(priority="FLASH")(body)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="priority"):
        flow(priority=True)(body)
    with pytest.raises(TypeError, match=r"\{'end': "):
        flow(commands=["end"])(body)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="commands"):
        flow(commands={"end": 1})(body)  # type: ignore[dict-item]
    assert flow(priority=Priority.FLASH, commands={"end": "stop"})(body).priority == 30
