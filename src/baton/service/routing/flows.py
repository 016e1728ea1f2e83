"""The service's own flows, for calls the router places: joining a dial-in meeting room, a call
to a group's number, and refusing a call to a number nobody answers for. (Every dispatch feature
is in the flow library; these exist because the rooms, the groups and the numbering plan are the
service's config, and because a library flow rings its parties — a caller who dialled in must be
*answered* first, then the library flow runs inline, in the same session.)
"""

from __future__ import annotations

from typing import Any

from baton.core import (
    FlowUsageError,
    MeetingCall,
    Priority,
    Session,
    UnknownMeeting,
    User,
    flow,
)
from baton.core.port import Cause, Tone
from baton.flows import group_call
from baton.flows.ptt import PTT_COMMANDS, ptt_group

__all__ = ["dial_in", "feature_code", "group_dial_in", "ptt_dial_in", "unroutable"]


@flow(priority=Priority.ROUTINE, name="dial_in", permission="call")
async def dial_in(s: Session, caller: User, room: str) -> str:
    """Answer ``caller`` and put them in meeting room ``room``: the first caller opens the room
    (a MeetingCall that ends when the last member leaves), later callers join it."""
    await s.claim(caller)
    await s.answer(caller)
    for _ in range(10):
        try:
            meeting = s.manager.meeting(room)
        except UnknownMeeting:
            try:
                meeting = await s.meeting(caller, id=room)
            except FlowUsageError:
                continue  # another caller opened it in the same instant: join theirs
            s.settle(MeetingCall(meeting, min_members=1))
            s.note(f"{caller.id} opened room {room}")
            return "opened"
        holder = meeting.holder
        if isinstance(holder, MeetingCall) and holder.alive:
            await s.join(meeting, caller)
            holder.adopt(s.flow, caller)
            s.note(f"{caller.id} joined room {room}")
            return "joined"
        await s.sleep(0.2)  # the opener has not settled the room yet
    await s.hangup(caller, Cause.FAILURE)
    return "failed"


@flow(
    priority=group_call.priority,
    name="group_dial_in",
    permission="group_call",
    commands=group_call.commands,
)
async def group_dial_in(s: Session, caller: User, group: str, members: list[User]) -> Any:
    """``caller`` dialled group ``group``'s number: answer, then ring the other ``members`` and
    connect those who answer with the caller (the library's ``group_call``, inline)."""
    await s.claim(caller)
    await s.answer(caller)
    s.note(f"{caller.id} calls group {group}")
    return await group_call(s, caller, [m for m in members if m is not caller])


@flow(priority=ptt_group.priority, name="ptt_dial_in", permission="ptt", commands=PTT_COMMANDS)
async def ptt_dial_in(s: Session, caller: User, group: str, members: list[User]) -> Any:
    """``caller`` dialled PTT group ``group``'s number: answer, then open the library's
    ``ptt_group`` over the members; the caller, like every member, takes the floor with the
    request digit (``*``)."""
    await s.claim(caller)
    await s.answer(caller)
    s.note(f"{caller.id} opens PTT group {group}")
    everyone = [caller, *(m for m in members if m is not caller)]
    # (No ``initiator``: the library grants it the floor before the caller, already connected,
    # has joined the room, and the join then puts it in listen mode.)
    return await ptt_group(s, everyone)


@flow(priority=Priority.ROUTINE, name="unroutable")
async def unroutable(s: Session, caller: User, to: str, cause: str = "unreachable") -> str:
    """Refuse ``caller``'s call to ``to`` (no such number, or not allowed) with ``cause``."""
    await s.claim(caller)
    s.note(f"{caller.id} called {to}: {cause}")
    await s.hangup(caller, Cause(cause))
    return cause


@flow(priority=Priority.ROUTINE, name="feature_code")
async def feature_code(s: Session, caller: User, code: str, accepted: bool) -> str:
    """``caller`` dialled a feature code (``*71``: ready…); the router already acted on it.
    Answer, play the confirmation tone (or the busy tone if it was refused), hang up."""
    await s.claim(caller)
    await s.answer(caller)
    s.note(f"{caller.id} dialled {code}: {'done' if accepted else 'refused'}")
    await s.play(caller, Tone("confirm", 1.0) if accepted else Tone("busy", 2.0))
    await s.hangup(caller, Cause.NORMAL if accepted else Cause.REJECTED)
    return "done" if accepted else "refused"
