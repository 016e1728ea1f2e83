"""What a standby restores when it takes a tenant over (docs/cluster.md, "Fail-over").

While a shard serves a tenant, the :class:`Restorer` keeps the phones' registrations in the
tenant's database (``cluster_bindings``, through the journal, so fenced like every write) —
written when they change, at most once a second. The shard that takes the tenant over:

* restores those registrations into its switch (their lifetimes shortened by the time since
  they were written): phones keep their registration and need no new REGISTER;
* finds the emergencies the dead shard's run had open (closed with reason ``failover`` when the
  run was recovered) and raises each again at the positions: ``emergency_call`` from the least
  busy position back to the caller.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol, runtime_checkable

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from baton.service.cluster.fence import DbFence, epochs, metadata
from baton.service.runtime import Service
from baton.service.store.tables import flow_records

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
            if previous is not None:
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
