"""Positions (agent states, phones) and the dispatcher queue, over HTTP."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from baton.core.priority import priority_name
from baton.service.deps import Authed, Svc
from baton.service.errors import Conflict, Forbidden
from baton.service.positions.flows import hang_up
from baton.service.positions.service import iso
from baton.service.users.service import UsersService

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


@router.post("/users/{user_id}/hangup")
async def hang_up_user(user_id: str, principal: Authed, svc: Svc) -> dict[str, Any]:
    """End ``user_id``'s call from the console (any switch, any phone): the other party of a
    two-party call is hung up, a position's line stays up. Your own line needs no permission;
    another user's needs ``force_release``. A call held at a priority you may not preempt (an
    emergency) is refused: end the emergency itself."""
    manager = svc.manager
    user = UsersService(svc).user(user_id)
    if user_id != principal.user_id:
        principal.require("force_release", "hang up another user's call")
    if manager.leg_of(user) is None:
        raise Conflict(f"{user_id} has no call to hang up", id="no-call")
    owner = manager.owner_of(user)
    priority = 0 if owner is None else owner.priority + 1
    if priority > principal.max_priority:
        raise Forbidden(
            f"{user_id}'s call is held at {priority_name(priority - 1)}: you cannot hang it up "
            "from here (end the flow that holds it, or ask a supervisor)",
            id="priority-not-allowed",
        )
    f = manager.start(hang_up, user, priority=priority)
    svc.note_started_by(f.name, principal.user_id)
    outcome = await f.wait()
    if f.error is not None:
        raise Conflict(f"{user_id}'s call could not be hung up: {f.error}", id="hangup-failed")
    return {"flow": f.name, "outcome": outcome}


@router.get("/emergencies")
async def list_emergencies(principal: Authed, svc: Svc) -> list[dict[str, Any]]:
    """Emergencies going on now (flows at EMERGENCY): ``flow``, ``name``, ``users``,
    ``started_at`` and, once acknowledged, ``acknowledged_by`` and ``acknowledged_at``."""
    return svc.alarms.all()


@router.post("/emergencies/{flow}/ack")
async def acknowledge_emergency(flow: str, principal: Authed, svc: Svc) -> dict[str, Any]:
    """Acknowledge an emergency alarm (positions only): every console shows who did. Audited.
    409 ``already-acknowledged`` names who was first."""
    if not svc.positions.is_position(principal.user_id) and not principal.may("end_emergency"):
        raise Forbidden("only a dispatcher position acknowledges emergencies", id="not-a-position")
    return svc.alarms.acknowledge(flow, principal.user_id, principal.role)


@router.get("/queue")
async def get_queue(principal: Authed, svc: Svc) -> dict[str, Any]:
    """The dispatcher queue now: the callers in service order (``caller``, ``priority``,
    ``since``, ``waited`` seconds, ``offered_to``) and the figures (waiting, longest wait,
    answered, answered within the service level, abandoned, overflowed, failed offers, callers
    re-queued after their dispatcher's line failed)."""
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
            "requeued": f.requeued,
        },
    }
