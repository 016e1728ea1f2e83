"""A readable, timestamped trace of the event stream (``baton demo``, flow traces).

Each event becomes one line: the time, a marker, and a sentence. After media changes, a line
says who hears whom now (asked of a switch that can answer, such as the sim).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TextIO

from baton.core.events import (
    CallInfoEnded,
    CallInfoStarted,
    ClaimQueued,
    ClaimRefused,
    CompensationRan,
    DtmfDigit,
    Event,
    FlowEnded,
    FlowNote,
    FlowNotified,
    FlowStarted,
    LegCollected,
    LegStateChanged,
    MediaChanged,
    OpInterrupted,
    OwnerChanged,
    PreemptionCompleted,
    PreemptionStarted,
    PreemptionSuperseded,
    Problem,
)
from baton.core.priority import priority_name
from baton.flows.ptt.events import (
    FloorDenied,
    FloorGranted,
    FloorIdle,
    FloorQueued,
    FloorReleased,
    FloorRevoked,
    GroupEmergency,
)

__all__ = ["Tracer", "describe"]


def _arg(value: Any) -> str:
    """A flow argument in a sentence: lists joined by commas, yes/no for booleans."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ",".join(_arg(v) for v in value)
    return str(value)


def describe(ev: Event) -> tuple[str, str] | None:
    """(marker, sentence) for an event, or None for events too fine-grained to show."""
    if isinstance(ev, FlowStarted):
        args = " ".join(f"{k}={_arg(v)}" for k, v in ev.args.items())
        return "▶", f"{ev.flow} starts at {priority_name(ev.priority)}  {args}".rstrip()
    if isinstance(ev, FlowEnded):
        err = f" — {ev.error}" if ev.error else ""
        return "■", f"{ev.flow} ends: {ev.outcome}{err}"
    if isinstance(ev, FlowNote):
        return "»", f"{ev.flow}: {ev.text}"
    if isinstance(ev, OwnerChanged):
        prio = f" at {priority_name(ev.priority)}" if ev.priority is not None else ""
        return "⇄", (
            f"{ev.user}: {ev.old or 'nobody'} → {ev.new or 'nobody'}{prio} "
            f"({ev.reason}, epoch {ev.epoch})"
        )
    if isinstance(ev, PreemptionStarted):
        return "⚡", (
            f"PREEMPTION of {ev.user}: {ev.claimer} ({priority_name(ev.priority)}) takes it "
            f"from {ev.victim}"
        )
    if isinstance(ev, PreemptionSuperseded):
        return "⚡", f"{ev.new_claimer} supersedes {ev.old_claimer}'s preemption of {ev.user}"
    if isinstance(ev, PreemptionCompleted):
        ms = ev.seconds * 1000
        return "⚡", f"preemption of {ev.user} complete ({ms:.0f} ms), granted to {ev.claimer}"
    if isinstance(ev, OpInterrupted):
        return "✋", f"{ev.flow}'s {ev.op}({', '.join(ev.users)}) stopped: {ev.notice}"
    if isinstance(ev, FlowNotified):
        return "!", f"{ev.flow} told: {ev.user} {ev.notice.replace('_', ' ')} (via {ev.via})"
    if isinstance(ev, ClaimQueued):
        return "…", f"{ev.claimer} ({priority_name(ev.priority)}) waits for {ev.user} ({ev.holder})"
    if isinstance(ev, ClaimRefused):
        return "✗", f"{ev.claimer} refused {ev.user}: {ev.reason} (held by {ev.holder})"
    if isinstance(ev, LegStateChanged):
        cause = f" ({ev.cause})" if ev.cause else ""
        return "☎", f"{ev.user} {ev.direction} leg {ev.leg}: {ev.state}{cause}"
    if isinstance(ev, MediaChanged):
        if ev.command in ("play.done", "record.done"):
            return None
        who = ", ".join(ev.users)
        where = f" in {ev.meeting}" if ev.meeting else ""
        detail = f" {ev.detail}" if ev.detail else ""
        return "♪", f"{ev.command} {who}{where}{detail}  [{ev.by}]".replace("  ", " ", 1)
    if isinstance(ev, DtmfDigit):
        return "#", f"{ev.user} pressed {ev.digit}"
    if isinstance(ev, CallInfoStarted):
        return "═", f"{ev.callinfo} holds {', '.join(ev.users)} at {priority_name(ev.priority)}"
    if isinstance(ev, CallInfoEnded):
        return "═", f"{ev.callinfo} ends ({ev.reason})"
    if isinstance(ev, LegCollected):
        return "♻", f"{ev.user}'s leg {ev.leg} had no owner: hung up"
    if isinstance(ev, CompensationRan):
        detail = f": {ev.detail}" if ev.detail else ""
        return "↺", f"{ev.flow} compensation {ev.step}: {ev.outcome}{detail}"
    if isinstance(ev, Problem):
        return "⚠", f"{ev.source}: {ev.message}"
    return _describe_floor(ev)


def _describe_floor(ev: Event) -> tuple[str, str] | None:
    if isinstance(ev, FloorGranted):
        return "🎙", f"{ev.group}: floor to {ev.user} at {priority_name(ev.priority)}"
    if isinstance(ev, FloorRevoked):
        by = f" by {ev.by}" if ev.by else ""
        return "🎙", f"{ev.group}: floor taken from {ev.user}{by} ({ev.reason})"
    if isinstance(ev, FloorReleased):
        return "🎙", f"{ev.group}: {ev.user} releases the floor"
    if isinstance(ev, FloorDenied):
        return "🎙", f"{ev.group}: floor denied to {ev.user} ({ev.reason})"
    if isinstance(ev, FloorQueued):
        queue = ", ".join(f"{u} #{pos}" for u, pos in ev.queue) or "empty"
        return "🎙", f"{ev.group}: waiting for the floor: {queue}"
    if isinstance(ev, FloorIdle):
        return "🎙", f"{ev.group}: floor idle"
    if isinstance(ev, GroupEmergency):
        state = "EMERGENCY" if ev.on else "emergency cleared"
        return "⚠", f"{ev.group}: {state}" + (f" ({ev.by})" if ev.by else "")
    return None


class Tracer:
    """Subscribe to a bus and print one line per event to ``out``.

    ``hears`` (user id → what it hears) and ``users`` let the tracer print, after each media
    change, who hears whom now.
    """

    def __init__(
        self,
        out: TextIO,
        *,
        hears: Callable[[str], set[str]] | None = None,
        users: Callable[[], list[str]] | None = None,
        t0: float = 0.0,
    ) -> None:
        self.out = out
        self.hears = hears
        self.users = users
        self.t0 = t0
        self._media_dirty = False
        self._last_t = 0.0
        self._last_summary = ""

    def __call__(self, ev: Event) -> None:
        if self._media_dirty and ev.t != self._last_t:
            self.flush()
        line = describe(ev)
        if line is None:
            return
        marker, text = line
        self._last_t = ev.t
        self.out.write(f"{ev.t - self.t0:9.3f}  {marker} {text}\n")
        if isinstance(ev, MediaChanged | LegStateChanged) and self.hears is not None:
            self._media_dirty = True

    def flush(self) -> None:
        """Print who hears whom, if media changed since the last time."""
        if not self._media_dirty or self.hears is None or self.users is None:
            return
        self._media_dirty = False
        parts = []
        for uid in self.users():
            heard = self.hears(uid)
            if heard:
                parts.append(f"{uid} ← {', '.join(sorted(heard))}")
        summary = "; ".join(parts) if parts else "nobody hears anything"
        if summary != self._last_summary:  # only when who hears whom has changed
            self._last_summary = summary
            self.out.write(f"{'':9}    ⟹ {summary}\n")
