"""Emergency alarms: every flow running at EMERGENCY is an alarm on every console until a
dispatcher acknowledges it (banner, sound, who acknowledged — docs/service.md, The console).

An acknowledgement is an ``emergency.acknowledged`` event on the bus (every console sees it at
once; the journal keeps it) and an audit entry (``emergency.ack``). An alarm nobody acknowledges
within ``escalate_after`` seconds is *escalated*: an ``emergency.escalated`` event and an audit
entry, and every console says the supervisors are called on. The alarm ends with its flow.

*Fault alarms* are the same banner for a fault of the centre itself — a recording that failed
(docs/service.md, "Voice logging"): raised by the part that found the fault (an
``alarm.raised`` event and an audit entry), shown to supervisors until one acknowledges it
(``alarm.acknowledged``, audited ``alarm.ack``). A fault alarm has no flow to end with; the
last :data:`FAULTS_KEPT` are listed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from baton.core import Flow, Priority, UserManager
from baton.core.events import Event, FlowEnded, FlowStarted
from baton.service.errors import Conflict, NotFound
from baton.service.positions.service import Audit, iso

__all__ = [
    "FAULTS_KEPT",
    "AlarmAcknowledged",
    "AlarmRaised",
    "Alarms",
    "EmergencyAcknowledged",
    "EmergencyEscalated",
]

#: Fault alarms listed (the oldest acknowledged ones are forgotten first).
FAULTS_KEPT = 50


@dataclass(slots=True, kw_only=True)
class EmergencyAcknowledged(Event):
    kind: ClassVar[str] = "emergency.acknowledged"
    flow: str
    by: str


@dataclass(slots=True, kw_only=True)
class EmergencyEscalated(Event):
    kind: ClassVar[str] = "emergency.escalated"
    flow: str
    after: float  # seconds without an acknowledgement


@dataclass(slots=True, kw_only=True)
class AlarmRaised(Event):
    """A fault of the centre (``what``: ``recording``) that a supervisor must see."""

    kind: ClassVar[str] = "alarm.raised"
    alarm: str  # its id: alarm#3
    what: str
    message: str  # a sentence for the banner
    user: str | None = None  # the user it is about, if any
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True, kw_only=True)
class AlarmAcknowledged(Event):
    kind: ClassVar[str] = "alarm.acknowledged"
    alarm: str
    by: str


class Alarms:
    def __init__(
        self,
        manager: UserManager,
        *,
        wallclock: Callable[[], float],
        started_at: Callable[[str], float | None],
        audit: Audit | None = None,
        escalate_after: float | None = 30.0,
    ) -> None:
        self.manager = manager
        self.escalate_after = escalate_after
        self._escalated: set[str] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self.wallclock = wallclock
        self.started_at = started_at
        self.audit = audit
        self._acks: dict[str, tuple[str, float]] = {}
        self._faults: dict[str, dict[str, Any]] = {}
        self._fault_ids = 0
        self._unsubscribe = manager.events.subscribe(self._on_event)

    def close(self) -> None:
        self._unsubscribe()
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

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
        if f.name in self._escalated:
            out["escalated"] = True
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
            raise NotFound(
                f"no emergency {flow!r} is going on",
                id="unknown-emergency",
                details={"flow": flow},
            )
        if flow in self._acks:
            who, at = self._acks[flow]
            raise Conflict(
                f"{who} has already acknowledged this emergency",
                id="already-acknowledged",
                details={"acknowledged_by": who, "acknowledged_at": iso(at)},
            )
        self._acks[flow] = (by, self.wallclock())
        timer = self._timers.pop(flow, None)
        if timer is not None:
            timer.cancel()
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

    # ---- fault alarms

    def raise_fault(
        self,
        what: str,
        text: str,
        *,
        user: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> str:
        """Raise a fault alarm on every supervisor's console; return its id."""
        self._fault_ids += 1
        alarm = f"alarm#{self._fault_ids}"
        details = dict(details or {})
        self._faults[alarm] = {
            "alarm": alarm,
            "what": what,
            "text": text,
            "raised_at": iso(self.wallclock()),
            **({"user": user} if user is not None else {}),
            "details": details,
        }
        while len(self._faults) > FAULTS_KEPT:
            old = next((k for k, v in self._faults.items() if "acknowledged_by" in v), None)
            del self._faults[old if old is not None else next(iter(self._faults))]
        self.manager.events.publish(
            AlarmRaised(alarm=alarm, what=what, message=text, user=user, details=details)
        )
        if self.audit is not None:
            self.audit(
                principal=None,
                role=None,
                action=f"alarm.{what}",
                target=user,
                outcome="failed",
                details={"alarm": alarm, "text": text, **details},
            )
        return alarm

    def faults(self) -> list[dict[str, Any]]:
        """The fault alarms, newest first."""
        return [dict(v) for v in reversed(self._faults.values())]

    def acknowledge_fault(self, alarm: str, by: str, role: str | None = None) -> dict[str, Any]:
        f = self._faults.get(alarm)
        if f is None:
            raise NotFound(f"no alarm {alarm!r}", id="unknown-alarm", details={"alarm": alarm})
        if "acknowledged_by" in f:
            raise Conflict(
                f"{f['acknowledged_by']} has already acknowledged this alarm",
                id="already-acknowledged",
                details={k: f[k] for k in ("acknowledged_by", "acknowledged_at")},
            )
        f["acknowledged_by"] = by
        f["acknowledged_at"] = iso(self.wallclock())
        self.manager.events.publish(AlarmAcknowledged(alarm=alarm, by=by))
        if self.audit is not None:
            self.audit(
                principal=by,
                role=role,
                action="alarm.ack",
                target=alarm,
                outcome="ok",
                details={"what": f["what"], "text": f["text"]},
            )
        return dict(f)

    def _on_event(self, ev: Event) -> None:
        if isinstance(ev, FlowStarted):
            if ev.priority >= Priority.EMERGENCY and self.escalate_after:
                self._timers[ev.flow] = self.manager.loop.call_later(
                    self.escalate_after, self._escalate, ev.flow
                )
        elif isinstance(ev, FlowEnded):
            self._acks.pop(ev.flow, None)
            self._escalated.discard(ev.flow)
            timer = self._timers.pop(ev.flow, None)
            if timer is not None:
                timer.cancel()

    def _escalate(self, flow: str) -> None:
        self._timers.pop(flow, None)
        if flow in self._acks or not any(f.name == flow for f in self.active()):
            return
        self._escalated.add(flow)
        after = float(self.escalate_after or 0)
        self.manager.events.publish(EmergencyEscalated(flow=flow, after=after))
        if self.audit is not None:
            self.audit(
                principal=None,
                role=None,
                action="emergency.escalate",
                target=flow,
                outcome="ok",
                details={"after": after},
            )
