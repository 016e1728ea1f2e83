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
* **Whom for.** A principal acts only for the users its role's ``scope`` covers
  (:attr:`Principal.scope`): ``self`` — its own line; ``groups`` — its own line and the members
  of its groups; ``centre`` — every user of this dispatch centre; ``all`` — everyone. Starting a
  flow needs every user among its arguments (whatever the parameter's name, in lists and in the
  meetings it names) in scope. Commanding a running flow about named users needs them in scope
  (and the principal among the flow's users, or its starter); cancelling it, or a command about
  no one, needs every user it involves in scope unless the principal started it. Refusals are
  403 ``user-not-in-scope``.
* Service permissions: ``audit`` (read the audit log), ``tokens`` (see and revoke other users'
  tokens), ``meeting`` (mute, kick, end meetings), ``recordings`` (list and download),
  ``positions`` (change another position's agent state), ``provision`` (create, change and
  remove users, groups, rooms and roles; :mod:`baton.service.provision.service`), ``export``
  (export recordings with their manifest).
* ``"*"`` grants every permission.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

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
    #: The users this principal may act for; ``None``: everyone (scope ``all``).
    scope: frozenset[str] | None = None
    #: The role's scope, by name (for messages): ``self``, ``groups``, ``centre`` or ``all``.
    scope_name: str = field(default="all")
    #: When the session or token stops working (wall-clock seconds); ``None``: never.
    expires_at: float | None = None

    def may_act_for(self, user_id: str) -> bool:
        return self.scope is None or user_id in self.scope

    def require_users(self, user_ids: Iterable[str], action: str) -> None:
        """Raise 403 ``user-not-in-scope`` naming the users this principal may not act for."""
        outside = [u for u in dict.fromkeys(user_ids) if not self.may_act_for(u)]
        if outside:
            whom = {
                "self": "only for its own line",
                "groups": "only for its own line and its groups' members",
                "centre": "only for the users of its dispatch centre",
            }.get(self.scope_name, f"only within scope {self.scope_name!r}")
            raise Forbidden(
                f"{self.user_id} (role {self.role}) may {action} {whom}, not for "
                f"{', '.join(outside)}",
                id="user-not-in-scope",
                details={"users": outside, "role": self.role, "scope": self.scope_name},
            )

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
                f"{self.user_id} ({self.role}) may {action} only up to "
                f"{priority_name(self.max_priority)}; this needs {priority_name(priority)}",
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
