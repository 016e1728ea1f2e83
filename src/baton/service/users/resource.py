"""Users and groups, with live state."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from baton.service.deps import Authed, Svc
from baton.service.users.service import UsersService

router = APIRouter(prefix="/api", tags=["users"])


@router.get("/users")
async def list_users(principal: Authed, svc: Svc) -> list[dict[str, Any]]:
    """Every user with live state: ``state`` (idle, dialling, ringing, connected, talking,
    meeting), ``label``, the ``leg``, the bridge ``partner``, the ``meeting`` and mode, and the
    ``owner`` (flow or CallInfo, with its priority)."""
    return UsersService(svc).all()


@router.get("/users/{user_id}")
async def get_user(user_id: str, principal: Authed, svc: Svc) -> dict[str, Any]:
    """One user with live state; 404 ``unknown-user``."""
    users = UsersService(svc)
    return users.view(users.user(user_id))


@router.get("/groups")
async def list_groups(principal: Authed, svc: Svc) -> list[dict[str, Any]]:
    """The configured groups (usable wherever a flow takes a list of users)."""
    return UsersService(svc).groups()
