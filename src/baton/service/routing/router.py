"""The numbering plan: which flow an inbound call starts, by the number dialled.

In order:

0. a feature code (a dispatcher position's agent state, from the phone's keypad):
   ``*70`` log out, ``*71`` ready, ``*72`` not ready (reason "break") — the position's state
   changes at once (audited, ``via`` phone) and ``feature_code`` confirms with a tone and hangs
   up; a user who is not a position hears the busy tone;
1. the emergency number → ``emergency_inbound(caller, positions)`` — anyone may dial it;
2. the dispatcher number → ``queued_call(caller, queue)``;
3. a user's number → ``inbound_call(caller, callee)``;
4. a group's number → ``group_dial_in`` (the caller is answered, then the library's
   ``group_call`` rings the rest of the group) or, for a group with ``mode = "ptt"``,
   ``ptt_dial_in`` (a push-to-talk group, the caller holding the floor first);
5. a meeting room's number → ``dial_in(caller, room)``;
6. a number of another tenant of the cluster (a prefix of ``[sip.peers] numbers``) → a free
   peer line is pointed at it and ``inbound_call(caller, line)`` rings it through the edge
   (docs/cluster.md, "Calls between tenants"; *busy* when every line is taken); the number
   dialled is kept for the line (``leg.dialled``, :mod:`baton.service.callers`);
7. anything else → ``unroutable`` (the caller is refused with *unreachable*).

A call *from* another tenant arrives on a peer line: it may reach this tenant's users' numbers
only (``inbound_call``), nothing else. Its caller — number, id and tenant, from the INVITE — is
presented on the line first (:mod:`baton.service.callers`).

Except for the emergency number, the caller's role must grant the flow's permission (else the
call is refused with *rejected*), and a precedence the call asks for (RFC 4412
``Resource-Priority``, on SIP) is capped at the caller's maximum priority.

The router runs inside the switch's event callback, so it only *starts* flows (synchronous) and
never awaits.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from baton.core import BatonError, FlowSpec, Leg, User, UserManager
from baton.core.port import InboundCall
from baton.service.auth.service import principal_for
from baton.service.callers import CallerPresented, Callers, PeerDialled, caller_from
from baton.service.config import Config
from baton.service.positions.service import AgentState, Positions
from baton.service.routing.flows import (
    dial_in,
    feature_code,
    group_dial_in,
    ptt_dial_in,
    unroutable,
)
from baton.service.switches import PeerTrunk

if TYPE_CHECKING:
    from baton.flows.queue import DispatcherQueue

__all__ = ["FEATURE_CODES", "Router", "dialled_number"]

#: Feature codes a position dials to change its agent state (docs/service.md, "Positions").
FEATURE_CODES: dict[str, tuple[AgentState, str | None]] = {
    "*70": (AgentState.LOGGED_OUT, None),
    "*71": (AgentState.READY, None),
    "*72": (AgentState.NOT_READY, "break"),
}

log = logging.getLogger("baton.service.routing")


def dialled_number(to: str) -> str:
    """The number in a dialled address: ``sip:1001@host;user=phone`` → ``1001``."""
    for scheme in ("sips:", "sip:", "tel:"):
        if to.startswith(scheme):
            to = to[len(scheme) :]
    return to.split("@", 1)[0].split(";", 1)[0]


class Router:
    """Installed as ``manager.router``. ``started`` is called with each flow it starts (the
    service records who caused it)."""

    def __init__(
        self,
        config: Config,
        library: Mapping[str, FlowSpec[Any]],
        *,
        queue: Callable[[], DispatcherQueue | None],
        started: Callable[[str, str], None],
        positions: Positions | None = None,
        trunk: PeerTrunk | None = None,
        callers: Callers | None = None,
    ) -> None:
        self.positions = positions
        self.trunk = trunk
        self.callers = callers if callers is not None else Callers()
        self._lines = frozenset(trunk.peer_lines) if trunk is not None else frozenset()
        self._turn = 0
        self.library = library
        self.queue = queue
        self.started = started
        self.reload(config)

    def reload(self, config: Config) -> None:
        """Route by ``config`` from the next call on (provisioning changed the directory)."""
        self.config = config
        self._groups = {g.number: g for g in config.groups if g.number}
        self._rooms = {m.number: m for m in config.meetings}

    def __call__(self, manager: UserManager, caller: User, leg: Leg, ev: InboundCall) -> None:
        number = dialled_number(ev.to)
        if caller.id in self._lines:
            self._present(manager, caller, leg, ev)
        try:
            self._route(manager, caller, number, ev.priority)
        except BatonError as exc:  # the manager is closing, or the arguments were refused
            log.warning("routing %s → %s failed: %s", caller.id, number, exc)

    def _route(self, manager: UserManager, caller: User, number: str, asked: int | None) -> None:
        cfg = self.config
        user_cfg = cfg.user(caller.id)
        principal = (
            None if user_cfg is None else principal_for(cfg, user_cfg, via="phone", token_id="")
        )
        cap = 0 if principal is None else principal.max_priority
        priority = None if asked is None else min(asked, cap)

        def start(name: str, *args: Any, check: bool = True, **kwargs: Any) -> str | None:
            """Start the flow ``name``; its name, or None if the call was refused instead."""
            spec = self.library.get(name)
            if spec is None:
                self._refuse(manager, caller, number, "unreachable")
                return None
            needed = spec.permission or "start"
            if check and (principal is None or not principal.may(needed)):
                log.info("%s may not %s (dialled %s)", caller.id, name, number)
                self._refuse(manager, caller, number, "rejected")
                return None
            flow = manager.start(spec, *args, priority=priority, **kwargs)
            self.started(flow.name, f"phone:{caller.id}")
            return flow.name

        if caller.id in self._lines:
            # Another tenant's call: to this tenant's users only (docs/cluster.md).
            callee = manager.by_number(number)
            if callee is None or callee.id in self._lines:
                self._refuse(manager, caller, number, "unreachable")
            else:
                start("inbound_call", caller, callee, check=False)
            return
        feature = FEATURE_CODES.get(number)
        if feature is not None and self.positions is not None:
            accepted = self.positions.is_position(caller.id)
            if accepted:
                state, reason = feature
                self.positions.set(
                    caller.id,
                    state,
                    reason=reason,
                    by=caller.id,
                    role=None if user_cfg is None else user_cfg.role,
                    via="phone",
                )
            flow = manager.start(feature_code, caller, number, accepted)
            self.started(flow.name, f"phone:{caller.id}")
            return
        d = cfg.dispatch
        if d.emergency_number is not None and number == d.emergency_number:
            positions = [manager.user(u.id) for u in cfg.positions]
            if self.positions is not None:
                positions = self.positions.emergency_order(positions)
            start("emergency_inbound", caller, positions, check=False)
            return
        if d.number is not None and number == d.number:
            queue = self.queue()
            if queue is None:
                self._refuse(manager, caller, number, "unreachable")
            else:
                start("queued_call", caller, queue)
            return
        callee = manager.by_number(number)
        if callee is not None and callee is not caller:
            start("inbound_call", caller, callee)
            return
        group = self._groups.get(number)
        if group is not None:
            members = [manager.user(m) for m in group.members]
            spec = ptt_dial_in if group.mode == "ptt" else group_dial_in
            if principal is None or not principal.may(spec.permission or "start"):
                self._refuse(manager, caller, number, "rejected")
                return
            flow = manager.start(spec, caller, group.id, members, priority=priority)
            self.started(flow.name, f"phone:{caller.id}")
            return
        room = self._rooms.get(number)
        if room is not None:
            if principal is None or not principal.may(dial_in.permission or "start"):
                self._refuse(manager, caller, number, "rejected")
                return
            flow = manager.start(dial_in, caller, room.id, priority=priority)
            self.started(flow.name, f"phone:{caller.id}")
            return
        trunk = self.trunk
        if trunk is not None and number.startswith(trunk.peer_numbers):
            line = self._free_line(manager)
            if line is None:
                self._refuse(manager, caller, number, "busy")
                return
            trunk.dial_peer(line.id, number)
            placing = start("inbound_call", caller, line)
            if placing is not None:  # the line's views and records name the number, not the line
                self.callers.dial(line.id, number)
                manager.events.publish(PeerDialled(user=line.id, number=number, flow=placing))
            return
        self._refuse(manager, caller, number, "unreachable")

    def _present(self, manager: UserManager, line: User, leg: Leg, ev: InboundCall) -> None:
        """Say who calls on a peer line: the journal's ``leg.caller`` and the line's view."""
        who = caller_from(ev.headers)
        if who is None:
            return
        self.callers.present(line.id, leg.id, who)
        manager.events.publish(
            CallerPresented(user=line.id, leg=leg.id, number=who.number, name=who.name,
                            tenant=who.tenant)
        )  # fmt: skip

    def _free_line(self, manager: UserManager) -> User | None:
        """A peer line with no call and no flow, taking turns (two calls routed in one loop
        turn, before their flows claim a line, get different ones)."""
        assert self.trunk is not None
        lines = self.trunk.peer_lines
        for i in range(len(lines)):
            k = (self._turn + i) % len(lines)
            user = manager.find_user(lines[k])
            if user is not None and manager.leg_of(user) is None and manager.owner_of(user) is None:
                self._turn = k + 1
                return user
        return None

    def _refuse(self, manager: UserManager, caller: User, number: str, cause: str) -> None:
        flow = manager.start(unroutable, caller, number, cause)
        self.started(flow.name, f"phone:{caller.id}")
