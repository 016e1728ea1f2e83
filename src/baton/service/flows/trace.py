"""A flow's trace as a sequence diagram: lifelines and the messages between them.

:func:`build_trace` reads events (dictionaries, from the live history or the journal) and keeps
those that concern the flow: events naming it (as a flow, an issuer, an owner, a claimer or a
victim) and, from the moment it first held a user, the leg, media and digit events of that user.
Each kept event becomes a *step*: an arrow ``from → to`` with a short label, or a note on one
lifeline, with the full sentence of :func:`baton.trace.describe` as its text.

Lifelines, left to right: the flow, the users in the order they appear, other owners (CallInfos,
preempting flows), and ``switch`` when a leg changed state. The console draws them as SVG.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from baton.core.priority import priority_name
from baton.service.events.codec import event_from_dict
from baton.trace import describe

__all__ = ["build_trace"]

_NAME_FIELDS = (
    "flow",
    "by",
    "old",
    "new",
    "claimer",
    "victim",
    "holder",
    "old_claimer",
    "new_claimer",
)


def _names(d: dict[str, Any]) -> set[str]:
    return {v for k in _NAME_FIELDS if isinstance(v := d.get(k), str)}


def _users_of(d: dict[str, Any]) -> list[str]:
    out: list[str] = []
    if isinstance(d.get("user"), str):
        out.append(d["user"])
    users = d.get("users")
    if isinstance(users, list | tuple):
        out += [u for u in users if isinstance(u, str)]
    return out


def build_trace(flow: str, events: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The trace of ``flow`` (e.g. ``"call#3"``) from ``events`` in sequence order."""
    held: set[str] = set()
    lifelines: list[str] = [flow]
    steps: list[dict[str, Any]] = []
    t0: float | None = None
    ended = False

    def line(name: str | None) -> str:
        name = name or "nobody"
        if name not in lifelines:
            lifelines.append(name)
        return name

    for d in events:
        kind = d.get("kind")
        names = _names(d)
        users = _users_of(d)
        mine = flow in names
        if not mine and not (held and any(u in held for u in users)):
            continue
        if kind == "flow.started" and d.get("flow") == flow:
            t0 = float(d.get("t", 0.0))
        if t0 is None:
            continue  # before the flow started (an older flow of the same name)
        if kind == "owner.changed" and d.get("new") == flow:
            held.add(str(d.get("user")))
        ev = event_from_dict(d)
        described = describe(ev) if ev is not None else None
        if ev is not None and described is None:
            continue  # too fine-grained to show (a playback finishing)
        step = _step(flow, d, line)
        step.update(
            seq=d.get("seq"),
            t=round(float(d.get("t", 0.0)) - t0, 3),
            kind=kind,
            text=described[1] if described else d.get("text") or kind,
            marker=described[0] if described else None,
        )
        steps.append(step)
        if kind == "flow.ended" and d.get("flow") == flow:
            ended = True
            break
    if "switch" in lifelines:  # the switch on the far right
        lifelines.remove("switch")
        lifelines.append("switch")
    return {"flow": flow, "lifelines": lifelines, "steps": steps, "ended": ended}


def _step(flow: str, d: dict[str, Any], line: Any) -> dict[str, Any]:
    """The arrow or note for one event."""
    kind = d.get("kind")
    if kind == "flow.started":
        return {
            "from": line(flow),
            "to": line(flow),
            "label": f"start at {priority_name(int(d.get('priority', 0)))}",
        }
    if kind == "flow.ended":
        return {"from": line(flow), "to": line(flow), "label": f"end: {d.get('outcome')}"}
    if kind == "flow.note":
        return {"from": line(flow), "to": line(flow), "label": str(d.get("text", ""))}
    if kind == "owner.changed":
        user, old, new = str(d.get("user")), d.get("old"), d.get("new")
        reason = str(d.get("reason"))
        if new == flow:
            return {
                "from": line(flow),
                "to": line(user),
                "label": reason if reason != "claimed" else "claim",
            }
        if old == flow and new:
            return {"from": line(flow), "to": line(str(new)), "label": f"{reason} {user}"}
        if old == flow:
            return {"from": line(flow), "to": line(user), "label": reason}
        return {"from": line(str(new) if new else user), "to": line(user), "label": reason}
    if kind == "preemption.started":
        return {
            "from": line(str(d.get("claimer"))),
            "to": line(str(d.get("victim"))),
            "label": f"preempt {d.get('user')}",
        }
    if kind == "preemption.completed":
        return {
            "from": line(str(d.get("claimer"))),
            "to": line(str(d.get("user"))),
            "label": "granted",
        }
    if kind == "leg.state":
        cause = f" ({d['cause']})" if d.get("cause") else ""
        return {
            "from": line("switch"),
            "to": line(str(d.get("user"))),
            "label": f"{d.get('state')}{cause}",
        }
    if kind == "media":
        users = [u for u in d.get("users") or [] if isinstance(u, str)]
        target = users[0] if users else str(d.get("meeting") or flow)
        label = str(d.get("command"))
        if d.get("detail"):
            label += f" {d['detail']}"
        if len(users) > 1:
            label += " " + ",".join(users[1:])
        return {"from": line(str(d.get("by") or flow)), "to": line(target), "label": label}
    if kind == "flow.notified":
        return {
            "from": line(str(d.get("user"))),
            "to": line(flow),
            "label": str(d.get("notice", "")).replace("_", " "),
        }
    if kind == "dtmf":
        return {
            "from": line(str(d.get("user"))),
            "to": line(flow),
            "label": f"digit {d.get('digit')}",
        }
    if kind == "op.interrupted":
        return {
            "from": line(flow),
            "to": line(flow),
            "label": f"{d.get('op')} stopped: {d.get('notice')}",
        }
    if kind == "compensation":
        return {
            "from": line(flow),
            "to": line(flow),
            "label": f"undo {d.get('step')}: {d.get('outcome')}",
        }
    if kind == "claim.queued":
        return {
            "from": line(str(d.get("claimer"))),
            "to": line(str(d.get("user"))),
            "label": "claim waits",
        }
    if kind == "claim.refused":
        return {
            "from": line(str(d.get("user"))),
            "to": line(str(d.get("claimer"))),
            "label": f"refused: {d.get('reason')}",
        }
    if kind == "callinfo.started":
        return {"from": line(flow), "to": line(str(d.get("callinfo"))), "label": "settle"}
    return {"from": line(flow), "to": line(flow), "label": str(kind)}
