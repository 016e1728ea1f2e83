"""Flow endpoints: the library, flows in progress, start, command, cancel, trace."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from baton.service.deps import Authed, Svc, client_address
from baton.service.flows.schema import CancelFlow, SendCommand, StartFlow
from baton.service.flows.service import FlowsService

router = APIRouter(prefix="/api", tags=["flows"])


@router.get("/library")
async def library(principal: Authed, svc: Svc) -> list[dict[str, Any]]:
    """Every flow of the library: description, default priority, permission, parameters (name,
    kind, required, default, choices, unit), commands, and whether the caller may start it."""
    return FlowsService(svc).library(principal)


@router.get("/flows")
async def running(principal: Authed, svc: Svc) -> list[dict[str, Any]]:
    """Flows in progress, highest priority first: users held, priority, who started it."""
    return FlowsService(svc).running()


@router.post("/flows", status_code=201)
async def start(body: StartFlow, request: Request, principal: Authed, svc: Svc) -> dict[str, Any]:
    """Start a library flow by name with JSON arguments; answers once the flow has claimed its
    users (or, with ``wait``, once it ended). 403 ``forbidden`` or ``priority-not-allowed``; 404
    ``unknown-flow``; 422 naming the bad field (``details.field``); 409 with the core's id
    (``claim-denied``, ``busy``, ...) if the flow failed at its first step."""
    return await FlowsService(svc).start(
        principal, body.flow, body.args, body.priority, client_address(request), wait=body.wait
    )


@router.get("/flows/{name}")
async def get_flow(name: str, principal: Authed, svc: Svc) -> dict[str, Any]:
    """One running flow (``call#3``)."""
    flows = FlowsService(svc)
    return flows.view(flows.get(name))


@router.post("/flows/{name}/commands")
async def command(
    name: str, body: SendCommand, request: Request, principal: Authed, svc: Svc
) -> dict[str, Any]:
    """Send a command to a running flow and return its reply. 409 with the core's error id if
    the flow refuses it; 504 ``command-timeout`` if it does not answer."""
    return await FlowsService(svc).command(
        principal, name, body.command, body.args, client_address(request)
    )


@router.post("/flows/{name}/cancel")
async def cancel(
    name: str, request: Request, principal: Authed, svc: Svc, body: CancelFlow | None = None
) -> dict[str, Any]:
    """Cancel a running flow; its compensations run. Idempotent: ``result`` says what happened
    (``cancelled``, ``already_cancelling``, ``already_finishing``, ``already_ended``)."""
    reason = body.reason if body else None
    return await FlowsService(svc).cancel(principal, name, reason, client_address(request))


@router.delete("/flows/{name}")
async def delete(name: str, request: Request, principal: Authed, svc: Svc) -> dict[str, Any]:
    """Same as ``POST /api/flows/{name}/cancel``."""
    return await FlowsService(svc).cancel(principal, name, None, client_address(request))


@router.get("/flows/{name}/trace")
async def trace(name: str, principal: Authed, svc: Svc) -> dict[str, Any]:
    """The flow's trace as a sequence diagram: ``lifelines`` and ``steps`` (from, to, label, text,
    t relative to the start). Works for running flows and those of this run that ended."""
    return await FlowsService(svc).trace(name)
