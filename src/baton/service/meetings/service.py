"""Meeting controls: list meetings and rooms; mute, unmute, listen-only, kick; end a meeting.

A meeting is held by a flow (a conference) or by a MeetingCall (a settled conference, a dial-in
room). A control on a meeting held by a flow is sent to that flow as a command (``mute``,
``unmute``, ``listen``, ``kick``, ``end``), so the flow stays in charge of its own members; a
flow that takes no such command makes the meeting not controllable (409
``meeting-not-controllable``). A control on a meeting held by a MeetingCall is carried out by the
UserManager on the MeetingCall's behalf — it owns the members, so the operation is fenced like
any other; a mode change is done this way.

Removing members from a MeetingCall (kick, end) is done by a :func:`meeting_release` flow one
level above the MeetingCall, which claims them — the MeetingCall is told, and ends by its own
policy when too few remain.

Every control needs the ``meeting`` permission and a priority cap at least the holder's, and is
audited.
"""

from __future__ import annotations

import asyncio
from typing import Any

from baton.core import BatonError, Flow, Meeting, MeetingCall, User
from baton.core.port import MeetingMode
from baton.core.priority import priority_name
from baton.service.auth.permissions import Principal
from baton.service.errors import Conflict, Forbidden, NotFound, Unprocessable, from_core
from baton.service.meetings.flows import meeting_release
from baton.service.runtime import Service

__all__ = ["MODES", "MeetingsService"]

#: API mode → (core mode, the conference flow's command).
MODES: dict[str, tuple[MeetingMode, str]] = {
    "speak": (MeetingMode.SPEAK, "unmute"),
    "muted": (MeetingMode.MUTED, "mute"),
    "listen": (MeetingMode.LISTEN, "listen"),
}


#: What each meeting control does, for a refusal ("role 'field' may not mute, unmute or …").
_ACTIONS = {
    "mode": "mute, unmute or set listen-only in meetings",
    "kick": "kick members out of meetings",
    "end": "end meetings",
}


class MeetingsService:
    def __init__(self, service: Service) -> None:
        self.service = service

    def meeting(self, meeting_id: str) -> Meeting:
        try:
            return self.service.manager.meeting(meeting_id)
        except LookupError:
            raise NotFound(
                f"no live meeting {meeting_id!r}",
                id="unknown-meeting",
                details={"meeting": meeting_id},
            ) from None

    def view(self, m: Meeting) -> dict[str, Any]:
        holder = m.holder
        room = self.service.rooms.get(m.id)
        return {
            "id": m.id,
            "live": True,
            "room": None if room is None else {"number": room.number, "name": room.name or room.id},
            "holder": None
            if holder is None
            else {
                "name": holder.name,
                "kind": "flow" if isinstance(holder, Flow) else "callinfo",
                "priority": holder.priority,
                "priority_name": priority_name(holder.priority),
            },
            "members": [
                {
                    "user": u.id,
                    "mode": st.mode.value,
                    "whisper_to": st.whisper_to.id if st.whisper_to else None,
                }
                for u, st in m.members.items()
            ],
        }

    def all(self) -> list[dict[str, Any]]:
        live = {m.id: self.view(m) for m in self.service.manager.meetings()}
        for room in self.service.config.meetings:
            if room.id not in live:
                live[room.id] = {
                    "id": room.id,
                    "live": False,
                    "room": {"number": room.number, "name": room.name or room.id},
                    "holder": None,
                    "members": [],
                }
        return list(live.values())

    def _check(self, principal: Principal, m: Meeting, action: str) -> None:
        principal.require("meeting", action)
        if m.holder is not None:
            principal.require_priority(m.holder.priority, "control meetings")
        # Controlling a meeting acts on its members: all of them must be in the caller's scope.
        principal.require_users((u.id for u in m.members), "control this meeting")

    def _member(self, m: Meeting, user_id: str) -> User:
        for u in m.members:
            if u.id == user_id:
                return u
        raise NotFound(
            f"{user_id!r} is not a member of meeting {m.id!r}",
            id="unknown-member",
            details={"meeting": m.id, "user": user_id},
        )

    async def _via_flow(self, flow: Flow, command: str, principal: Principal, **args: Any) -> Any:
        if command not in flow.spec.commands:
            raise Conflict(
                f"meeting is held by {flow.name}, which takes no {command!r} command",
                id="meeting-not-controllable",
                details={"holder": flow.name, "command": command},
            )
        try:
            fut = flow.send(command, by=principal.user_id, **args)
            async with asyncio.timeout(15):
                return await asyncio.shield(fut)
        except BatonError as exc:
            raise from_core(exc) from None

    async def _release(
        self, principal: Principal, holder: MeetingCall, users: list[User], reason: str
    ) -> None:
        """Remove members from a MeetingCall with a :func:`meeting_release` flow one level
        above it (the principal's cap must allow that level)."""
        level = holder.priority + 1
        principal.require_priority(level, "remove meeting members")
        flow = self.service.manager.start(meeting_release, users, reason, priority=level)
        self.service.note_started_by(flow.name, principal.user_id)
        async with asyncio.timeout(15):
            await flow.result()

    async def control(
        self,
        principal: Principal,
        meeting_id: str,
        action: str,
        user_id: str | None,
        mode: str | None,
        remote: str | None,
    ) -> dict[str, Any]:
        """``action``: ``mode`` (with ``mode``), ``kick`` (a member), ``end`` (the meeting)."""
        m = self.meeting(meeting_id)
        svc = self.service
        details = {"action": action, "user": user_id, "mode": mode}
        try:
            self._check(principal, m, _ACTIONS.get(action, f"{action} in meetings"))
        except Forbidden as exc:
            svc.audit(
                principal,
                f"meeting.{action}",
                meeting_id,
                "denied",
                {**details, "error": exc.id},
                remote=remote,
            )
            await svc.journal.sync()
            raise
        holder = m.holder
        reply: Any = None
        try:
            if action == "mode":
                if mode not in MODES:
                    raise Unprocessable(
                        f"mode must be one of {', '.join(MODES)}", details={"field": "mode"}
                    )
                user = self._member(m, user_id or "")
                core_mode, command = MODES[mode]
                if isinstance(holder, Flow):
                    reply = await self._via_flow(holder, command, principal, user=user.id)
                elif isinstance(holder, MeetingCall):
                    await svc.manager.join(holder, m, user, core_mode)
                    reply = mode
                else:
                    raise Conflict("nobody holds this meeting", id="meeting-not-controllable")
            elif action == "kick":
                user = self._member(m, user_id or "")
                if isinstance(holder, Flow):
                    reply = await self._via_flow(holder, "kick", principal, user=user.id)
                elif isinstance(holder, MeetingCall):
                    await self._release(principal, holder, [user], f"kicked by {principal.user_id}")
                    reply = "kicked"
                else:
                    raise Conflict("nobody holds this meeting", id="meeting-not-controllable")
            elif action == "end":
                if isinstance(holder, Flow):
                    reply = await self._via_flow(holder, "end", principal)
                elif isinstance(holder, MeetingCall):
                    members = [u for u in m.members if u in holder.users]
                    await self._release(principal, holder, members, f"ended by {principal.user_id}")
                    reply = "ended"
                else:
                    raise Conflict("nobody holds this meeting", id="meeting-not-controllable")
            else:
                raise NotFound(f"no meeting action {action!r}")
        except BatonError as exc:
            err = from_core(exc, meeting=meeting_id)
            svc.audit(
                principal,
                f"meeting.{action}",
                meeting_id,
                "failed",
                {**details, "error": err.id},
                remote=remote,
            )
            await svc.journal.sync()
            raise err from None
        svc.audit(principal, f"meeting.{action}", meeting_id, "ok", details, remote=remote)
        await svc.journal.sync()
        return {
            "meeting": meeting_id,
            "action": action,
            "reply": reply if isinstance(reply, str | int | float | bool | None) else str(reply),
        }
