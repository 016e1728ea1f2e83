"""Presence: which phones are registered for a user, read from the switch.

The service sees the switch only through the port, which has no notion of registration; an
adapter that knows (the ``sip`` switch's registrar) answers ``registered(user_id)`` with its
bindings. On the ``sim`` switch every virtual phone is registered unless it is scripted
``unreachable``. Times are the switch's loop clock; :func:`registrations` turns them into wall
clock seconds for the API.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from baton.core.port import Cause, Switch
from baton.switch.sim import SimSwitch

__all__ = ["Registration", "registrations"]


@dataclass(frozen=True, slots=True)
class Registration:
    """One registered contact of a user."""

    contact: str
    transport: str | None
    user_agent: str | None
    source: str | None  # the address the REGISTER came from
    registered_at: float | None  # wall clock seconds of the last REGISTER (None: static)
    expires_at: float | None  # wall clock seconds (None: never, a static contact)

    def view(self) -> dict[str, Any]:
        """The API's shape: unset values omitted, times ISO 8601 with the zone."""
        out = {k: v for k, v in _fields(self).items() if v is not None}
        for key in ("registered_at", "expires_at"):
            if key in out:
                out[key] = datetime.datetime.fromtimestamp(out[key], datetime.UTC).isoformat(
                    timespec="seconds"
                )
        return out


def _fields(r: Registration) -> dict[str, Any]:
    return {
        "contact": r.contact,
        "transport": r.transport,
        "user_agent": r.user_agent,
        "source": r.source,
        "registered_at": r.registered_at,
        "expires_at": r.expires_at,
    }


def registrations(
    switch: Switch, user_id: str, *, wallclock: float, loop_now: float
) -> list[Registration]:
    """``user_id``'s live registrations. ``wallclock`` and ``loop_now`` are the same instant on
    both clocks (to convert the switch's times)."""
    if isinstance(switch, SimSwitch):
        phone = switch.phones.get(user_id)
        if phone is None or phone.behaviour.fail is Cause.UNREACHABLE:
            return []
        return [Registration(f"sim:{user_id}", "sim", "Baton virtual phone", None, None, None)]
    registered = getattr(switch, "registered", None)
    if not callable(registered):
        return []
    out: list[Registration] = []
    for b in registered(user_id):
        at = getattr(b, "registered_at", None)
        exp = getattr(b, "expires_at", None)
        static = exp is None
        out.append(
            Registration(
                contact=str(getattr(b, "contact_text", b)),
                transport=getattr(b, "transport", None),
                user_agent=getattr(b, "user_agent", None),
                source=getattr(b, "source", None),
                registered_at=None if static or at is None else wallclock - (loop_now - at),
                expires_at=None if exp is None else wallclock + (exp - loop_now),
            )
        )
    return out
