"""Push-to-talk groups with floor control: one talker at a time, by priority."""

from baton.flows.ptt.events import (
    FloorDenied,
    FloorGranted,
    FloorIdle,
    FloorQueued,
    FloorReleased,
    FloorRevoked,
    GroupEmergency,
)
from baton.flows.ptt.floor import FloorControl, FloorState
from baton.flows.ptt.group import PTT_COMMANDS, ptt_group

__all__ = [
    "PTT_COMMANDS",
    "FloorControl",
    "FloorDenied",
    "FloorGranted",
    "FloorIdle",
    "FloorQueued",
    "FloorReleased",
    "FloorRevoked",
    "FloorState",
    "GroupEmergency",
    "ptt_group",
]
