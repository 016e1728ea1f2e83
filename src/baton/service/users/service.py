"""Users with their live state, as the console's grid shows them.

A user's *state* is the core's one-word summary (idle, dialling, ringing, connected, talking,
meeting); the view adds who they talk to, which meeting (and in which mode), who owns them at
which priority, and a one-line ``label`` ("talking with bob · call#3 at ROUTINE").
"""

from __future__ import annotations

from typing import Any

from baton.core import CallInfo, Flow, User
from baton.core.priority import priority_name
from baton.service.errors import NotFound
from baton.service.runtime import Service

__all__ = ["UsersService"]


class UsersService:
    def __init__(self, service: Service) -> None:
        self.service = service
        cfg = service.config
        roles = cfg.all_roles
        self._cfg = {u.id: u for u in cfg.users}
        self._position = {u.id for u in cfg.users if roles[u.role].position}
        self._groups: dict[str, list[str]] = {}
        for g in cfg.groups:
            for m in g.members:
                self._groups.setdefault(m, []).append(g.id)

    def user(self, user_id: str) -> User:
        try:
            return self.service.manager.user(user_id)
        except LookupError:
            raise NotFound(
                f"no user {user_id!r}", id="unknown-user", details={"user": user_id}
            ) from None

    def view(self, user: User) -> dict[str, Any]:
        m = self.service.manager
        rec = m.rec(user)
        cfg = self._cfg.get(user.id)
        state = m.state_of(user)
        leg = rec.live_leg
        owner = rec.owner
        owner_view = None
        if owner is not None:
            kind = (
                "flow"
                if isinstance(owner, Flow)
                else "callinfo"
                if isinstance(owner, CallInfo)
                else owner.kind
            )
            owner_view = {
                "name": owner.name,
                "kind": kind,
                "flow": owner.spec.name if isinstance(owner, Flow) else None,
                "priority": owner.priority,
                "priority_name": priority_name(owner.priority),
            }
        meeting_view = None
        if rec.meeting is not None:
            member = rec.meeting.members.get(user)
            meeting_view = {
                "id": rec.meeting.id,
                "mode": member.mode.value if member else None,
                "whisper_to": member.whisper_to.id if member and member.whisper_to else None,
            }
        partner = rec.bridge.id if rec.bridge is not None else None
        positions = self.service.positions
        contacts = [r.view() for r in positions.registrations(user.id)]
        caller = self.service.callers.of(user.id, leg.id if leg is not None else None)
        dialled = self.service.callers.dialled(user.id, leg.id if leg is not None else None)
        presence: dict[str, Any] = {
            "registered": bool(contacts),
            "contacts": contacts,
        }
        view: dict[str, Any] = {
            "id": user.id,
            "name": user.name,
            "numbers": list(user.numbers),
            "role": cfg.role if cfg else None,
            "position": user.id in self._position,
            "keep": user.keep,
            "groups": self._groups.get(user.id, []),
            "state": state,
            "label": _label(
                state, partner, meeting_view, owner_view, leg.direction.value if leg else None
            ),
            "leg": None
            if leg is None
            else {"id": leg.id, "direction": leg.direction.value, "state": leg.state.value},
            "partner": partner,
            # A peer line's caller (docs/cluster.md): the remote number, not the line's name.
            "caller": None if caller is None else caller.view(),
            # A peer line calling out: the number it called, not the line's name.
            "dialled": dialled,
            "meeting": meeting_view,
            "owner": owner_view,
            "registration": presence,
        }
        if positions.is_position(user.id):
            view["agent"] = positions.view(user.id)
        return view

    def all(self) -> list[dict[str, Any]]:
        return [self.view(u) for u in self.service.manager.users()]

    def groups(self) -> list[dict[str, Any]]:
        return [
            {
                "id": g.id,
                "name": g.name or g.id,
                "members": list(g.members),
                "number": g.number,
                "mode": g.mode,
            }
            for g in self.service.config.groups
        ]


def _label(
    state: str,
    partner: str | None,
    meeting: dict[str, Any] | None,
    owner: dict[str, Any] | None,
    direction: str | None,
) -> str:
    if state == "talking" and partner:
        text = f"talking with {partner}"
    elif state == "meeting" and meeting:
        mode = meeting["mode"]
        text = f"in meeting {meeting['id']}" + (f" ({mode})" if mode and mode != "speak" else "")
    elif state == "ringing" and direction == "inbound":
        text = "calling in"
    else:
        text = state
    if owner is not None:
        text += f" · owned by {owner['name']} at {owner['priority_name']}"
    return text
