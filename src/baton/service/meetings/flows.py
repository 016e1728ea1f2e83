"""The service's flow for taking members out of a meeting held by a MeetingCall (a dial-in room,
a conference that went on without its dispatcher).

A MeetingCall runs no procedure, so removing a member is done the core's way: a flow one level
above the MeetingCall claims the member — the MeetingCall learns it lost them and applies its own
policy (it ends when too few remain) — then hangs the member up and lets them go.
"""

from __future__ import annotations

import contextlib

from baton.core import BatonError, EndReason, Priority, Session, User, flow
from baton.core.port import Cause

__all__ = ["meeting_release"]


@flow(priority=Priority.PRIORITY, name="meeting_release", permission="meeting")
async def meeting_release(s: Session, members: list[User], reason: str) -> list[str]:
    """Take each of ``members`` from whatever holds them and hang them up; returns who was
    hung up (a member who left meanwhile is skipped)."""
    gone: list[str] = []
    for user in members:
        with contextlib.suppress(BatonError):
            await s.claim(user, reason=reason)
            await s.hangup(user, Cause.NORMAL, EndReason(reason))
            s.release(user)
            gone.append(user.id)
    return gone
