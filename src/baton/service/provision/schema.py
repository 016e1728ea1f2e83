"""Bodies of the provisioning endpoints. A new entry's body is its config table's model
(``UserConfig``, ``GroupConfig``, ``MeetingConfig``, a role's fields with its ``name``); a change
is one of the ``*Change`` models below: only the keys sent change (``null`` unsets an optional
one). Unknown keys are refused (422), as in the config file."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from baton.service.config import ID_PATTERN, SimPhoneConfig

__all__ = ["GroupChange", "RoleChange", "RoleCreate", "RoomChange", "UserChange"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UserChange(_Body):
    """Keys of a user to change (``id`` cannot change: remove and create instead)."""

    name: str | None = None
    numbers: list[str] | None = None
    number: str | None = None
    password: str | None = Field(default=None, min_length=1)
    role: str | None = None
    max_priority: int | str | None = None
    keep: bool | None = None
    contact: str | None = None
    srtp: Literal["off", "optional", "required"] | None = None
    sim: SimPhoneConfig | None = None


class GroupChange(_Body):
    name: str | None = None
    members: list[str] | None = None
    number: str | None = None
    mode: Literal["call", "ptt"] | None = None


class RoomChange(_Body):
    number: str | None = None
    name: str | None = None


class RoleChange(_Body):
    """Keys of a role to change. On a built-in role, ``permissions`` are *added* to the
    built-in's (as a ``[roles.NAME]`` table does) unless ``replace`` is true."""

    description: str | None = None
    permissions: list[str] | None = None
    max_priority: int | str | None = None
    position: bool | None = None
    scope: Literal["self", "groups", "centre", "all"] | None = None
    replace: bool | None = None


class RoleCreate(RoleChange):
    """A new role: its ``name`` and its keys (a built-in's name adds a table that extends it)."""

    name: str = Field(pattern=ID_PATTERN)
