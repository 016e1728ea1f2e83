"""Checks of DESIGN.md's invariants on a live UserManager, for tests and ``baton check``.

:func:`check` inspects the state at one instant and returns the violations it finds (an empty
list when all is well). :func:`check_event_order` reads the event history and checks the order
the preemption protocol promises. :func:`check_quiescent` is for the end of a scenario: when all
flows have ended and grace periods have passed, every user is idle or held by a CallInfo.
"""

from __future__ import annotations

from baton.core.callinfo import CallInfo
from baton.core.events import (
    Event,
    FlowNotified,
    MediaChanged,
    OpInterrupted,
    OwnerChanged,
    PreemptionCompleted,
    PreemptionStarted,
)
from baton.core.flow import Flow, FlowState
from baton.core.manager import UserManager
from baton.core.model import LegState

__all__ = ["check", "check_event_order", "check_quiescent"]


def check(manager: UserManager) -> list[str]:
    """Every violation visible in the manager's state right now."""
    problems: list[str] = list(manager.violations)  # invariant 2, as audited by the switch
    records = manager.ledger.records
    # 1. One owner, and owners agree with the ledger.
    holders: dict[str, list[str]] = {}
    owners = [*manager.flows.values(), *manager.callinfos.values()]
    for owner in owners:
        for user, epoch in owner.users.items():
            holders.setdefault(user.id, []).append(owner.name)
            rec = records[user.id]
            if rec.owner is not owner:
                problems.append(
                    f"inv1: {owner.name} lists {user.id} but the ledger says "
                    f"{rec.owner.name if rec.owner else None}"
                )
            elif rec.epoch != epoch:
                problems.append(
                    f"inv2: {owner.name} holds {user.id} under epoch {epoch}, "
                    f"ledger epoch is {rec.epoch}"
                )
    for uid, names in holders.items():
        if len(names) > 1:
            problems.append(f"inv1: user {uid} has several owners: {names}")
    for rec in records.values():
        holder = rec.owner
        if holder is None:
            continue
        if holder.users.get(rec.user) != rec.epoch:
            problems.append(
                f"inv1: ledger says {holder.name} owns {rec.user.id} but it does not list it"
            )
        if isinstance(holder, Flow) and holder.state is FlowState.ENDED:
            problems.append(f"inv6: ended flow {holder.name} still owns {rec.user.id}")
        if isinstance(holder, CallInfo) and holder.ended:
            problems.append(f"inv1: ended {holder.name} still owns {rec.user.id}")
    # 6. No orphan tasks: every live flow's task is supervised; ended flows are gone.
    tasks = manager.tasks
    for flow in manager.flows.values():
        if flow.state is FlowState.ENDED:
            problems.append(f"inv6: ended flow {flow.name} is still listed")
        if flow.task is not None and not flow.task.done() and flow.task not in tasks:
            problems.append(f"inv6: task of {flow.name} is not supervised")
        for child in flow._children:
            if child not in tasks:
                problems.append(f"inv6: a child task of {flow.name} is not supervised")
    # 7/8. Legs: a user's current leg is live; an ownerless live leg is being collected.
    for rec in records.values():
        leg = rec.leg
        if leg is not None and leg.state is LegState.ENDED:
            problems.append(f"inv7: {rec.user.id} still points at ended leg {leg.id}")
        if (
            rec.owner is None
            and rec.live_leg is not None
            and not rec.user.keep
            and rec.gc is None
            and not manager._closing
        ):
            problems.append(f"inv8: {rec.user.id}'s live leg has no owner and no collector")
        # media bookkeeping is symmetric
        if rec.bridge is not None and records[rec.bridge.id].bridge is not rec.user:
            problems.append(f"media: {rec.user.id} bridged to {rec.bridge.id} one-way")
        if rec.meeting is not None and rec.user not in rec.meeting.members:
            problems.append(f"media: {rec.user.id} thinks it is in {rec.meeting.id}")
        if rec.live_leg is None and (rec.bridge is not None or rec.meeting is not None):
            problems.append(f"media: {rec.user.id} has no leg but is in a room")
    for meeting in manager.meetings():
        for member in meeting.members:
            if records[member.id].meeting is not meeting:
                problems.append(f"media: {meeting.id} lists {member.id} who is elsewhere")
    return problems


def check_quiescent(manager: UserManager) -> list[str]:
    """After every flow ended and grace periods passed: every user idle or held by a CallInfo
    (invariant 8), and nothing left running."""
    problems = check(manager)
    if manager.flows:
        problems.append(f"flows still running: {sorted(manager.flows)}")
    for rec in manager.ledger.records.values():
        if rec.live_leg is None:
            continue
        if rec.user.keep:
            continue
        if not isinstance(rec.owner, CallInfo):
            who = rec.owner.name if rec.owner else "nobody"
            problems.append(f"inv8: {rec.user.id} has a live leg held by {who}")
    return problems


def check_event_order(events: list[Event]) -> list[str]:
    """Invariant 3 from the history: for each completed preemption, the loser's interrupted
    operations unwound before the media was cleared, the clear came before the loser was told,
    and the loser was told before the claim returned; every hand-over was published."""
    problems: list[str] = []
    started: dict[str, PreemptionStarted] = {}
    phase: dict[str, list[Event]] = {}
    for ev in events:
        if isinstance(ev, PreemptionStarted):
            started[ev.user] = ev
            phase[ev.user] = []
        elif isinstance(ev, PreemptionCompleted) and ev.user in started:
            seq = phase.pop(ev.user)
            start = started.pop(ev.user)
            problems.extend(_check_phase(start, seq))
        else:
            for uid, seq in phase.items():
                if _about(ev, uid):
                    seq.append(ev)
    return problems


def _about(ev: Event, uid: str) -> bool:
    if isinstance(ev, OpInterrupted):
        return uid in ev.users
    if isinstance(ev, MediaChanged):
        return ev.command == "clear" and uid in ev.users
    if isinstance(ev, FlowNotified | OwnerChanged):
        return ev.user == uid
    return False


def _check_phase(start: PreemptionStarted, seq: list[Event]) -> list[str]:
    order = {"interrupted": 0, "cleared": 1, "notified": 2}
    last = -1
    problems = []
    for ev in seq:
        if isinstance(ev, OpInterrupted):
            step = "interrupted"
        elif isinstance(ev, MediaChanged):
            step = "cleared"
        elif isinstance(ev, FlowNotified) and ev.flow == start.victim:
            step = "notified"
        else:
            continue
        if order[step] < last:
            problems.append(
                f"inv3: preemption of {start.user} by {start.claimer}: {step} came "
                f"out of order (seq {ev.seq})"
            )
        last = max(last, order[step])
    return problems
