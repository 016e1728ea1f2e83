"""The service's own two flows, for calls the router places: joining a dial-in meeting room, and
refusing a call to a number nobody answers for. (Every dispatch feature is in the flow library;
these exist only because the rooms and the numbering plan are the service's config.)
"""

from __future__ import annotations

from baton.core import (
    FlowUsageError,
    MeetingCall,
    Priority,
    Session,
    UnknownMeeting,
    User,
    flow,
)
from baton.switch.port import Cause

__all__ = ["dial_in", "unroutable"]


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


@flow(priority=Priority.ROUTINE, name="unroutable")
async def unroutable(s: Session, caller: User, to: str, cause: str = "unreachable") -> str:
    """Refuse ``caller``'s call to ``to`` (no such number, or not allowed) with ``cause``."""
    await s.claim(caller)
    s.note(f"{caller.id} called {to}: {cause}")
    await s.hangup(caller, Cause(cause))
    return cause
