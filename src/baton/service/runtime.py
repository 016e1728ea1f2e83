"""The service: one dispatch centre — switch, core, store, authentication — in one process.

:class:`Service` is what the HTTP API (``baton.service.app``) and the CLI (``baton serve``) drive.
It can also run without HTTP (tests of the store and the routing do).

Life cycle
----------
:meth:`Service.start`: open the store (migrations), recover a crashed run and open a new one,
merge the directory (users, groups, rooms, roles: the config seeds it, the store is the truth
after that — :mod:`baton.service.store.directory`), refresh the users table, start the journal
writer on the core's event bus, add the users (and,
on the ``sim`` switch, their virtual phones), install the numbering plan. :meth:`Service.stop`:
stop the demo activity, stop every flow (their compensations run and are journalled), close the
switch, close the run's open records (``shutdown``), flush the journal, close the store. Every
background task belongs to the service and is awaited by ``stop``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from argon2 import PasswordHasher

from baton.core import FlowSpec, User, UserManager
from baton.core.events import Event, FlowEnded, FlowStarted
from baton.core.port import Switch
from baton.flows.queue import DispatcherQueue, Overflow
from baton.service.auth.permissions import Principal
from baton.service.auth.service import Auth
from baton.service.callers import Callers
from baton.service.config import (
    Config,
    ConfigError,
    GroupConfig,
    MeetingConfig,
    unknown_permissions,
)
from baton.service.metrics import Metrics, count, from_mapping, gauge
from baton.service.positions.alarms import Alarms
from baton.service.positions.service import AgentState, Positions, last_agent_states
from baton.service.routing import Router
from baton.service.store import Journal, Store
from baton.service.store.directory import load_directory
from baton.service.store.records import begin_run, end_run, heartbeat, take_stale_dialogs
from baton.service.switches import (
    DialogKeeper,
    PeerTrunk,
    build_switch,
    check_switch_users,
    switch_metrics,
    sync_switch_users,
)
from baton.service.voicelog.policy import Policy
from baton.service.voicelog.service import VoiceLogger
from baton.switch.sim import SimSwitch

__all__ = ["Fencing", "FlowInfo", "Service", "load_library"]

log = logging.getLogger("baton.service")

#: Seconds between heartbeats: after a crash, the run's records end at most this long before
#: the process died.
HEARTBEAT = 2.0


class Fencing(Protocol):
    """How a shard of a cluster fences its writes for a tenant (docs/cluster.md): ``take`` runs
    first in the transaction that opens the run (it raises if a newer epoch holds the tenant),
    ``check`` first in every journal transaction (it raises ``Fenced`` once the lease is
    lost). ``reason`` closes the records a dead shard left open (``failover``)."""

    reason: str

    async def take(self, conn: Any) -> None: ...

    async def check(self, conn: Any) -> None: ...


@dataclass
class FlowInfo:
    """What the service knows of a running flow beyond the core's handle."""

    started_at: float
    seq: int  # the flow.started event's sequence number (the start of its trace)
    args: dict[str, Any]  # JSON values (see FlowStarted.args)
    started_by: str | None = None
    users: list[str] = field(default_factory=list)


def _library(config: Config) -> dict[str, FlowSpec[Any]]:
    """The library plus the config's plug-ins (a broken plug-in stops start-up, named)."""
    from baton.flows.registry import PluginError, load_flows

    try:
        flows = load_flows(
            config.flows.plugins,
            entry_points=config.flows.entry_points,
            paths=config.flows.paths,
        )
    except PluginError as exc:
        raise ConfigError(config.source, [str(exc)]) from None
    problems = unknown_permissions(config.roles, (f.permission or "start" for f in flows.values()))
    if problems:
        raise ConfigError(config.source, problems)
    return flows


#: The library plus the config's plug-ins (for a shard loading it before it holds a tenant).
load_library = _library


class Service:
    """A dispatch centre. ``library`` defaults to :data:`baton.flows.LIBRARY`; ``switch`` to
    the one the config names; ``hasher`` to argon2id's defaults (tests pass a cheaper one)."""

    def __init__(
        self,
        config: Config,
        *,
        switch: Switch | None = None,
        library: Mapping[str, FlowSpec[Any]] | None = None,
        hasher: PasswordHasher | None = None,
        grace: float = 5.0,
        wallclock: Callable[[], float] = time.time,
        heartbeat: float = HEARTBEAT,
        fencing: Fencing | None = None,
        known_hashes: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self.fencing = fencing
        self.known_hashes = known_hashes
        self.heartbeat = heartbeat
        self.library: Mapping[str, FlowSpec[Any]] = (
            library if library is not None else _library(config)
        )
        self.switch = switch if switch is not None else build_switch(config)
        self.manager = UserManager(self.switch, grace=grace)
        self.store = Store(config.database)
        self.metrics = Metrics()
        self.wallclock = wallclock
        self.hasher = hasher
        #: Held while the directory changes (provisioning): one change at a time.
        self.directory_lock = asyncio.Lock()
        self.flows: dict[str, FlowInfo] = {}
        self.queues: dict[str, DispatcherQueue] = {}
        #: Who calls on each peer line (docs/cluster.md): the router presents, the views read.
        self.callers = Callers()
        self._positions: Positions | None = None
        self._alarms: Alarms | None = None
        self._voicelog: VoiceLogger | None = None
        self.run_id = 0
        self.started = False
        self.ws_clients = 0
        self._journal: Journal | None = None
        self._auth: Auth | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._unsubscribe: Callable[[], None] | None = None

    # ---- parts that exist once started

    @property
    def journal(self) -> Journal:
        if self._journal is None:
            raise RuntimeError("the service is not started")
        return self._journal

    @property
    def auth(self) -> Auth:
        if self._auth is None:
            raise RuntimeError("the service is not started")
        return self._auth

    @property
    def positions(self) -> Positions:
        """The positions' agent states (docs/service.md, "Positions")."""
        if self._positions is None:
            raise RuntimeError("the service is not started")
        return self._positions

    @property
    def alarms(self) -> Alarms:
        """Emergency alarms and who acknowledged them."""
        if self._alarms is None:
            raise RuntimeError("the service is not started")
        return self._alarms

    @property
    def groups(self) -> dict[str, GroupConfig]:
        return {g.id: g for g in self.config.groups}

    @property
    def rooms(self) -> dict[str, MeetingConfig]:
        """The dial-in meeting rooms, by id."""
        return {m.id: m for m in self.config.meetings}

    @property
    def voicelog(self) -> VoiceLogger:
        """Voice logging by policy (docs/service.md, "Voice logging")."""
        if self._voicelog is None:
            raise RuntimeError("the service is not started")
        return self._voicelog

    @property
    def sim(self) -> SimSwitch | None:
        """The sim switch, when the service runs on one (its phones can be driven)."""
        return self.switch if isinstance(self.switch, SimSwitch) else None

    # ---- life cycle

    async def start(self) -> None:
        """Bring the service up (see the module docstring). Raises if the store is unreachable."""
        if self.started:
            return
        await self.store.open()
        journal: Journal | None = None
        fencing = self.fencing
        async with self.store.engine.begin() as conn:
            if fencing is not None:
                await fencing.take(conn)
            self.run_id, closed = await begin_run(
                conn,
                switch=self.config.switch,
                at=self.wallclock(),
                crash_reason="crash" if fencing is None else fencing.reason,
            )
            # The config seeds the directory; the store is the truth after that.
            merged, differ = await load_directory(conn, self.config, at=self.wallclock())
            problems = check_switch_users(self.switch, merged)
            if problems:
                raise ConfigError("the store's directory", [f"sip.{p}" for p in problems])
            sync_switch_users(self.switch, self.config, merged)
            self.config = merged
            journal = Journal(self.store, self.run_id, wallclock=self.wallclock)
            if fencing is not None:
                journal.fence = fencing.check
            auth = Auth(
                self.config,
                self.store,
                journal,
                hasher=self.hasher,
                wallclock=self.wallclock,
                known_hashes=self.known_hashes,
            )
            await auth.sync_users(conn)
            agent_states = await last_agent_states(conn)
        if closed:
            log.warning("closed %d records left open by a previous run", closed)
        for line in differ:
            log.warning(line)
        self._journal, self._auth = journal, auth
        bus = self.manager.events
        journal.attach(bus)
        journal.start()
        self.metrics.attach(bus)
        self._unsubscribe = bus.subscribe(self._track)
        self.metrics.gauges(self._gauges)
        for u in self.config.users:
            self.manager.add_user(User(u.id, name=u.display_name, numbers=u.numbers, keep=u.keep))
        trunk = self.switch if isinstance(self.switch, PeerTrunk) else None
        for line in trunk.peer_lines if trunk is not None else ():
            self.manager.add_user(User(line, name=f"peer line {line}"))
        self._make_positions()
        self.positions.restore(agent_states)
        # The folder every recording goes to — the queue's overflow messages and the flows'
        # own, not only the voice logger's (which makes its dated folders itself): a missing
        # folder would lose a caller's message. One it cannot make fails each recording,
        # which raises its own alarm.
        try:
            await asyncio.to_thread(Path(self.config.recordings).mkdir, parents=True, exist_ok=True)
        except OSError as exc:
            log.error("cannot make the recordings folder %s: %s", self.config.recordings, exc)
        self._make_voicelog()
        self._make_queue()
        self.manager.router = Router(
            self.config,
            self.library,
            queue=self.queue,
            started=self.note_started_by,
            positions=self.positions,
            trunk=trunk if trunk is not None and trunk.peer_lines else None,
            callers=self.callers,
        )
        if self.sim is not None and self.config.sim.activity:
            from baton.service.sim.activity import run_activity

            self.spawn(run_activity(self), "sim-activity")
        # Last: phones may call in as soon as the switch listens, and the router is ready.
        await self.switch.start()
        await self._end_stale_dialogs()
        self.spawn(self._beat(), "heartbeat")
        self.started = True
        log.info(
            "service started",
            extra={
                "run": self.run_id,
                "switch": self.config.switch,
                "users": len(self.config.users),
            },
        )

    def _make_positions(self) -> None:
        d = self.config.dispatch
        journal = self.journal

        def kick() -> None:
            q = self.queue()
            if q is not None:
                q.kick()

        def offered(user: User) -> bool:
            q = self.queue()
            return q is not None and q.offered_to(user) is not None

        def withdraw(user: User) -> bool:
            q = self.queue()
            return q is not None and q.withdraw(user)

        self._positions = Positions(
            self.manager,
            self.switch,
            [self.manager.user(u.id) for u in self.config.positions],
            wallclock=self.wallclock,
            audit=journal.audit,
            kick=kick,
            offered=offered,
            withdraw=withdraw,
            initial=AgentState(d.agent_state),
            wrap_up=d.wrap_up,
        )
        self.spawn(self._positions.watch(), "presence-watch")

        def started_at(flow: str) -> float | None:
            info = self.flows.get(flow)
            return None if info is None else info.started_at

        self._alarms = Alarms(
            self.manager,
            wallclock=self.wallclock,
            started_at=started_at,
            audit=journal.audit,
            escalate_after=d.escalate_after or None,
        )

    def apply_directory(self, new: Config) -> None:
        """Run with ``new``'s users, groups, rooms and roles from now on (provisioning changed
        them; the caller checked ``new`` across tables and that every removed user is idle):
        the core, the switch, the numbering plan, the positions and the queue follow at once.
        A removed user's phones lose their registrations; calls in progress are untouched."""
        old = self.config
        m = self.manager
        before = {u.id: u for u in old.users}
        after = {u.id: u for u in new.users}
        for gone in before.keys() - after.keys():
            m.remove_user(m.user(gone))
        for u in new.users:
            if u.id not in before:
                m.add_user(User(u.id, name=u.display_name, numbers=u.numbers, keep=u.keep))
                continue
            user = m.user(u.id)
            user.name, user.keep = u.display_name, u.keep
            if user.numbers != u.numbers:
                m.set_numbers(user, u.numbers)
        sync_switch_users(self.switch, old, new)
        self.config = new
        if self._auth is not None:
            self._auth.config = new
        if isinstance(m.router, Router):
            m.router.reload(new)
        positions = [m.user(u.id) for u in new.positions]
        if self._positions is not None:
            self._positions.set_positions(positions)
        for q in self.queues.values():
            q.set_positions(positions)
        if self._voicelog is not None:  # who is a position, and which role, may have changed
            self._voicelog.policy = Policy.of(new)

    def _make_voicelog(self) -> None:
        sim = self.sim
        if sim is not None:  # the sim's recordings become files, so checksums and export work
            sim.write_recordings = True
        self._voicelog = VoiceLogger(
            self.manager,
            self.switch,
            Policy.of(self.config),
            folder=self.config.recordings,
            store=self.store,
            journal=self.journal,
            alarms=self.alarms,
            run_id=self.run_id,
            wallclock=self.wallclock,
        )
        self.metrics.gauges(self._voicelog.gauges)
        self.spawn(self._voicelog.run(), "voicelog")
        self.spawn(self._voicelog.sweep_forever(), "voicelog-retention")
        self.spawn(self._voicelog.recover(), "voicelog-recover")

    def _make_queue(self) -> None:
        if "queued_call" not in self.library:
            return
        d = self.config.dispatch
        positions = [self.manager.user(u.id) for u in self.config.positions]
        overflow_to = None if d.overflow_to is None else self.manager.user(d.overflow_to)
        self.queues["dispatch"] = DispatcherQueue(
            "dispatch",
            self.manager,
            positions,
            timeout=d.queue_timeout,
            overflow=Overflow(d.overflow),
            overflow_to=overflow_to,
            auto_assign=d.auto_assign,
            recordings=str(self.config.recordings),
            ring_timeout=d.ring_timeout,
            retry_after=d.retry_after,
            service_level=d.service_level,
            ready=self.positions.is_ready,
            on_missed=self.positions.missed,
        )

    def queue(self) -> DispatcherQueue | None:
        """The dispatcher queue (``None`` if the library has no queue flows)."""
        return self.queues.get("dispatch")

    async def stop(self) -> None:
        """Stop everything, flushing the journal. Idempotent."""
        was_started, self.started = self.started, False
        # A start that failed half-way (a SIP port in use) may have spawned tasks already:
        # they end before the store closes under them.
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if not was_started:
            await self.store.close()
            return
        for q in self.queues.values():
            q.close()
        if self._positions is not None:
            self._positions.close()
        if self._alarms is not None:
            self._alarms.close()
        try:
            await self.manager.close()
        finally:
            await self.switch.close()
            if self._voicelog is not None:
                self._voicelog.close()
                await self._voicelog.finish()  # the switch closed the files: checksum them
            journal = self.journal
            run_id, at = self.run_id, self.wallclock()

            async def close_run(conn: Any) -> None:
                await end_run(conn, run_id, at=at)

            journal.submit(close_run, "end-run")
            await journal.close()
            self.metrics.detach()
            if self._unsubscribe is not None:
                self._unsubscribe()
            await self.store.close()
            log.info("service stopped", extra={"run": self.run_id})

    async def _beat(self) -> None:
        """Write the run's heartbeat (and the switch's calls) every :attr:`heartbeat` seconds,
        through the journal, so a crash is dated to within that and its calls can be ended."""
        journal, run_id = self.journal, self.run_id
        pending: asyncio.Future[Any] | None = None
        while True:
            await asyncio.sleep(self.heartbeat)  # the run's start is its first sign of life
            if pending is None or pending.done():  # never pile beats up while the store is down
                at = self.wallclock()
                dialogs = self.switch.dialogs() if isinstance(self.switch, DialogKeeper) else None

                async def beat(conn: Any, at: float = at, dialogs: Any = dialogs) -> None:
                    await heartbeat(conn, run_id, at=at, dialogs=dialogs)

                pending = journal.submit(beat, "heartbeat")
                # A beat lost to a closing journal is no error worth reporting.
                pending.add_done_callback(lambda f: f.cancelled() or f.exception())

    async def _end_stale_dialogs(self) -> None:
        """End the calls a crashed run left in the switch, if it can (see ``switches``)."""
        if not isinstance(self.switch, DialogKeeper):
            return
        async with self.store.engine.begin() as conn:
            stale = await take_stale_dialogs(conn)
        if stale:
            ended = await self.switch.end_dialogs(stale)
            log.warning("ended %d of %d calls a crashed run left", ended, len(stale))

    def spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        """A background task owned by the service (cancelled and awaited by :meth:`stop`)."""
        task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("background task %s failed: %r", name, t.exception())

        task.add_done_callback(done)
        return task

    # ---- the audit log

    def audit(
        self,
        principal: Principal | None,
        action: str,
        target: str | None,
        outcome: str,
        details: dict[str, Any] | None = None,
        *,
        remote: str | None = None,
    ) -> None:
        """Log an action of ``principal`` (``None``: not authenticated) to the audit log,
        ordered with the events it caused; ``outcome`` is ``ok``, ``denied`` or ``failed``."""
        self.journal.audit(
            principal=None if principal is None else principal.user_id,
            role=None if principal is None else principal.role,
            action=action,
            target=target,
            outcome=outcome,
            details=details,
            remote=remote,
        )

    # ---- flows

    def _track(self, ev: Event) -> None:
        if isinstance(ev, FlowStarted):
            self.flows[ev.flow] = FlowInfo(self.wallclock(), ev.seq, dict(ev.args))
        elif isinstance(ev, FlowEnded):
            self.flows.pop(ev.flow, None)

    def note_started_by(self, flow: str, who: str) -> None:
        """Record who started ``flow`` (a principal's user id, or ``phone:<user>``)."""
        info = self.flows.get(flow)
        if info is not None:
            info.started_by = who
        self.journal.annotate_flow(flow, who)

    def user_ids(self) -> list[str]:
        return [u.id for u in self.config.users]

    # ---- metrics

    def _gauges(self) -> list[tuple[str, str, tuple[tuple[str, str], ...], float]]:
        m = self.manager
        live = sum(1 for r in m.ledger.records.values() if r.live_leg is not None)
        out = [
            gauge("baton_legs_active", "legs up now (dialling, ringing or connected)", live),
            gauge("baton_flows_running", "flows running now", len(m.flows)),
            gauge(
                "baton_callinfos_active", "stable calls (P2P, MeetingCall) now", len(m.callinfos)
            ),
            gauge("baton_meetings_active", "meetings now", len(m.meetings())),
            gauge("baton_users", "configured users", len(self.config.users)),
            gauge("baton_websocket_clients", "event stream clients now", self.ws_clients),
        ]
        if self._journal is not None:
            j = self._journal
            out += [
                gauge("baton_journal_pending", "events and writes not yet durable", j.pending),
                count(
                    "baton_journal_events_written_total",
                    "events written to the journal",
                    j.events_written,
                ),
                count("baton_journal_failures_total", "journal batches that failed", j.failures),
            ]
        for q in self.queues.values():
            out += _queue_gauges(q.name, q.snapshot())
        if self._positions is not None:
            out += _presence_gauges(self, self._positions)
        out += from_mapping("baton_switch_", switch_metrics(self.switch))
        return out


def _queue_gauges(name: str, f: Any) -> list[tuple[str, str, tuple[tuple[str, str], ...], float]]:
    level = f"{f.service_level:g}"
    return [
        gauge(
            "baton_queue_waiting", "callers waiting in a dispatcher queue", f.waiting, queue=name
        ),
        gauge(
            "baton_queue_longest_wait_seconds",
            "how long the longest-waiting caller has waited now",
            f.longest_wait,
            queue=name,
        ),
        gauge("baton_queue_answered_total", "queued calls answered", f.answered, queue=name),
        gauge(
            "baton_queue_answered_within_total",
            "queued calls answered within the service level (seconds)",
            f.answered_within,
            queue=name,
            seconds=level,
        ),
        gauge(
            "baton_queue_abandoned_total",
            "callers who hung up (or were taken) while queued",
            f.abandoned,
            queue=name,
        ),
        gauge("baton_queue_overflowed_total", "calls ended by overflow", f.overflowed, queue=name),
        gauge(
            "baton_queue_offers_failed_total",
            "offers of a queued call that a position did not take",
            f.offers_failed,
            queue=name,
        ),
        gauge(
            "baton_queue_requeued_total",
            "callers put back in the queue because their dispatcher's line failed",
            f.requeued,
            queue=name,
        ),
    ]


def _presence_gauges(
    service: Service, positions: Positions
) -> list[tuple[str, str, tuple[tuple[str, str], ...], float]]:
    out = []
    for u in service.config.users:
        contacts = len(positions.registrations(u.id))
        out.append(
            gauge(
                "baton_user_registered",
                "1 if the user has a phone registered",
                1 if contacts else 0,
                user=u.id,
            )
        )
        out.append(
            gauge("baton_user_contacts", "registered contacts of the user", contacts, user=u.id)
        )
    for uid in positions.ids():
        out.append(
            gauge(
                "baton_position_state",
                "1 for the agent state a position is in now",
                1,
                position=uid,
                state=positions.state_of(uid).value,
            )
        )
    for state, n in positions.counts().items():
        out.append(gauge("baton_positions", "positions in each agent state", n, state=state))
    return out
