"""Emergency alarms: every flow running at EMERGENCY is an alarm on every console until a
dispatcher acknowledges it (banner, sound, who acknowledged — docs/service.md, The console).

An acknowledgement is an ``emergency.acknowledged`` event on the bus (every console sees it at
once; the journal keeps it) and an audit entry (``emergency.ack``). The alarm ends with its flow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from baton.core import Flow, Priority, UserManager
from baton.core.events import Event, FlowEnded
from baton.service.errors import Conflict, NotFound
from baton.service.positions.service import Audit, iso

__all__ = ["Alarms", "EmergencyAcknowledged"]


@dataclass(slots=True, kw_only=True)
class EmergencyAcknowledged(Event):
    kind: ClassVar[str] = "emergency.acknowledged"
    flow: str
    by: str


class Alarms:
    def __init__(
        self,
        manager: UserManager,
        *,
        wallclock: Callable[[], float],
        started_at: Callable[[str], float | None],
        audit: Audit | None = None,
    ) -> None:
        self.manager = manager
        self.wallclock = wallclock
        self.started_at = started_at
        self.audit = audit
        self._acks: dict[str, tuple[str, float]] = {}
        self._unsubscribe = manager.events.subscribe(self._on_event)

    def close(self) -> None:
        self._unsubscribe()

    def active(self) -> list[Flow]:
        return [
            f for f in self.manager.flows.values() if f.priority >= Priority.EMERGENCY and f.alive
        ]

    def view(self, f: Flow) -> dict[str, Any]:
        out: dict[str, Any] = {
            "flow": f.name,
            "name": f.spec.name,
            "users": [u.id for u in f.users],
        }
        started = self.started_at(f.name)
        if started is not None:
            out["started_at"] = iso(started)
        ack = self._acks.get(f.name)
        if ack is not None:
            out["acknowledged_by"], at = ack
            out["acknowledged_at"] = iso(at)
        return out

    def all(self) -> list[dict[str, Any]]:
        return [self.view(f) for f in self.active()]

    def acknowledge(self, flow: str, by: str, role: str | None = None) -> dict[str, Any]:
        f = next((x for x in self.active() if x.name == flow), None)
        if f is None:
            raise NotFound(f"no emergency {flow!r} is going on", id="unknown-emergency")
        if flow in self._acks:
            who = self._acks[flow][0]
            raise Conflict(
                f"{who} has already acknowledged this emergency", id="already-acknowledged"
            )
        self._acks[flow] = (by, self.wallclock())
        self.manager.events.publish(EmergencyAcknowledged(flow=flow, by=by))
        if self.audit is not None:
            self.audit(
                principal=by,
                role=role,
                action="emergency.ack",
                target=flow,
                outcome="ok",
                details={"flow": f.spec.name, "users": [u.id for u in f.users]},
            )
        return self.view(f)

    def _on_event(self, ev: Event) -> None:
        if isinstance(ev, FlowEnded):
            self._acks.pop(ev.flow, None)
