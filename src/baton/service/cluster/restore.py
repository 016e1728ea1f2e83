"""What a standby restores when it takes a tenant over (docs/cluster.md, "Fail-over").

While a shard serves a tenant, the :class:`Restorer` keeps the phones' registrations in the
tenant's database (``cluster_bindings``, through the journal, so fenced like every write) —
written when they change, at most once a second. The shard that takes the tenant over:

* restores those registrations into its switch (their lifetimes shortened by the time since
  they were written): phones keep their registration and need no new REGISTER;
* finds the emergencies the dead shard's run had open (closed with reason ``failover`` when the
  run was recovered) and raises each again at the positions: ``emergency_call`` from the least
  busy position back to the caller;
* dials again the *keep* lines (a position's always-on line) that were up: :func:`keep_line`;
* forms again the push-to-talk groups that were open: the library's ``ptt_group`` over the same
  members (it rings them).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol, runtime_checkable

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from baton.core import Priority, Session, User, flow
from baton.service.cluster.fence import DbFence, epochs, metadata
from baton.service.runtime import Service
from baton.service.store.tables import flow_records, leg_records

__all__ = ["BindingKeeper", "Restorer", "bindings_table"]

log = logging.getLogger("baton.cluster")

bindings_table = sa.Table(
    "cluster_bindings",
    metadata,
    sa.Column("tenant", sa.String(64), primary_key=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("bindings", sa.JSON, nullable=False),
)

#: Seconds between looks at the registrations (written only when they changed).
SNAPSHOT_EVERY = 1.0

EMERGENCY_FLOWS = {"emergency_inbound": "caller", "emergency_call": "target"}
PTT_FLOWS = ("ptt_dial_in", "ptt_group")


@flow(priority=Priority.ROUTINE, name="keep_line")
async def keep_line(s: Session, user: User) -> str:
    """Dial ``user``'s always-on line (a *keep* user) and leave it up, connected and idle."""
    await s.claim(user, reason="keep line after a fail-over")
    await s.dial(user, timeout=30.0)
    return "up"


@runtime_checkable
class BindingKeeper(Protocol):
    """A switch whose registrations can move to another process (the SIP switch)."""

    def bindings(self) -> list[dict[str, object]]: ...

    def restore_bindings(self, entries: list[dict[str, object]], *, age: float = 0.0) -> int: ...


class Restorer:
    def __init__(self, service: Service, fence: DbFence) -> None:
        self.service = service
        self.fence = fence
        self.restored_bindings = 0
        self.reraised: list[str] = []
        self.redialled: list[str] = []
        self.reformed: list[str] = []
        self._last: list[dict[str, object]] | None = None

    async def before_start(self) -> None:
        """Nothing yet: the fence's tables are made by the take-over itself."""

    async def after_start(self) -> None:
        service, fence = self.service, self.fence
        tenant = fence.tenant
        async with service.store.engine.begin() as conn:
            row = (
                await conn.execute(
                    sa.select(bindings_table.c.at, bindings_table.c.bindings).where(
                        bindings_table.c.tenant == tenant
                    )
                )
            ).first()
            previous = await conn.scalar(
                sa.select(epochs.c.run_id)
                .where(epochs.c.tenant == tenant, epochs.c.epoch < fence.epoch)
                .order_by(epochs.c.epoch.desc())
                .limit(1)
            )
            emergencies: list[Any] = []
            ptt: list[Any] = []
            keep: list[str] = []
            if previous is not None:
                ptt = list(
                    await conn.execute(
                        sa.select(flow_records.c.args).where(
                            flow_records.c.run_id == previous,
                            flow_records.c.end_reason == fence.reason,
                            flow_records.c.name.in_(PTT_FLOWS),
                        )
                    )
                )
                keepers = [u.id for u in service.config.users if u.keep]
                keep = list(
                    (
                        await conn.execute(
                            sa.select(leg_records.c.user_id)
                            .where(
                                leg_records.c.run_id == previous,
                                leg_records.c.end_reason == fence.reason,
                                leg_records.c.answered_at.is_not(None),
                                leg_records.c.user_id.in_(keepers),
                            )
                            .distinct()
                        )
                    ).scalars()
                )
                emergencies = list(
                    await conn.execute(
                        sa.select(flow_records.c.name, flow_records.c.args).where(
                            flow_records.c.run_id == previous,
                            flow_records.c.end_reason == fence.reason,
                            flow_records.c.name.in_(list(EMERGENCY_FLOWS)),
                        )
                    )
                )
        switch = service.switch
        if row is not None and isinstance(switch, BindingKeeper):
            at, entries = row
            if isinstance(entries, list):
                self.restored_bindings = switch.restore_bindings(
                    entries, age=max(0.0, time.time() - float(at))
                )
                log.warning("tenant %s: %d registrations restored", tenant, self.restored_bindings)
        run_id = service.run_id

        async def note(conn: AsyncConnection) -> None:
            await fence.note_run(conn, run_id)

        noted = service.journal.submit(note, "cluster-epoch")
        noted.add_done_callback(lambda f: f.cancelled() or f.exception())
        for name, args in emergencies:
            self._reraise(name, args if isinstance(args, dict) else {})
        busy = {u for f in self.reraised for u in self._users_of(f)}
        for uid in keep:
            if uid not in busy:
                self._start(keep_line, self.redialled, service.manager.user(uid))
        for (args,) in ptt:
            self._reform(args if isinstance(args, dict) else {})
        if isinstance(switch, BindingKeeper):
            service.spawn(self._keep_bindings(switch), "cluster-bindings")

    def _reraise(self, name: str, args: dict[str, Any]) -> None:
        service = self.service
        spec = service.library.get("emergency_call")
        who = args.get(EMERGENCY_FLOWS[name])
        positions = service.config.positions
        if spec is None or not isinstance(who, str) or not positions:
            return
        try:
            caller = service.manager.user(who)
        except Exception:
            return
        dispatchers = [service.manager.user(p.id) for p in positions]

        def rank(d: Any) -> int:
            owner = service.manager.owner_of(d)
            return -1 if owner is None else int(owner.priority)

        dispatcher = min(dispatchers, key=rank)
        flow = service.manager.start(spec, dispatcher, caller)
        service.note_started_by(flow.name, "failover")
        self.reraised.append(flow.name)
        log.warning(
            "tenant %s: emergency of %s raised again as %s", self.fence.tenant, who, flow.name
        )

    def _users_of(self, flow_name: str) -> list[str]:
        info = self.service.flows.get(flow_name)
        return [] if info is None else list(info.args.values())

    def _start(self, spec: Any, into: list[str], *args: Any) -> None:
        service = self.service
        flow = service.manager.start(spec, *args)
        service.note_started_by(flow.name, "failover")
        into.append(flow.name)
        log.warning("tenant %s: %s started again as %s", self.fence.tenant, spec.name, flow.name)

    def _reform(self, args: dict[str, Any]) -> None:
        """A PTT group that was open: the same members (and the caller who opened it)."""
        spec = self.service.library.get("ptt_group")
        members = args.get("members") or []
        if isinstance(members, str):  # as the core shows a list: "a,b"
            members = members.split(",")
        names = [str(args.get("caller") or ""), *map(str, members)]
        known = {u.id for u in self.service.config.users}
        members = [self.service.manager.user(n) for n in dict.fromkeys(names) if n in known]
        if spec is not None and members:
            self._start(spec, self.reformed, members)

    async def _keep_bindings(self, switch: BindingKeeper) -> None:
        tenant = self.fence.tenant
        journal = self.service.journal
        while True:
            now = switch.bindings()
            if now != self._last:
                self._last = now
                at = time.time()

                async def write(conn: AsyncConnection, now: Any = now, at: float = at) -> None:
                    done = await conn.execute(
                        sa.update(bindings_table)
                        .where(bindings_table.c.tenant == tenant)
                        .values(at=at, bindings=now)
                    )
                    if not done.rowcount:
                        await conn.execute(
                            sa.insert(bindings_table).values(tenant=tenant, at=at, bindings=now)
                        )

                fut = journal.submit(write, "cluster-bindings")
                fut.add_done_callback(lambda f: f.cancelled() or f.exception())
            await asyncio.sleep(SNAPSHOT_EVERY)

    def close(self) -> None:
        """Nothing to stop: the snapshot task belongs to the service and stops with it."""
