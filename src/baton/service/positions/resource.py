"""Positions (agent states, phones) and the dispatcher queue, over HTTP."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from baton.service.deps import Authed, Svc
from baton.service.errors import Forbidden
from baton.service.positions.service import iso

router = APIRouter(prefix="/api", tags=["positions"])


class AgentStateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state: str = Field(description="logged_out, ready, not_ready or wrap_up")
    reason: str | None = Field(default=None, max_length=80, description="why not ready")


@router.get("/positions")
async def list_positions(principal: Authed, svc: Svc) -> list[dict[str, Any]]:
    """Every dispatcher position: its agent state (``state``, ``label``, ``since``, and
    ``reason`` when not ready), its registered phones, and the queued caller being offered to
    it now, if any."""
    positions = svc.positions
    queue = svc.queue()
    out = []
    for uid in positions.ids():
        user = svc.manager.user(uid)
        item: dict[str, Any] = {
            "id": uid,
            "name": user.name,
            "agent": positions.view(uid),
            "registrations": [r.view() for r in positions.registrations(uid)],
        }
        offered = None if queue is None else queue.offered_to(user)
        if offered is not None:
            item["offered"] = offered.id
        out.append(item)
    return out


@router.put("/positions/{user_id}/state")
async def set_agent_state(
    user_id: str, body: AgentStateBody, principal: Authed, svc: Svc
) -> dict[str, Any]:
    """Set a position's agent state. A dispatcher sets their own; another position's needs
    permission ``positions`` (supervisors). ``busy`` is shown, never set. Audited."""
    if user_id != principal.user_id:
        principal.require("positions", "change another position's agent state")
    elif not svc.positions.is_position(user_id):
        raise Forbidden(f"{user_id} is not a dispatcher position", id="not-a-position")
    return svc.positions.set(
        user_id,
        body.state,
        reason=body.reason,
        by=principal.user_id,
        role=principal.role,
        via="console" if principal.via == "session" else "api",
    )


@router.get("/queue")
async def get_queue(principal: Authed, svc: Svc) -> dict[str, Any]:
    """The dispatcher queue now: the callers in service order (``caller``, ``priority``,
    ``since``, ``waited`` seconds, ``offered_to``) and the figures (waiting, longest wait,
    answered, answered within the service level, abandoned, overflowed, failed offers)."""
    queue = svc.queue()
    if queue is None:
        return {"callers": [], "figures": None}
    now = svc.manager.now()
    wall = svc.wallclock()
    callers = []
    for e in queue.callers():
        item: dict[str, Any] = {
            "caller": e.caller.id,
            "priority": e.priority,
            "since": iso(wall - (now - e.since)),
            "waited": round(now - e.since, 1),
        }
        if e.offered_to is not None:
            item["offered_to"] = e.offered_to.id
        callers.append(item)
    f = queue.snapshot()
    return {
        "name": queue.name,
        "callers": callers,
        "figures": {
            "waiting": f.waiting,
            "longest_wait": round(f.longest_wait, 1),
            "answered": f.answered,
            "answered_within": f.answered_within,
            "service_level": f.service_level,
            "abandoned": f.abandoned,
            "overflowed": f.overflowed,
            "offers_failed": f.offers_failed,
        },
    }
