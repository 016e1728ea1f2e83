"""The journal: the one writer of the store, fed by the core's event bus.

Theory of operation
-------------------
The bus calls :meth:`Journal._on_event` synchronously at publish time; it appends the event and
its wall-clock time to an in-memory queue and returns — the core is never slowed by the disk. A
writer task drains the queue **in order**, in batches: each batch is one transaction holding the
journal rows, the call-record statements the :class:`~baton.service.store.projection.Projector`
derives from them, and any *jobs* queued between those events (an audit entry, a token, a
session). Nothing leaves the queue before its transaction has committed.

*Acknowledgement.* A caller that must not answer before its effects are durable — every API
request that changes something — awaits :meth:`Journal.sync`, which returns once everything
queued before the call has committed. A job's future resolves only after its commit. So whatever
the service acknowledged is on disk, and whatever was lost in a crash was never acknowledged.

*Failures.* If the database is unreachable (an operational error), the batch is retried with
backoff and nothing is dropped; :meth:`sync` times out meanwhile (the API answers 503). If a
batch fails for another reason (a bug in a projection, a constraint a job violates), it is
replayed item by item: each event's journal row is kept and only the failing projection is
skipped (reported as a log line); a failing job's future receives the error.

*Shutdown.* :meth:`close` unsubscribes from the bus and drains the queue before returning.

*Fencing.* A shard of a cluster (docs/cluster.md) sets :attr:`Journal.fence`: a check run first
in every transaction, which raises :class:`Fenced` once another shard has taken the tenant (a
newer lease epoch). The transaction then rolls back, the writer stops for good and every later
write fails: a shard that lost its tenant never writes for it again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from baton.core.events import Event, EventBus
from baton.service.events.codec import event_dict
from baton.service.store.db import TRANSIENT, Store, StoreUnavailable
from baton.service.store.projection import Projector
from baton.service.store.tables import audit, journal

__all__ = ["Fenced", "Journal", "StoreUnavailable"]

log = logging.getLogger("baton.service.journal")

Job = Callable[[AsyncConnection], Awaitable[Any]]


def _fail(fut: asyncio.Future[Any], error: Exception) -> None:
    """Fail a write's future; one nobody awaits (a fire-and-forget audit entry) is not
    reported as an exception never retrieved: the fencing was logged once."""
    fut.set_exception(error)
    fut.exception()


class Fenced(Exception):
    """This process no longer holds the tenant's lease (a newer epoch took it): the write was
    refused and none will be accepted again."""


@dataclass(slots=True)
class _EventItem:
    event: Event
    at: float


@dataclass(slots=True)
class _JobItem:
    fn: Job
    fut: asyncio.Future[Any] | None
    label: str


_Item = _EventItem | _JobItem


class Journal:
    """Ordered, batched, write-ahead persistence of events, records and service writes."""

    def __init__(
        self,
        store: Store,
        run_id: int,
        *,
        batch_size: int = 500,
        wallclock: Callable[[], float] = time.time,
        retry_delay: float = 0.5,
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.batch_size = batch_size
        self.wallclock = wallclock
        self.retry_delay = retry_delay
        #: How long an acknowledgement (:meth:`sync`, :meth:`commit`) waits for the store.
        self.ack_timeout = 10.0
        self.projector = Projector(run_id)
        self._queue: deque[_Item] = deque()
        self._appended = 0  # items ever queued
        self._committed = 0  # items durable
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._closing = False
        #: A check run first in every transaction; raises :class:`Fenced` when this writer's
        #: epoch is stale (docs/cluster.md). ``None``: a single process, nothing to fence.
        self.fence: Job | None = None
        #: Why the writer stopped for good (``None`` while it writes).
        self.fenced: Fenced | None = None
        #: Counters for /metrics.
        self.events_written = 0
        self.batches = 0
        self.failures = 0

    # ---- feeding

    def attach(self, bus: EventBus) -> None:
        """Subscribe to ``bus``: every event from now on is journalled."""
        self._unsubscribe = bus.subscribe(self._on_event)

    def _on_event(self, event: Event) -> None:
        # Runs inside the core's publish: append and return, never block, never raise.
        self._push(_EventItem(event, self.wallclock()))

    def _push(self, item: _Item) -> None:
        if self.fenced is not None:  # the tenant is another shard's now: write nothing
            if isinstance(item, _JobItem) and item.fut is not None and not item.fut.done():
                _fail(item.fut, StoreUnavailable(f"fenced: {self.fenced}"))
            return
        self._queue.append(item)
        self._appended += 1
        if self._wake is not None:
            self._wake.set()

    def submit(self, fn: Job, label: str = "job") -> asyncio.Future[Any]:
        """Queue ``fn(conn)`` to run in order with the events; the future resolves with its
        result once committed (or with its error)."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._push(_JobItem(fn, fut, label))
        return fut

    def execute(self, statement: sa.Executable, label: str = "statement") -> asyncio.Future[Any]:
        """Queue one statement (no result is returned)."""

        async def run(conn: AsyncConnection) -> None:
            await conn.execute(statement)

        return self.submit(run, label)

    async def commit(self, statement: sa.Executable, label: str = "statement") -> None:
        """Queue one statement and return once it is durable; :class:`StoreUnavailable` after
        :attr:`ack_timeout` seconds (the write stays queued and lands when the store is back)."""
        fut = self.execute(statement, label)
        try:
            async with asyncio.timeout(self.ack_timeout):
                await asyncio.shield(fut)
        except TimeoutError:
            raise StoreUnavailable(
                f"the store has not committed in {self.ack_timeout:g} s "
                f"({self.pending} writes pending)"
            ) from None

    def annotate_flow(self, flow: str, started_by: str) -> None:
        """Record who started ``flow`` (call right after ``manager.start``: the flow's
        ``flow.started`` event is then already queued, so the update lands after the insert)."""
        self.execute(self.projector.annotate_flow(flow, started_by), "annotate")

    def audit(
        self,
        *,
        principal: str | None,
        role: str | None,
        action: str,
        target: str | None,
        outcome: str,
        details: dict[str, Any] | None = None,
        remote: str | None = None,
    ) -> asyncio.Future[Any]:
        """Append an entry to the audit log (ordered with the events it caused)."""
        return self.execute(
            sa.insert(audit).values(
                at=self.wallclock(),
                principal=principal,
                role=role,
                action=action,
                target=target,
                outcome=outcome,
                details=details or {},
                remote=remote,
            ),
            "audit",
        )

    # ---- acknowledging

    @property
    def pending(self) -> int:
        """Items queued but not yet durable."""
        return self._appended - self._committed

    async def sync(self, *, within: float | None = None) -> None:
        """Return once everything queued before this call is durable. Raises
        :class:`StoreUnavailable` after ``within`` seconds (default :attr:`ack_timeout`)."""
        if within is None:
            within = self.ack_timeout
        if self.fenced is not None:
            raise StoreUnavailable(f"fenced: {self.fenced}")
        target = self._appended
        if self._committed >= target:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((target, fut))
        try:
            async with asyncio.timeout(within):
                await asyncio.shield(fut)
        except TimeoutError:
            raise StoreUnavailable(
                f"the store has not committed in {within} s ({self.pending} writes pending)"
            ) from None

    def _notify(self) -> None:
        keep = []
        for target, fut in self._waiters:
            if self._committed >= target:
                if not fut.done():
                    fut.set_result(None)
            else:
                keep.append((target, fut))
        self._waiters = keep

    # ---- the writer

    def start(self) -> None:
        """Start the writer task (the service owns it and stops it with :meth:`close`)."""
        if self._task is None:
            self._wake = asyncio.Event()
            if self._queue:
                self._wake.set()
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="baton-journal-writer"
            )

    async def close(self, *, within: float = 30.0) -> None:
        """Stop listening, write everything queued, stop the writer."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self._closing = True
        task = self._task
        if task is None:
            return
        assert self._wake is not None
        self._wake.set()
        try:
            async with asyncio.timeout(within):
                await asyncio.shield(task)
        except TimeoutError:
            log.error(
                "journal: %d writes could not be flushed in %s s and are lost",
                self.pending,
                within,
            )
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        for item in self._queue:
            if isinstance(item, _JobItem) and item.fut is not None and not item.fut.done():
                item.fut.set_exception(StoreUnavailable("the journal closed before writing"))

    async def _run(self) -> None:
        assert self._wake is not None
        delay = self.retry_delay
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            n = min(len(self._queue), self.batch_size)
            batch = [self._queue[i] for i in range(n)]
            try:
                try:
                    results = await self._write(batch)
                except Fenced as exc:
                    self.refuse(exc)
                    return
                except TRANSIENT:
                    raise
                except Exception:
                    self.failures += 1
                    log.exception("journal: batch failed; writing its items one by one")
                    try:
                        await self._write_singly(batch)
                    except Fenced as exc:
                        self.refuse(exc)
                        return
                else:
                    self._done(batch, results)
            except TRANSIENT as exc:
                self.failures += 1
                log.warning("journal: store unavailable (%s); retrying in %.1f s", exc, delay)
                if self._closing and delay > 5:
                    return  # give up on shutdown: close() reports what is lost
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            delay = self.retry_delay

    def refuse(self, why: Fenced) -> None:
        """Stop writing for good (the tenant's lease is lost): fail every queued write and
        every write queued from now on."""
        if self.fenced is None:
            self.fenced = why
            log.error("journal: fenced (%s); nothing more is written", why)
        self._closing = True
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for item in self._queue:
            if isinstance(item, _JobItem) and item.fut is not None and not item.fut.done():
                _fail(item.fut, StoreUnavailable(f"fenced: {why}"))
        self._queue.clear()
        for _, fut in self._waiters:
            if not fut.done():
                _fail(fut, StoreUnavailable(f"fenced: {why}"))
        self._waiters = []
        if self._wake is not None:
            self._wake.set()

    def _done(self, items: list[_Item], results: list[tuple[bool, Any]]) -> None:
        """``items`` (the head of the queue) are durable: drop them, resolve their futures."""
        for item, (ok, value) in zip(items, results, strict=True):
            self._queue.popleft()
            if isinstance(item, _JobItem) and item.fut is not None and not item.fut.done():
                if ok:
                    item.fut.set_result(value)
                else:
                    item.fut.set_exception(value)
        self._committed += len(items)
        self.batches += 1
        self._notify()

    def _row(self, item: _EventItem) -> dict[str, Any]:
        ev = item.event
        flow = getattr(ev, "flow", None)
        return {
            "run_id": self.run_id,
            "seq": ev.seq,
            "t": ev.t,
            "at": item.at,
            "kind": ev.kind,
            "flow": flow if isinstance(flow, str) else None,
            "data": event_dict(ev),
        }

    async def _write(self, batch: list[_Item]) -> list[tuple[bool, Any]]:
        """Write a batch in one transaction; return each item's (ok, result or error)."""
        snapshot = self.projector.snapshot()
        results: list[tuple[bool, Any]] = []
        try:
            async with self.store.engine.begin() as conn:
                if self.fence is not None:
                    await self.fence(conn)
                rows = [self._row(i) for i in batch if isinstance(i, _EventItem)]
                if rows:
                    await conn.execute(sa.insert(journal), rows)
                for item in batch:
                    if isinstance(item, _EventItem):
                        for stmt in self.projector.apply(item.event, item.at):
                            await conn.execute(stmt)
                        results.append((True, None))
                    else:
                        results.append(await self._job(conn, item))
        except BaseException:
            self.projector.restore(snapshot)
            raise
        self.events_written += sum(1 for i in batch if isinstance(i, _EventItem))
        return results

    async def _job(self, conn: AsyncConnection, item: _JobItem) -> tuple[bool, Any]:
        # A savepoint, so a job that violates a constraint fails alone, not the batch.
        try:
            async with conn.begin_nested():
                return True, await item.fn(conn)
        except TRANSIENT:
            raise
        except Exception as exc:
            return False, exc

    async def _write_singly(self, batch: list[_Item]) -> None:
        """Write each item in its own transaction, committing as it goes (a transient error
        leaves the rest queued for the retry)."""
        for item in batch:
            before = self.projector.snapshot()
            try:
                async with self.store.engine.begin() as conn:
                    if self.fence is not None:
                        await self.fence(conn)
                    result = await self._write_one(conn, item)
            except BaseException:
                self.projector.restore(before)
                raise
            if isinstance(item, _EventItem):
                self.events_written += 1
            self._done([item], [result])

    async def _write_one(self, conn: AsyncConnection, item: _Item) -> tuple[bool, Any]:
        if isinstance(item, _JobItem):
            return await self._job(conn, item)
        try:
            async with conn.begin_nested():
                await conn.execute(sa.insert(journal), [self._row(item)])
        except TRANSIENT:
            raise
        except Exception:
            # An event the database refuses can never be written: report it and go on, rather
            # than stop journalling everything after it.
            log.exception("journal: event %s #%d cannot be stored", item.event.kind, item.event.seq)
            return True, None
        snapshot = self.projector.snapshot()
        try:
            async with conn.begin_nested():
                for stmt in self.projector.apply(item.event, item.at):
                    await conn.execute(stmt)
        except TRANSIENT:
            raise
        except Exception:
            self.projector.restore(snapshot)
            log.exception("journal: no record for event %s #%d", item.event.kind, item.event.seq)
        return True, None
