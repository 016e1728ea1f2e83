"""Checks of the invariants of docs/design.md on a live UserManager, for tests and ``baton check``.

:func:`check` inspects the state at one instant and returns the violations it finds (an empty
list when all is well). :func:`check_event_order` reads the event history and checks the order
the preemption protocol promises. :func:`check_quiescent` is for the end of a scenario: when all
flows have ended and grace periods have passed, every user is idle or held by a CallInfo.
"""

from __future__ import annotations

from collections.abc import Callable

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
from baton.core.ledger import UserRecord
from baton.core.manager import UserManager
from baton.core.model import Direction, LegState

__all__ = ["Watch", "check", "check_event_order", "check_quiescent"]


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
            and not manager.closing
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


#: What a switch says a user hears now: user ids and ``tone:…``/``prompt:…``; ``None`` when the
#: user has no connected call at the switch.
Hearing = Callable[[str], "set[str] | None"]


class Watch:
    """The invariants that need a clock: 10 (liveness), 11 (no dead air), and the per-user
    state of 12 (clean hand-over), on top of :func:`check`.

    Call :meth:`check` whenever something happened, and again at :meth:`next_deadline` (nothing
    may happen at all while a claim hangs or a user sits in silence — that is the point). A
    problem is reported once, with a stable message.

    * **10.** Every claim resolves by its bound (its own patience, plus one preemption per user:
      the loser's unwinding and a media clear); every flow asked to end, or finishing, ends by
      ``UserManager.end_timeout``; every outbound leg still ringing is given up by its ring
      deadline.
    * **11.** A user held by a flow or a CallInfo, connected at the switch, who hears nobody and
      is played nothing, outside a wait the holder declared (``Session.quiet``), for longer than
      ``dead_air`` seconds, is dead air. ``dead_air`` must cover the switch's latency: a flow
      needs a command or two to put a party somewhere.
    * **12.** No wait of a former owner on a user (a dial, a digit collection…) is still live
      (not interrupted) after a hand-over; a flow keeps no handler for a user it lost.
    """

    def __init__(self, manager: UserManager, hears: Hearing, *, dead_air: float = 2.0) -> None:
        self.manager = manager
        self.hears = hears
        self.dead_air = dead_air
        self._silent: dict[str, tuple[int, float]] = {}  # user -> (epoch, silent since)
        self._next: float | None = None

    def next_deadline(self) -> float | None:
        """The earliest moment a bound found pending at the last check expires."""
        return self._next

    def check(self) -> list[str]:
        m = self.manager
        now = m.now() if m.has_loop else 0.0  # (0 before the loop ever ran)
        problems = check(m)
        deadlines: list[float] = []

        def due(when: float) -> bool:
            if when < now:
                return True
            deadlines.append(when)
            return False

        for claimer, users, bound in m.claims.pending.values():
            if due(bound):
                problems.append(
                    f"inv10: claim by {claimer.name} of {','.join(u.id for u in users)} "
                    f"unresolved past its bound (t={bound:.2f})"
                )
        for flow in m.flows.values():
            end_by = flow.end_by
            if end_by is not None and flow.state is not FlowState.ENDED and due(end_by + 0.5):
                problems.append(
                    f"inv10: {flow.name} was asked to end and has not by t={end_by:.2f}"
                )
        for rec in m.ledger.records.values():
            leg = rec.live_leg
            if (
                leg is not None
                and leg.deadline > 0
                and not leg.connected
                and leg.direction is Direction.OUTBOUND
                and due(leg.deadline + 0.5)
            ):
                problems.append(f"inv10: {leg.id} of {rec.user.id} rings past its deadline")
            problems.extend(self._dead_air(rec, now, due))
            for op in rec.ops:
                if (
                    op.owner is rec.owner
                    or not op.wait  # a command in flight: the switch carries it out anyway
                    or op.notice is not None
                    or op.owner.kind == "manager"
                ):
                    continue
                if op.ends_on_hangup and rec.live_leg is None:
                    continue
                problems.append(
                    f"inv12: {op.owner.name}'s {op.name} on {rec.user.id} outlived the "
                    f"hand-over to {rec.owner.name if rec.owner else 'nobody'}"
                )
        for flow in m.flows.values():
            for kind, user in flow.session._handlers:
                taking = m.ledger.records[user.id].preemption
                if taking is not None and taking.victim is flow:
                    continue  # the loser is told at step 6: its handler is about to run
                if user not in flow.users and user in flow._lost_log:
                    problems.append(
                        f"inv12: {flow.name} keeps a {kind} handler for {user.id}, lost"
                    )
        self._next = min(deadlines) if deadlines else None
        return problems

    def _dead_air(self, rec: UserRecord, now: float, due: Callable[[float], bool]) -> list[str]:
        uid = rec.user.id
        owner = rec.owner
        leg = rec.live_leg
        if (
            owner is None
            or leg is None
            or not leg.connected
            or rec.preemption is not None
            or rec.quiet is not None
            or (isinstance(owner, Flow) and owner.state is not FlowState.RUNNING)
        ):
            self._silent.pop(uid, None)
            return []
        heard = self.hears(uid)
        if heard is None or heard:
            self._silent.pop(uid, None)
            return []
        since = self._silent.get(uid)
        if since is None or since[0] != rec.epoch:
            since = self._silent[uid] = (rec.epoch, now)
        if due(since[1] + self.dead_air):
            return [
                f"inv11: {uid}, held by {owner.name}, hears nothing since "
                f"t={since[1]:.2f} (dead air)"
            ]
        return []
