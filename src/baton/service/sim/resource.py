"""Virtual phones, for ``baton serve --sim``: make a phone call in, answer, hang up, press
digits, or change how it reacts — so a newcomer drives the outside world from the console.

Only on the ``sim`` switch (404 ``not-sim`` otherwise); needs the ``start`` permission; audited.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from baton.core.port import SwitchError
from baton.service.auth.permissions import Principal
from baton.service.config import SimPhoneConfig
from baton.service.deps import Authed, Svc, client_address
from baton.service.errors import Conflict, NotFound
from baton.service.runtime import Service
from baton.service.switches import sim_behaviour
from baton.switch.sim import SimSwitch

router = APIRouter(prefix="/api/sim", tags=["sim"])


class Dial(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: str = Field(min_length=1, max_length=64, examples=["100"])


class Press(BaseModel):
    model_config = ConfigDict(extra="forbid")

    digits: str = Field(pattern=r"^[0-9*#A-D]{1,32}$")


class Behave(BaseModel):
    model_config = ConfigDict(extra="forbid")

    behaviour: Literal["answers", "busy", "never_answers", "rejects", "unreachable"] = "answers"
    answer_after: float = Field(default=1.5, ge=0, le=600)
    hangup_after: float | None = Field(default=None, gt=0, le=86400)


def _sim(svc: Service) -> SimSwitch:
    if svc.sim is None:
        raise NotFound("the service does not run on the sim switch", id="not-sim")
    return svc.sim


def _phone(sim: SimSwitch, user: str) -> None:
    if user not in sim.phones:
        raise NotFound(f"no phone for user {user!r}", id="unknown-user", details={"user": user})


async def _act(
    svc: Service,
    principal: Principal,
    request: Request,
    user: str,
    action: str,
    details: dict[str, Any],
) -> None:
    svc.audit(principal, f"sim.{action}", user, "ok", details, remote=client_address(request))
    await svc.journal.sync()


@router.get("/phones")
async def phones(principal: Authed, svc: Svc) -> list[dict[str, Any]]:
    """Every virtual phone: its behaviour, what it hears now, its room."""
    sim = _sim(svc)
    out = []
    for user, phone in sim.phones.items():
        b = phone.behaviour
        out.append(
            {
                "user": user,
                "behaviour": {
                    "answer_after": b.answer_after,
                    "fail": b.fail.value if b.fail else None,
                    "hangup_after": b.hangup_after,
                },
                "hears": sorted(sim.hears(user)),
                "room": sim.room_of(user),
                "calls": phone.calls,
            }
        )
    return out


@router.post("/phones/{user}/dial")
async def dial(
    user: str, body: Dial, request: Request, principal: Authed, svc: Svc
) -> dict[str, Any]:
    """The phone calls a number (a user's, a group's, a room's, the dispatcher or emergency
    number): the numbering plan routes it like any inbound call."""
    principal.require("start", "drive virtual phones")
    principal.require_users([user], "drive virtual phones")
    sim = _sim(svc)
    _phone(sim, user)
    if sim.leg_of(user) is not None:
        raise Conflict(
            f"{user}'s phone is already on a call", id="phone-busy", details={"user": user}
        )
    leg = sim.call_in(user, body.to)
    await _act(svc, principal, request, user, "dial", {"to": body.to})
    return {"user": user, "leg": leg}


@router.post("/phones/{user}/hangup")
async def hangup(user: str, request: Request, principal: Authed, svc: Svc) -> dict[str, Any]:
    """The phone hangs up (whatever call it is on)."""
    principal.require("start", "drive virtual phones")
    principal.require_users([user], "drive virtual phones")
    sim = _sim(svc)
    _phone(sim, user)
    sim.hang_up(user)
    await _act(svc, principal, request, user, "hangup", {})
    return {"user": user}


@router.post("/phones/{user}/answer")
async def answer(user: str, request: Request, principal: Authed, svc: Svc) -> dict[str, Any]:
    """The phone picks up the call ringing at it now."""
    principal.require("start", "drive virtual phones")
    principal.require_users([user], "drive virtual phones")
    sim = _sim(svc)
    _phone(sim, user)
    try:
        sim.answer_now(user)
    except SwitchError as exc:
        raise Conflict(str(exc), id="not-ringing", details={"user": user}) from None
    await _act(svc, principal, request, user, "answer", {})
    return {"user": user}


@router.post("/phones/{user}/press")
async def press(
    user: str, body: Press, request: Request, principal: Authed, svc: Svc
) -> dict[str, Any]:
    """The phone presses DTMF digits on its connected call."""
    principal.require("start", "drive virtual phones")
    principal.require_users([user], "drive virtual phones")
    sim = _sim(svc)
    _phone(sim, user)
    try:
        sim.press(user, body.digits)
    except SwitchError as exc:
        raise Conflict(str(exc), id="not-connected", details={"user": user}) from None
    await _act(svc, principal, request, user, "press", {"digits": body.digits})
    return {"user": user}


@router.put("/phones/{user}/behaviour")
async def behave(
    user: str, body: Behave, request: Request, principal: Authed, svc: Svc
) -> dict[str, Any]:
    """How the phone reacts to the next call."""
    principal.require("start", "drive virtual phones")
    principal.require_users([user], "drive virtual phones")
    sim = _sim(svc)
    _phone(sim, user)
    phone = SimPhoneConfig(
        behaviour=body.behaviour, answer_after=body.answer_after, hangup_after=body.hangup_after
    )
    sim.behave(user, sim_behaviour(phone, body.answer_after))
    await _act(svc, principal, request, user, "behaviour", body.model_dump())
    return {"user": user, **body.model_dump()}
