"""Who may do what: the principal behind a request, its role's permissions and priority cap.

Rules (checked at the edge, before the core is asked anything)
--------------------------------------------------------------
* Starting a flow needs the flow's ``spec.permission`` (``"start"`` when the flow names none),
  and the priority it runs at — the spec's own, or the one the request asks for — must not exceed
  the principal's cap (:attr:`Principal.max_priority`: the role's, lowered by the user's own
  ``max_priority`` if set).
* Sending a command to a running flow, or cancelling it, needs the same permission as starting
  it and a cap at least the flow's priority (a dispatcher cannot cancel what they could not have
  started). Ending an emergency — cancelling, or sending ``end``/``stop`` to, a flow running at
  ``EMERGENCY`` or above — needs ``end_emergency`` as well.
* Service permissions: ``audit`` (read the audit log), ``tokens`` (see and revoke other users'
  tokens), ``meeting`` (mute, kick, end meetings), ``recordings`` (list and download).
* ``"*"`` grants every permission.
"""

from __future__ import annotations

from dataclasses import dataclass

from baton.core import Priority
from baton.core.priority import priority_name
from baton.service.errors import Forbidden

__all__ = ["CLEAR_EMERGENCY_COMMANDS", "END_COMMANDS", "Principal"]

#: Commands that end a flow (ending an emergency this way needs ``end_emergency``).
END_COMMANDS = frozenset({"end", "stop", "cancel", "hangup"})
#: Commands that clear an emergency state whatever the flow's priority (a PTT group's).
CLEAR_EMERGENCY_COMMANDS = frozenset({"clear_emergency", "end_emergency"})


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated user of the API. ``via`` is ``"session"`` or ``"token"``."""

    user_id: str
    name: str
    role: str
    permissions: frozenset[str]
    max_priority: int
    via: str
    token_id: str

    def may(self, permission: str) -> bool:
        return "*" in self.permissions or permission in self.permissions

    def require(self, permission: str, action: str) -> None:
        """Raise 403 ``forbidden`` naming the missing permission."""
        if not self.may(permission):
            raise Forbidden(
                f"role {self.role!r} may not {action} (needs permission {permission!r})",
                details={"permission": permission, "role": self.role},
            )

    def require_priority(self, priority: int, action: str) -> None:
        """Raise 403 ``priority-not-allowed`` if ``priority`` is above the cap."""
        if priority > self.max_priority:
            raise Forbidden(
                f"{self.user_id} ({self.role}) may {action} up to "
                f"{priority_name(self.max_priority)}, not {priority_name(priority)}",
                id="priority-not-allowed",
                details={
                    "priority": priority_name(priority),
                    "max_priority": priority_name(self.max_priority),
                    "role": self.role,
                },
            )

    def require_control(self, permission: str | None, priority: int, command: str | None) -> None:
        """May this principal cancel (``command`` None) or command a running flow?"""
        action = f"send {command!r} to" if command else "cancel"
        self.require(permission or "start", f"{action} this flow")
        self.require_priority(priority, f"{action} flows")
        ends = command is None or command in END_COMMANDS
        if (priority >= Priority.EMERGENCY and ends) or command in CLEAR_EMERGENCY_COMMANDS:
            self.require("end_emergency", "end an emergency")
