"""Fencing in the store: the journal of a tenant refuses writes from a stale lease epoch.

Every take-over of a tenant's lease raises its epoch (the lease key's creation revision in
etcd, which only grows). The tenant's database holds one *fence row* per tenant: the epoch
that may write. A shard taking the tenant over raises it (:meth:`DbFence.take`, first in the
transaction that opens its run); a shard writes only in transactions whose first statement
updates that row *where the epoch is still its own* (:meth:`DbFence.check`). The row lock
orders the two: once the take-over has committed, an older shard's transaction matches no row
and rolls back (``Fenced``), whatever its clock or its view of etcd says. Each take-over is
also logged (``cluster_epochs``) with the journal's high-water mark at that moment, so a test
or an auditor can check that no row of an older epoch was written after it.

These two tables live outside the Alembic migrations on purpose: only shards use them, and
they are created on the first take-over.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from baton.service.store.journal import Fenced
from baton.service.store.tables import journal

__all__ = ["DbFence", "epochs", "fences", "metadata"]

metadata = sa.MetaData()

fences = sa.Table(
    "cluster_fence",
    metadata,
    sa.Column("tenant", sa.String(64), primary_key=True),
    sa.Column("epoch", sa.BigInteger, nullable=False),
    sa.Column("shard", sa.String(64), nullable=False),
    sa.Column("taken_at", sa.Float, nullable=False),
    sa.Column("written_at", sa.Float),
)

epochs = sa.Table(
    "cluster_epochs",
    metadata,
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Column("epoch", sa.BigInteger, nullable=False),
    sa.Column("shard", sa.String(64), nullable=False),
    sa.Column("taken_at", sa.Float, nullable=False),
    # The journal's highest row id when this epoch took over: every later row is this epoch's.
    sa.Column("journal_mark", sa.BigInteger, nullable=False),
    sa.Column("run_id", sa.BigInteger),
    # The older epoch's last write, as the fence row had it when this epoch took over: it must
    # be earlier than ``taken_at`` (the older holder had stopped writing).
    sa.Column("previous_written_at", sa.Float),
    sa.PrimaryKeyConstraint("tenant", "epoch"),
)


class DbFence:
    """The fence of one tenant's journal for one lease epoch held by ``shard``. ``valid`` says
    whether the lease is still held by this process's own reckoning (checked before the store
    is even asked)."""

    reason = "failover"

    def __init__(
        self,
        tenant: str,
        shard: str,
        epoch: int,
        *,
        valid: Callable[[], bool] = lambda: True,
        wallclock: Callable[[], float] = time.time,
    ) -> None:
        self.tenant = tenant
        self.shard = shard
        self.epoch = epoch
        self.valid = valid
        self.wallclock = wallclock

    async def take(self, conn: AsyncConnection) -> None:
        """Raise the fence to this epoch. Raises :class:`Fenced` if a newer one holds it."""
        if not self.valid():
            raise Fenced(f"tenant {self.tenant}: lease lost before the take-over")
        await conn.run_sync(metadata.create_all)
        row = (
            await conn.execute(
                sa.select(fences.c.epoch, fences.c.written_at)
                .where(fences.c.tenant == self.tenant)
                .with_for_update()
            )
        ).first()
        current, previous_write = (None, None) if row is None else row
        now = self.wallclock()
        if current is not None and int(current) > self.epoch:
            raise Fenced(f"tenant {self.tenant}: epoch {current} is newer than {self.epoch}")
        values = {"epoch": self.epoch, "shard": self.shard, "taken_at": now}
        if current is None:
            await conn.execute(sa.insert(fences).values(tenant=self.tenant, **values))
        else:
            await conn.execute(
                sa.update(fences).where(fences.c.tenant == self.tenant).values(**values)
            )
        mark = await conn.scalar(sa.select(sa.func.coalesce(sa.func.max(journal.c.id), 0)))
        exists = await conn.scalar(
            sa.select(sa.func.count())
            .select_from(epochs)
            .where(epochs.c.tenant == self.tenant, epochs.c.epoch == self.epoch)
        )
        if not exists:
            await conn.execute(
                sa.insert(epochs).values(
                    tenant=self.tenant,
                    epoch=self.epoch,
                    shard=self.shard,
                    taken_at=now,
                    journal_mark=int(mark or 0),
                    previous_written_at=previous_write,
                )
            )

    async def check(self, conn: AsyncConnection) -> None:
        """First in every journal transaction: raise :class:`Fenced` if this epoch is stale."""
        if not self.valid():
            raise Fenced(f"tenant {self.tenant}: lease of epoch {self.epoch} lost")
        result = await conn.execute(
            sa.update(fences)
            .where(fences.c.tenant == self.tenant, fences.c.epoch == self.epoch)
            .values(written_at=self.wallclock())
        )
        if not result.rowcount:
            raise Fenced(f"tenant {self.tenant}: a newer epoch than {self.epoch} holds it")

    async def note_run(self, conn: AsyncConnection, run_id: int) -> None:
        """Record which run this epoch opened (for the audit of take-overs)."""
        await conn.execute(
            sa.update(epochs)
            .where(epochs.c.tenant == self.tenant, epochs.c.epoch == self.epoch)
            .values(run_id=run_id)
        )
