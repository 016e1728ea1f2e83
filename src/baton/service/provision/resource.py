"""Provisioning endpoints: create (``POST``), change (``PATCH``, only the keys sent) and remove
(``DELETE``) users, groups, meeting rooms and roles. They need the ``provision`` permission
(built-in role ``admin``); changes are live at once, stored, and audited (docs/service.md,
Provisioning)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from baton.service.config import GroupConfig, MeetingConfig, UserConfig
from baton.service.deps import Authed, Svc, client_address
from baton.service.provision.schema import (
    GroupChange,
    RoleChange,
    RoleCreate,
    RoomChange,
    UserChange,
)
from baton.service.provision.service import Provisioning, role_from

router = APIRouter(prefix="/api", tags=["provisioning"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    403: {"description": "no `provision` permission, or `privilege-escalation`"},
    404: {"description": "`unknown-user`, `unknown-group`, `unknown-room`, `unknown-role`"},
    409: {
        "description": "`already-exists`, `number-in-use`, `user-busy` (in a call), "
        "`role-in-use`, `room-in-use`, `builtin-role`, `last-user`, `last-position`, "
        "`user-in-use`, `cannot-remove-self`"
    },
    422: {"description": "`invalid-request` (unknown key, bad value), `invalid-directory`"},
}


# ---- users


@router.post("/users", status_code=201, responses=_ERRORS)
async def create_user(
    body: UserConfig, request: Request, principal: Authed, svc: Svc
) -> dict[str, Any]:
    """Create a user (the keys of a ``[[users]]`` table). It can register and be called at once;
    the answer never shows the password."""
    return await Provisioning(svc).create(
        principal, "user", body.id, body, remote=client_address(request)
    )


@router.patch("/users/{user_id}", responses=_ERRORS)
async def change_user(
    user_id: str, body: UserChange, request: Request, principal: Authed, svc: Svc
) -> dict[str, Any]:
    """Change a user's keys (only those sent; ``null`` unsets). A new password takes effect for
    the next login and the next SIP authentication."""
    return await Provisioning(svc).update(
        principal,
        "user",
        user_id,
        body.model_dump(exclude_unset=True, mode="json"),
        remote=client_address(request),
    )


@router.delete("/users/{user_id}", responses=_ERRORS)
async def remove_user(
    user_id: str, request: Request, principal: Authed, svc: Svc
) -> dict[str, Any]:
    """Remove a user: refused (409 ``user-busy``) while the user is in a call. Its phones'
    registrations end, its sessions and tokens stop working, and it leaves its groups (named in
    ``groups``)."""
    return await Provisioning(svc).remove(
        principal, "user", user_id, remote=client_address(request)
    )


# ---- groups


@router.get("/groups/{group_id}", responses=_ERRORS)
async def get_group(group_id: str, principal: Authed, svc: Svc) -> dict[str, Any]:
    p = Provisioning(svc)
    return p.view(p.entry("group", group_id))


@router.post("/groups", status_code=201, responses=_ERRORS)
async def create_group(
    body: GroupConfig, request: Request, principal: Authed, svc: Svc
) -> dict[str, Any]:
    """Create a group (the keys of a ``[[groups]]`` table): ``mode`` ``call`` (a group call)
    or ``ptt`` (push-to-talk) is what dialling its ``number`` opens."""
    return await Provisioning(svc).create(
        principal, "group", body.id, body, remote=client_address(request)
    )


@router.patch("/groups/{group_id}", responses=_ERRORS)
async def change_group(
    group_id: str, body: GroupChange, request: Request, principal: Authed, svc: Svc
) -> dict[str, Any]:
    """Change a group (``members`` replaces the list). Calls already started keep the members
    they started with."""
    return await Provisioning(svc).update(
        principal,
        "group",
        group_id,
        body.model_dump(exclude_unset=True, mode="json"),
        remote=client_address(request),
    )


@router.delete("/groups/{group_id}", responses=_ERRORS)
async def remove_group(
    group_id: str, request: Request, principal: Authed, svc: Svc
) -> dict[str, Any]:
    return await Provisioning(svc).remove(
        principal, "group", group_id, remote=client_address(request)
    )


# ---- meeting rooms


@router.get("/rooms", responses=_ERRORS)
async def list_rooms(principal: Authed, svc: Svc) -> list[dict[str, Any]]:
    """The dial-in meeting rooms (calling ``number`` puts the caller in meeting ``id``)."""
    p = Provisioning(svc)
    return [p.view(e) for e in p.entries("room")]


@router.get("/rooms/{room_id}", responses=_ERRORS)
async def get_room(room_id: str, principal: Authed, svc: Svc) -> dict[str, Any]:
    p = Provisioning(svc)
    return p.view(p.entry("room", room_id))


@router.post("/rooms", status_code=201, responses=_ERRORS)
async def create_room(
    body: MeetingConfig, request: Request, principal: Authed, svc: Svc
) -> dict[str, Any]:
    """Create a dial-in meeting room (the keys of a ``[[meetings]]`` table)."""
    return await Provisioning(svc).create(
        principal, "room", body.id, body, remote=client_address(request)
    )


@router.patch("/rooms/{room_id}", responses=_ERRORS)
async def change_room(
    room_id: str, body: RoomChange, request: Request, principal: Authed, svc: Svc
) -> dict[str, Any]:
    return await Provisioning(svc).update(
        principal,
        "room",
        room_id,
        body.model_dump(exclude_unset=True, mode="json"),
        remote=client_address(request),
    )


@router.delete("/rooms/{room_id}", responses=_ERRORS)
async def remove_room(
    room_id: str, request: Request, principal: Authed, svc: Svc
) -> dict[str, Any]:
    """Remove a room: refused (409 ``room-in-use``) while a meeting is open in it."""
    return await Provisioning(svc).remove(
        principal, "room", room_id, remote=client_address(request)
    )


# ---- roles


@router.get("/roles", responses=_ERRORS)
async def list_roles(principal: Authed, svc: Svc) -> list[dict[str, Any]]:
    """Every role as it applies now (built-ins with their tables applied): permissions, cap,
    position, scope, and its users."""
    return Provisioning(svc).roles()


@router.get("/roles/{name}", responses=_ERRORS)
async def get_role(name: str, principal: Authed, svc: Svc) -> dict[str, Any]:
    return Provisioning(svc).role_view(name)


@router.post("/roles", status_code=201, responses=_ERRORS)
async def create_role(
    body: RoleCreate, request: Request, principal: Authed, svc: Svc
) -> dict[str, Any]:
    """Create a role (the keys of a ``[roles.NAME]`` table); a built-in's name adds a table that
    extends it."""
    role = role_from(body.model_dump(exclude_unset=True, exclude={"name"}, mode="json"))
    return await Provisioning(svc).create(
        principal, "role", body.name, role, remote=client_address(request)
    )


@router.patch("/roles/{name}", responses=_ERRORS)
async def change_role(
    name: str, body: RoleChange, request: Request, principal: Authed, svc: Svc
) -> dict[str, Any]:
    """Change a role's keys; on a built-in role with no table yet, this adds one."""
    return await Provisioning(svc).update(
        principal,
        "role",
        name,
        body.model_dump(exclude_unset=True, mode="json"),
        remote=client_address(request),
    )


@router.delete("/roles/{name}", responses=_ERRORS)
async def remove_role(name: str, request: Request, principal: Authed, svc: Svc) -> dict[str, Any]:
    """Remove a role (409 ``role-in-use`` while users have it); on a built-in role, remove its
    table: the built-in applies as shipped."""
    return await Provisioning(svc).remove(principal, "role", name, remote=client_address(request))
