"""Agent states of the dispatcher positions, and what the queue asks of them.

A position (a user whose role is a dispatcher role) has an *agent state* chosen by its
dispatcher — from the console, the API, or feature codes dialled on the phone — and one that
Baton derives:

=============  =============================================================================
logged out     nobody works at the position; it is offered no queued call
ready          it may be offered queued calls
not ready      at the position but offered no queued call; with a reason ("break", "training",
               "missed a queued call" when it let an offer ring out)
wrap-up        after a call, for ``dispatch.wrap_up`` seconds; then ready again by itself
busy           (derived) it holds a call or a queued call rings there
=============  =============================================================================

The dispatcher queue offers a call only to a position that is *ready*, not busy, and has a
phone registered (:mod:`baton.service.positions.presence`). Every change is an
``agent.state`` event on the bus (the console and the journal see it) and an audit entry
(``agent.state``: who changed it, how, from what to what).
"""

from __future__ import annotations

import asyncio
import datetime
import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from baton.core import P2P, User, UserManager
from baton.core.events import CallInfoEnded, CallInfoStarted, Event
from baton.core.port import Cause, Switch
from baton.service.errors import NotFound, Unprocessable
from baton.service.positions.presence import Registration, registrations
from baton.service.store.tables import audit as audit_table

__all__ = ["AgentState", "AgentStateChanged", "Positions", "iso", "last_agent_states"]


class AgentState(enum.Enum):
    LOGGED_OUT = "logged_out"
    READY = "ready"
    NOT_READY = "not_ready"
    WRAP_UP = "wrap_up"
    BUSY = "busy"  # derived: never set

    @property
    def label(self) -> str:
        return _LABELS[self]


_LABELS = {
    AgentState.LOGGED_OUT: "Logged out",
    AgentState.READY: "Ready",
    AgentState.NOT_READY: "Not ready",
    AgentState.WRAP_UP: "Wrap-up",
    AgentState.BUSY: "Busy",
}


@dataclass(slots=True, kw_only=True)
class AgentStateChanged(Event):
    """A position's agent state changed (``by``: who; ``via``: console, api, phone, queue)."""

    kind: ClassVar[str] = "agent.state"
    user: str
    state: str
    previous: str
    reason: str | None = None
    by: str | None = None
    via: str | None = None


def iso(ts: float) -> str:
    """ISO 8601 with the zone (UTC)."""
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat(timespec="seconds")


@dataclass
class _Agent:
    user: User
    state: AgentState
    reason: str | None
    since: float  # wall clock
    by: str | None = None
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)


Audit = Callable[..., Any]


class Positions:
    """The agent states of ``positions``. ``audit`` is the journal's audit writer;
    ``kick`` asks the queue to offer waiting calls again (a position may have become ready);
    ``withdraw`` takes back the offer ringing at a position that logged out."""

    def __init__(
        self,
        manager: UserManager,
        switch: Switch,
        positions: list[User],
        *,
        wallclock: Callable[[], float],
        audit: Audit | None = None,
        kick: Callable[[], None] | None = None,
        offered: Callable[[User], bool] | None = None,
        withdraw: Callable[[User], bool] | None = None,
        initial: AgentState = AgentState.READY,
        wrap_up: float = 0.0,
    ) -> None:
        self.manager = manager
        self.switch = switch
        self.wallclock = wallclock
        self.audit = audit
        self.kick = kick
        self.offered = offered
        self.withdraw = withdraw
        self.wrap_up = wrap_up
        self.initial = initial
        now = wallclock()
        self._agents = {u.id: _Agent(u, initial, None, now) for u in positions}
        self._calls: dict[str, tuple[str, ...]] = {}  # callinfo → its position users
        self._reachable: dict[str, bool] = {}
        self._unsubscribe = manager.events.subscribe(self._on_event)

    def set_positions(self, positions: list[User]) -> None:
        """The positions from now on (provisioning changed the users or roles): a new one starts
        in the initial agent state, one that is no longer a position is forgotten, the others
        keep their state."""
        now = self.wallclock()
        keep = {u.id for u in positions}
        for uid in [uid for uid in self._agents if uid not in keep]:
            gone = self._agents.pop(uid)
            if gone.timer is not None:
                gone.timer.cancel()
        for u in positions:
            agent = self._agents.get(u.id)
            if agent is None:
                self._agents[u.id] = _Agent(u, self.initial, None, now)
            else:
                agent.user = u
        if self.kick is not None:
            self.kick()

    def close(self) -> None:
        self._unsubscribe()
        for agent in self._agents.values():
            if agent.timer is not None:
                agent.timer.cancel()
                agent.timer = None

    # ---- looking

    def ids(self) -> list[str]:
        return list(self._agents)

    def is_position(self, user_id: str) -> bool:
        return user_id in self._agents

    def registrations(self, user_id: str) -> list[Registration]:
        return registrations(
            self.switch, user_id, wallclock=self.wallclock(), loop_now=self.manager.now()
        )

    def busy(self, user: User) -> bool:
        return self.manager.owner_of(user) is not None or (
            self.offered is not None and self.offered(user)
        )

    def state_of(self, user_id: str) -> AgentState:
        """The state shown: the chosen one, or *busy* while the position holds a call."""
        agent = self._agent(user_id)
        if agent.state is not AgentState.LOGGED_OUT and self.busy(agent.user):
            return AgentState.BUSY
        return agent.state

    def is_ready(self, user: User) -> bool:
        """May the queue offer ``user`` a call (ready, and a phone registered)?"""
        agent = self._agents.get(user.id)
        return (
            agent is not None
            and agent.state is AgentState.READY
            and bool(self.registrations(user.id))
        )

    def emergency_order(self, users: list[User]) -> list[User]:
        """The positions an emergency call rings, in order: ready ones first, then the others
        with a phone registered (not ready, in wrap-up, logged out — an emergency passes over
        nobody), then those with no phone. The flow rings free positions before it preempts a
        busy one; among equals it keeps this order."""
        return sorted(users, key=lambda u: (not self.is_ready(u), not self.registrations(u.id)))

    def view(self, user_id: str) -> dict[str, Any]:
        """The API's shape (unset values omitted; times ISO 8601)."""
        agent = self._agent(user_id)
        state = self.state_of(user_id)
        out: dict[str, Any] = {
            "state": state.value,
            "label": state.label,
            "since": iso(agent.since),
        }
        if agent.reason and agent.state is AgentState.NOT_READY:
            out["reason"] = agent.reason
            out["label"] = (
                f"{state.label} ({agent.reason})" if state is agent.state else state.label
            )
        if agent.by:
            out["by"] = agent.by
        return out

    def counts(self) -> dict[str, int]:
        """How many positions are in each state now."""
        out = {s.value: 0 for s in AgentState}
        for uid in self._agents:
            out[self.state_of(uid).value] += 1
        return out

    # ---- changing

    def set(
        self,
        user_id: str,
        state: AgentState | str,
        *,
        reason: str | None = None,
        by: str | None = None,
        role: str | None = None,
        via: str = "api",
    ) -> dict[str, Any]:
        """Set a position's agent state (``busy`` cannot be set: it is derived). Audited."""
        agent = self._agent(user_id)
        if isinstance(state, str):
            try:
                state = AgentState(state.strip().lower().replace("-", "_").replace(" ", "_"))
            except ValueError:
                choices = ", ".join(s.value for s in AgentState if s is not AgentState.BUSY)
                raise Unprocessable(
                    f"{state!r} is not an agent state; use one of {choices}",
                    id="bad-agent-state",
                    details={"field": "state"},
                ) from None
        if state is AgentState.BUSY:
            raise Unprocessable(
                "busy is shown while a position holds a call; it cannot be chosen",
                id="bad-agent-state",
                details={"field": "state"},
            )
        if state is AgentState.NOT_READY and not reason:
            reason = "break"
        self._change(agent, state, reason if state is AgentState.NOT_READY else None, by, via)
        if self.audit is not None:
            self.audit(
                principal=by,
                role=role,
                action="agent.state",
                target=user_id,
                outcome="ok",
                details={"state": state.value, "reason": reason, "via": via},
            )
        return self.view(user_id)

    def restore(self, states: dict[str, tuple[str, str | None]]) -> None:
        """Put positions back in the agent state the journal last recorded for them (a restart
        keeps who was logged out or on a break). Wrap-up is not restored: it was for a call of
        the previous run."""
        for uid, (state, reason) in states.items():
            agent = self._agents.get(uid)
            try:
                chosen = AgentState(state)
            except ValueError:
                continue
            if agent is None or chosen in (AgentState.BUSY, AgentState.WRAP_UP):
                continue
            agent.state, agent.reason, agent.by = chosen, reason, "restored"

    def missed(self, user: User, cause: Cause) -> None:
        """The queue's ``on_missed``: a ready position let an offer ring out or declined it, or
        its line failed on a call from the queue (the caller went back to the queue)."""
        agent = self._agents.get(user.id)
        if agent is None or agent.state is not AgentState.READY:
            return
        if cause is Cause.REJECTED:
            why = "declined a queued call"
        elif cause in P2P.LINE_FAILURES:
            why = f"line lost on a queued call ({cause.value})"
        else:
            why = "missed a queued call"
        self.set(user.id, AgentState.NOT_READY, reason=why, by="queue", via="queue")

    def check_presence(self) -> None:
        """Notice registrations that came or went (called every few seconds): a position whose
        phone registered may be offered the waiting calls."""
        changed = False
        for uid in self._agents:
            now = bool(self.registrations(uid))
            if self._reachable.get(uid) != now:
                self._reachable[uid] = now
                changed = True
        if changed and self.kick is not None:
            self.kick()

    async def watch(self, every: float = 2.0) -> None:
        """Run :meth:`check_presence` forever (a service background task)."""
        while True:
            self.check_presence()
            await asyncio.sleep(every)

    def _change(
        self,
        agent: _Agent,
        state: AgentState,
        reason: str | None,
        by: str | None,
        via: str,
    ) -> None:
        previous = agent.state
        if agent.timer is not None:
            agent.timer.cancel()
            agent.timer = None
        agent.state, agent.reason, agent.by = state, reason, by
        agent.since = self.wallclock()
        if state is AgentState.WRAP_UP and self.wrap_up > 0:
            agent.timer = self.manager.loop.call_later(self.wrap_up, self._wrapped_up, agent)
        self.manager.events.publish(
            AgentStateChanged(
                user=agent.user.id,
                state=state.value,
                previous=previous.value,
                reason=reason,
                by=by,
                via=via,
            )
        )
        if state is AgentState.READY and self.kick is not None:
            self.kick()
        if state is AgentState.LOGGED_OUT and self.withdraw is not None:
            # Nobody works there any more: a queued call ringing there goes on to the next
            # ready position at once, not after the ring timeout.
            self.withdraw(agent.user)

    def _wrapped_up(self, agent: _Agent) -> None:
        agent.timer = None
        if agent.state is AgentState.WRAP_UP:
            self._change(agent, AgentState.READY, None, "wrap-up", "timer")

    def _agent(self, user_id: str) -> _Agent:
        agent = self._agents.get(user_id)
        if agent is None:
            raise NotFound(
                f"{user_id!r} is not a dispatcher position",
                id="not-a-position",
                details={"user": user_id},
            )
        return agent

    def _on_event(self, ev: Event) -> None:
        # Wrap-up follows a call a ready position took part in (a stable call that ended).
        if isinstance(ev, CallInfoStarted):
            mine = tuple(u for u in ev.users if u in self._agents)
            if mine:
                self._calls[ev.callinfo] = mine
        elif isinstance(ev, CallInfoEnded):
            for uid in self._calls.pop(ev.callinfo, ()):
                agent = self._agents[uid]
                if agent.state is AgentState.READY and self.wrap_up > 0:
                    # After the bus has delivered this event to everyone (order of events).
                    self.manager.loop.call_soon(self._wrap, agent)

    def _wrap(self, agent: _Agent) -> None:
        if agent.state is AgentState.READY:
            self._change(agent, AgentState.WRAP_UP, None, "wrap-up", "call ended")


async def last_agent_states(conn: AsyncConnection) -> dict[str, tuple[str, str | None]]:
    """Each position's last recorded agent state (from the audit log), by user id."""
    rows = await conn.execute(
        sa.select(audit_table.c.target, audit_table.c.details)
        .where(audit_table.c.action == "agent.state", audit_table.c.outcome == "ok")
        .order_by(audit_table.c.id)
    )
    out: dict[str, tuple[str, str | None]] = {}
    for target, details in rows:
        if target and isinstance(details, dict) and isinstance(details.get("state"), str):
            out[target] = (details["state"], details.get("reason"))
    return out
