"""Call records from the event stream: each core event becomes zero or more SQL statements on the
record tables (legs, flows, preemptions, CallInfos, recordings).

The projector is a pure translator plus a little memory (which names are flows, which users each
flow held, which recordings are open), so the journal writer can run its statements in the same
transaction as the journal rows themselves: a record exists exactly when the events that made it
are durable. The memory can be snapshotted and restored, so a batch that fails to commit can be
replayed without counting anything twice.

Mapping
-------
* ``leg.state``: an outbound leg's ``dialling`` or an inbound leg's ``ringing`` opens a leg
  record; ``connected`` stamps the answer; ``ended`` closes it with the cause.
* ``leg.caller``: who calls on a peer line (the service's router) is written on its leg record,
  and — for as long as that leg lives — in ``callers`` (line → caller) of every flow record and
  CallInfo record the line takes part in (docs/cluster.md, "Calls between tenants").
* ``leg.dialled``: the number a peer line was pointed at for a call out (the router) is written
  on the line's next outbound leg record (``dialled_number``) — if the flow that dialled it
  places it — and in ``dialled`` (line → number) of that flow's record and of every flow and
  CallInfo record the line takes part in while that leg lives.
* ``owner.changed``: the owner of a user when its leg opens (or the first one after) is written
  on the leg record; a flow's users are collected for its record.
* ``flow.started`` / ``flow.ended``: open and close a flow record (outcome, error, users).
* ``preemption.started`` / ``.completed`` / ``.superseded``: one row per preemption, naming the
  victim, the claimer, the priority and the reason — the "preemptions suffered" of a flow.
* ``callinfo.started`` / ``.ended``: the stable calls (P2P, MeetingCall).
* ``media`` ``record`` / ``record.stop`` / ``record.done``: the recordings index (``status``
  ``recording`` until the voice logger seals the file with its checksum); a recording is also
  closed when its user's leg ends, the user is cleared, or its meeting is destroyed (the switch
  stops it then).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql import Executable

from baton.core.events import (
    CallInfoEnded,
    CallInfoStarted,
    Event,
    FlowEnded,
    FlowStarted,
    LegStateChanged,
    MediaChanged,
    OwnerChanged,
    PreemptionCompleted,
    PreemptionStarted,
    PreemptionSuperseded,
)
from baton.service.callers import CallerPresented, PeerDialled
from baton.service.store.tables import (
    callinfo_records,
    flow_records,
    leg_records,
    preemptions,
    recordings,
)

__all__ = ["Projector"]


@dataclass
class _State:
    flows: dict[str, list[str]] = field(default_factory=dict)  # running flow → users it held
    owners: dict[str, str] = field(default_factory=dict)  # user → its owner now
    open_recordings: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    #               path → (user, meeting)
    callers: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    #        peer line → (its leg, the caller presented on it) while that leg lives
    flow_callers: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    dialled: dict[str, tuple[str | None, str, str]] = field(default_factory=dict)
    #        peer line → (its leg once placed, the number dialled, the flow that dials it)
    flow_dialled: dict[str, dict[str, str]] = field(default_factory=dict)
    #             running flow → the numbers dialled on the lines it took part with
    #             running flow → the callers on the lines it took part with


class Projector:
    """Translates events of one run into record statements."""

    def __init__(self, run_id: int) -> None:
        self.run_id = run_id
        self._state = _State()

    def snapshot(self) -> _State:
        return copy.deepcopy(self._state)

    def restore(self, state: _State) -> None:
        self._state = state

    def annotate_flow(self, flow: str, started_by: str) -> Executable:
        """Who started a flow (known to the API, not to the core)."""
        return (
            sa.update(flow_records)
            .where(flow_records.c.run_id == self.run_id, flow_records.c.flow == flow)
            .values(started_by=started_by)
        )

    def apply(self, ev: Event, at: float) -> list[Executable]:
        """The statements that record ``ev`` (published at wall time ``at``)."""
        run = self.run_id
        st = self._state
        if isinstance(ev, LegStateChanged):
            return self._leg(ev, at)
        if isinstance(ev, OwnerChanged):
            out: list[Executable] = []
            if ev.new is None:
                st.owners.pop(ev.user, None)
            else:
                st.owners[ev.user] = ev.new
                users = st.flows.get(ev.new)
                if users is not None and ev.user not in users:
                    users.append(ev.user)
                    st.flow_callers.setdefault(ev.new, {}).update(self._callers_of([ev.user]))
                    st.flow_dialled.setdefault(ev.new, {}).update(self._dialled_of([ev.user]))
                out.append(
                    sa.update(leg_records)
                    .where(
                        leg_records.c.run_id == run,
                        leg_records.c.user_id == ev.user,
                        leg_records.c.ended_at.is_(None),
                        leg_records.c.owner.is_(None),
                    )
                    .values(owner=ev.new)
                )
            return out
        if isinstance(ev, FlowStarted):
            st.flows[ev.flow] = []
            # A flow started for a call on a peer line names the line among its arguments.
            callers = st.flow_callers[ev.flow] = self._callers_of(_arg_users(ev.args))
            dialled = st.flow_dialled[ev.flow] = self._dialled_of(_arg_users(ev.args))
            return [
                sa.insert(flow_records).values(
                    run_id=run,
                    flow=ev.flow,
                    name=ev.name,
                    priority=ev.priority,
                    args=dict(ev.args),
                    users=[],
                    callers=dict(callers) or None,
                    dialled=dict(dialled) or None,
                    started_at=at,
                )
            ]
        if isinstance(ev, FlowEnded):
            users = st.flows.pop(ev.flow, [])
            callers = st.flow_callers.pop(ev.flow, {})
            dialled = st.flow_dialled.pop(ev.flow, {})
            return [
                sa.update(flow_records)
                .where(flow_records.c.run_id == run, flow_records.c.flow == ev.flow)
                .values(
                    ended_at=at,
                    outcome=ev.outcome,
                    error=ev.error,
                    users=users,
                    callers=callers or None,
                    dialled=dialled or None,
                    end_reason=ev.outcome,
                )
            ]
        if isinstance(ev, PreemptionStarted):
            return [
                sa.insert(preemptions).values(
                    run_id=run,
                    at=at,
                    user_id=ev.user,
                    victim=ev.victim,
                    claimer=ev.claimer,
                    priority=ev.priority,
                    reason=ev.reason,
                )
            ]
        if isinstance(ev, PreemptionCompleted):
            return [
                sa.update(preemptions)
                .where(
                    preemptions.c.run_id == run,
                    preemptions.c.user_id == ev.user,
                    preemptions.c.victim == ev.victim,
                    preemptions.c.seconds.is_(None),
                )
                .values(seconds=ev.seconds)
            ]
        if isinstance(ev, PreemptionSuperseded):
            return [
                sa.update(preemptions)
                .where(
                    preemptions.c.run_id == run,
                    preemptions.c.user_id == ev.user,
                    preemptions.c.claimer == ev.old_claimer,
                    preemptions.c.seconds.is_(None),
                    preemptions.c.superseded_by.is_(None),
                )
                .values(superseded_by=ev.new_claimer)
            ]
        if isinstance(ev, CallInfoStarted):
            return [
                sa.insert(callinfo_records).values(
                    run_id=run,
                    callinfo=ev.callinfo,
                    users=list(ev.users),
                    callers=self._callers_of(ev.users) or None,
                    dialled=self._dialled_of(ev.users) or None,
                    priority=ev.priority,
                    meeting=ev.meeting,
                    started_at=at,
                )
            ]
        if isinstance(ev, CallInfoEnded):
            return [
                sa.update(callinfo_records)
                .where(
                    callinfo_records.c.run_id == run,
                    callinfo_records.c.callinfo == ev.callinfo,
                )
                .values(ended_at=at, end_reason=ev.reason)
            ]
        if isinstance(ev, MediaChanged):
            return self._media(ev, at)
        if isinstance(ev, CallerPresented):
            st.callers[ev.user] = (ev.leg, ev.caller.view())
            return [
                sa.update(leg_records)
                .where(leg_records.c.run_id == run, leg_records.c.leg == ev.leg)
                .values(caller_number=ev.number, caller_name=ev.name, caller_tenant=ev.tenant)
            ]
        if isinstance(ev, PeerDialled):
            st.dialled[ev.user] = (None, ev.number, ev.flow)
            mine = st.flow_dialled.get(ev.flow)
            if mine is None:  # (the flow has ended already: its record is closed)
                return []
            mine[ev.user] = ev.number
            return [
                sa.update(flow_records)
                .where(flow_records.c.run_id == run, flow_records.c.flow == ev.flow)
                .values(dialled=dict(mine))
            ]
        return []

    def _place(self, ev: LegStateChanged, owner: str | None) -> str | None:
        """The number a peer line's new leg calls: the one it was pointed at, if this leg is
        the call out the dialling flow places (any other leg of the line is not that call)."""
        pending = self._state.dialled.get(ev.user)
        if pending is None or pending[0] is not None:
            return None
        _, number, flow = pending
        if ev.direction != "outbound" or owner != flow:
            del self._state.dialled[ev.user]
            return None
        self._state.dialled[ev.user] = (ev.leg, number, flow)
        return number

    def _dialled_of(self, users: Iterable[str]) -> dict[str, str]:
        """The numbers dialled on those of ``users`` that are peer lines calling out."""
        held = self._state.dialled
        return {u: held[u][1] for u in users if u in held}

    def _callers_of(self, users: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The callers presented on those of ``users`` that are peer lines with a live call."""
        held = self._state.callers
        return {u: dict(held[u][1]) for u in users if u in held}

    def _leg(self, ev: LegStateChanged, at: float) -> list[Executable]:
        run = self.run_id
        opens = (ev.direction == "outbound" and ev.state == "dialling") or (
            ev.direction == "inbound" and ev.state == "ringing"
        )
        this = (leg_records.c.run_id == run, leg_records.c.leg == ev.leg)
        if opens:
            owner = self._state.owners.get(ev.user)
            return [
                sa.insert(leg_records).values(
                    run_id=run,
                    leg=ev.leg,
                    user_id=ev.user,
                    direction=ev.direction,
                    owner=owner,
                    started_at=at,
                    dialled_number=self._place(ev, owner),
                )
            ]
        if ev.state == "connected":
            return [sa.update(leg_records).where(*this).values(answered_at=at)]
        if ev.state == "ended":
            presented = self._state.callers.get(ev.user)
            if presented is not None and presented[0] == ev.leg:
                del self._state.callers[ev.user]
            dialled = self._state.dialled.get(ev.user)
            if dialled is not None and dialled[0] == ev.leg:
                del self._state.dialled[ev.user]
            out: list[Executable] = [
                sa.update(leg_records)
                .where(*this, leg_records.c.ended_at.is_(None))
                .values(ended_at=at, cause=ev.cause, end_reason=ev.cause)
            ]
            out += self._close_recordings(at, "leg ended", user=ev.user)
            return out
        return []

    def _media(self, ev: MediaChanged, at: float) -> list[Executable]:
        st = self._state
        if ev.command == "record" and ev.detail:
            user = ev.users[0] if ev.users else None
            st.open_recordings[ev.detail] = (user, ev.meeting)
            return [
                sa.insert(recordings).values(
                    run_id=self.run_id,
                    path=ev.detail,
                    user_id=user,
                    meeting=ev.meeting,
                    by=ev.by,
                    started_at=at,
                    status="recording",
                )
            ]
        if ev.command == "record.stop" and ev.detail:
            return self._close_recordings(at, "stopped", path=ev.detail)
        if ev.command == "record.done" and ev.detail:  # the switch ended it by itself
            return self._close_recordings(at, "finished", path=ev.detail)
        if ev.command == "clear" and ev.users:
            return self._close_recordings(at, "cleared", user=ev.users[0])
        if ev.command == "meeting.destroy" and ev.meeting:
            return self._close_recordings(at, "meeting ended", meeting=ev.meeting)
        return []

    def _close_recordings(
        self,
        at: float,
        reason: str,
        *,
        path: str | None = None,
        user: str | None = None,
        meeting: str | None = None,
    ) -> list[Executable]:
        st = self._state
        paths = [
            p
            for p, (u, m) in st.open_recordings.items()
            if p == path
            or (user is not None and u == user)
            or (meeting is not None and m == meeting)
        ]
        out: list[Executable] = []
        for p in paths:
            del st.open_recordings[p]
            out.append(
                sa.update(recordings)
                .where(
                    recordings.c.run_id == self.run_id,
                    recordings.c.path == p,
                    recordings.c.ended_at.is_(None),
                )
                .values(ended_at=at, end_reason=reason)
            )
        return out


def _arg_users(args: Any) -> list[str]:
    """The user ids a flow's arguments may name: its string values and lists of strings."""
    out: list[str] = []
    for value in dict(args).values():
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, list | tuple):
            out += [v for v in value if isinstance(v, str)]
    return out
