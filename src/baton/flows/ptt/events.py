"""Floor events on the core's stream, so consoles show the talker live."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from baton.core.events import Event

__all__ = [
    "FloorDenied",
    "FloorGranted",
    "FloorIdle",
    "FloorQueued",
    "FloorReleased",
    "FloorRevoked",
    "GroupEmergency",
]


@dataclass(slots=True, kw_only=True)
class FloorGranted(Event):
    kind: ClassVar[str] = "floor.granted"
    group: str
    user: str
    priority: int


@dataclass(slots=True, kw_only=True)
class FloorDenied(Event):
    kind: ClassVar[str] = "floor.denied"
    group: str
    user: str
    reason: str


@dataclass(slots=True, kw_only=True)
class FloorRevoked(Event):
    kind: ClassVar[str] = "floor.revoked"
    group: str
    user: str
    reason: str
    by: str | None = None


@dataclass(slots=True, kw_only=True)
class FloorReleased(Event):
    kind: ClassVar[str] = "floor.released"
    group: str
    user: str


@dataclass(slots=True, kw_only=True)
class FloorQueued(Event):
    """The queue of floor requests now: ``queue`` lists (user, position), next first."""

    kind: ClassVar[str] = "floor.queued"
    group: str
    queue: tuple[tuple[str, int], ...]


@dataclass(slots=True, kw_only=True)
class FloorIdle(Event):
    kind: ClassVar[str] = "floor.idle"
    group: str


@dataclass(slots=True, kw_only=True)
class GroupEmergency(Event):
    kind: ClassVar[str] = "group.emergency"
    group: str
    on: bool
    by: str | None = None
