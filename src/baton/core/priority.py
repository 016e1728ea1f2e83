"""Priorities: integers with named levels after MLPP (ITU-T Q.735 / DSN precedence).

A higher number wins. Preemption needs a *strictly* higher priority; equal priorities queue.
Named levels are an :class:`enum.IntEnum`, so any ``int`` is a valid priority too — useful for a
site that wants levels between the named ones.
"""

from __future__ import annotations

import enum

__all__ = ["Priority", "priority_name"]


class Priority(enum.IntEnum):
    """A flow's priority, named after MLPP, with EMERGENCY as the top dispatch level; an
    ``int`` (a role's cap compares with it). A claim preempts only a strictly lower one."""

    ROUTINE = 0
    PRIORITY = 10
    IMMEDIATE = 20
    FLASH = 30
    FLASH_OVERRIDE = 40
    EMERGENCY = 50  # the top dispatch level


def priority_name(value: int) -> str:
    """``"FLASH"`` for 30, ``"31"`` for a level between named ones."""
    try:
        return Priority(value).name
    except ValueError:
        return str(value)
