"""Meeting endpoints: list, member modes, kick, end."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict

from baton.service.deps import Authed, Svc, client_address
from baton.service.meetings.service import MeetingsService

router = APIRouter(prefix="/api", tags=["meetings"])


class MemberMode(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["speak", "muted", "listen"]


@router.get("/meetings")
async def list_meetings(principal: Authed, svc: Svc) -> list[dict[str, Any]]:
    """Live meetings (holder, members and their modes) and the configured dial-in rooms."""
    return MeetingsService(svc).all()


@router.get("/meetings/{meeting_id}")
async def get_meeting(meeting_id: str, principal: Authed, svc: Svc) -> dict[str, Any]:
    meetings = MeetingsService(svc)
    return meetings.view(meetings.meeting(meeting_id))


@router.put("/meetings/{meeting_id}/members/{user_id}")
async def set_mode(
    meeting_id: str, user_id: str, body: MemberMode, request: Request, principal: Authed, svc: Svc
) -> dict[str, Any]:
    """Mute (``muted``), unmute (``speak``) or make a member listen only (``listen``)."""
    return await MeetingsService(svc).control(
        principal, meeting_id, "mode", user_id, body.mode, client_address(request)
    )


@router.delete("/meetings/{meeting_id}/members/{user_id}")
async def kick(
    meeting_id: str, user_id: str, request: Request, principal: Authed, svc: Svc
) -> dict[str, Any]:
    """Hang up a member."""
    return await MeetingsService(svc).control(
        principal, meeting_id, "kick", user_id, None, client_address(request)
    )


@router.delete("/meetings/{meeting_id}")
async def end(meeting_id: str, request: Request, principal: Authed, svc: Svc) -> dict[str, Any]:
    """End the meeting for everyone."""
    return await MeetingsService(svc).control(
        principal, meeting_id, "end", None, None, client_address(request)
    )
