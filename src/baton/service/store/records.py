"""Runs, crash recovery and the read side of the records (the queries behind the API).

Crash recovery (:func:`begin_run`): a run that never recorded its end died with the process. Its
records still open — legs, flows, CallInfos, recordings — are closed with ``end_reason =
"crash"`` at the last moment that run was heard of — its last heartbeat (:func:`heartbeat`,
every few seconds) or its last journalled event, whichever is later: the best estimate of the
crash — and the run is marked ``crashed``. A clean stop (:func:`end_run`) closes what is open
with ``"shutdown"`` at the stop time; ``"restart"`` closes any straggler at the next start.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from baton.service.store.tables import (
    audit,
    callinfo_records,
    flow_records,
    journal,
    leg_records,
    preemptions,
    recordings,
    runs,
)

__all__ = [
    "LegFilter",
    "begin_run",
    "close_open_records",
    "end_run",
    "flow_detail",
    "flow_events",
    "heartbeat",
    "list_audit",
    "list_flows",
    "list_legs",
    "list_recordings",
    "recording",
    "take_stale_dialogs",
]

_CLOSABLE = (leg_records, flow_records, callinfo_records, recordings)


async def close_open_records(
    conn: AsyncConnection, *, reason: str, at: float, run_id: int | None = None
) -> int:
    """Close every open record (of one run, or of all runs); return how many."""
    closed = 0
    for table in _CLOSABLE:
        where: list[sa.ColumnElement[bool]] = [table.c.ended_at.is_(None)]
        if run_id is not None:
            where.append(table.c.run_id == run_id)
        result = await conn.execute(
            sa.update(table).where(*where).values(ended_at=at, end_reason=reason)
        )
        closed += result.rowcount or 0
    return closed


async def begin_run(
    conn: AsyncConnection, *, switch: str, at: float, crash_reason: str = "crash"
) -> tuple[int, int]:
    """Recover crashed runs, then open a new run. Returns (run id, records closed).

    A run never ended was killed. Its open records are closed with ``end_reason = "crash"`` at
    the crash time: the later of its last heartbeat and its last journalled event — not at each
    record's own last event, which may be long before the process died. A standby shard taking
    a tenant over passes ``crash_reason = "failover"`` (docs/cluster.md)."""
    closed = 0
    crashed = (
        await conn.execute(
            sa.select(runs.c.id, runs.c.started_at, runs.c.heartbeat_at).where(
                runs.c.ended_at.is_(None)
            )
        )
    ).all()
    for run_id, started, heartbeat in crashed:
        last = await conn.scalar(
            sa.select(sa.func.max(journal.c.at)).where(journal.c.run_id == run_id)
        )
        when = max(float(x) for x in (started, last, heartbeat) if x is not None)
        closed += await close_open_records(conn, reason=crash_reason, at=when, run_id=run_id)
        await conn.execute(
            sa.update(runs).where(runs.c.id == run_id).values(ended_at=when, end_reason="crashed")
        )
    # Records of runs that ended cleanly are closed already; this catches any stragglers.
    closed += await close_open_records(conn, reason="restart", at=at)
    result = await conn.execute(sa.insert(runs).values(started_at=at, switch=switch))
    pk = result.inserted_primary_key
    assert pk is not None
    return int(pk[0]), closed


async def heartbeat(
    conn: AsyncConnection, run_id: int, *, at: float, dialogs: list[Any] | None
) -> None:
    """The run is alive at ``at``; ``dialogs`` is the switch's calls now (``None``: it keeps
    none)."""
    values: dict[str, Any] = {"heartbeat_at": at}
    if dialogs is not None:
        values["dialogs"] = dialogs
    await conn.execute(sa.update(runs).where(runs.c.id == run_id).values(**values))


async def take_stale_dialogs(conn: AsyncConnection) -> list[Any]:
    """The calls crashed runs left in the switch (as of their last heartbeat), handed out once:
    they are cleared as they are taken."""
    rows = (
        await conn.execute(
            sa.select(runs.c.id, runs.c.dialogs).where(
                runs.c.end_reason == "crashed", runs.c.dialogs.is_not(None)
            )
        )
    ).all()
    out: list[Any] = []
    for run_id, dialogs in rows:
        if isinstance(dialogs, list):
            out += dialogs
        await conn.execute(sa.update(runs).where(runs.c.id == run_id).values(dialogs=sa.null()))
    return out


async def end_run(conn: AsyncConnection, run_id: int, *, at: float) -> None:
    """A clean stop: close what is open with ``shutdown`` and mark the run stopped (its calls
    were ended by the stop: none is left to end)."""
    await close_open_records(conn, reason="shutdown", at=at, run_id=run_id)
    await conn.execute(
        sa.update(runs)
        .where(runs.c.id == run_id)
        .values(ended_at=at, end_reason="stopped", dialogs=sa.null())
    )


# ---------------------------------------------------------------------------- queries


@dataclass(frozen=True, slots=True)
class LegFilter:
    """Filters of the call-record queries (``None``: any)."""

    user: str | None = None
    since: float | None = None
    until: float | None = None
    cause: str | None = None
    direction: str | None = None
    open: bool | None = None
    limit: int = 100
    offset: int = 0


def _rows(result: sa.CursorResult[Any]) -> list[dict[str, Any]]:
    return [dict(r._mapping) for r in result]


async def list_legs(conn: AsyncConnection, f: LegFilter) -> list[dict[str, Any]]:
    t = leg_records
    q = sa.select(t)
    if f.user is not None:
        q = q.where(t.c.user_id == f.user)
    if f.since is not None:
        q = q.where(t.c.started_at >= f.since)
    if f.until is not None:
        q = q.where(t.c.started_at < f.until)
    if f.cause is not None:
        q = q.where(t.c.end_reason == f.cause)
    if f.direction is not None:
        q = q.where(t.c.direction == f.direction)
    if f.open is not None:
        q = q.where(t.c.ended_at.is_(None) if f.open else t.c.ended_at.is_not(None))
    q = q.order_by(t.c.started_at.desc(), t.c.id.desc()).limit(f.limit).offset(f.offset)
    return _rows(await conn.execute(q))


async def list_flows(
    conn: AsyncConnection,
    *,
    name: str | None = None,
    user: str | None = None,
    outcome: str | None = None,
    started_by: str | None = None,
    since: float | None = None,
    until: float | None = None,
    preempted: bool | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[dict[str, Any]]:
    t = flow_records
    q = sa.select(t)
    if name is not None:
        q = q.where(t.c.name == name)
    if outcome is not None:
        q = q.where(t.c.end_reason == outcome)
    if started_by is not None:
        q = q.where(t.c.started_by == started_by)
    if since is not None:
        q = q.where(t.c.started_at >= since)
    if until is not None:
        q = q.where(t.c.started_at < until)
    if preempted is not None:
        suffered = sa.exists().where(
            preemptions.c.run_id == t.c.run_id, preemptions.c.victim == t.c.flow
        )
        q = q.where(suffered if preempted else ~suffered)
    q = q.order_by(t.c.started_at.desc(), t.c.id.desc())
    if user is None:
        rows = _rows(await conn.execute(q.limit(limit).offset(offset)))
    else:
        # A JSON containment test differs per database; filter the (bounded) page in Python.
        rows = [r for r in _rows(await conn.execute(q.limit(5000))) if user in (r["users"] or [])]
        rows = rows[offset : offset + limit]
    return rows


async def flow_detail(conn: AsyncConnection, record_id: int) -> dict[str, Any] | None:
    """A flow record with the preemptions it suffered and those it made."""
    row = (
        await conn.execute(sa.select(flow_records).where(flow_records.c.id == record_id))
    ).first()
    if row is None:
        return None
    out = dict(row._mapping)
    p = preemptions
    same_run = p.c.run_id == out["run_id"]
    out["preemptions_suffered"] = _rows(
        await conn.execute(sa.select(p).where(same_run, p.c.victim == out["flow"]).order_by(p.c.id))
    )
    out["preemptions_made"] = _rows(
        await conn.execute(
            sa.select(p).where(same_run, p.c.claimer == out["flow"]).order_by(p.c.id)
        )
    )
    return out


async def flow_by_name(conn: AsyncConnection, run_id: int, flow: str) -> dict[str, Any] | None:
    """The record of flow ``flow`` (``call#12``) of run ``run_id``, if it has one."""
    t = flow_records
    row = (await conn.execute(sa.select(t).where(t.c.run_id == run_id, t.c.flow == flow))).first()
    return None if row is None else dict(row._mapping)


async def flow_events(
    conn: AsyncConnection, run_id: int, flow: str, *, limit: int = 5000
) -> list[dict[str, Any]]:
    """The journal rows from a flow's start to its end (the trace filters them further)."""
    bounds = (
        await conn.execute(
            sa.select(sa.func.min(journal.c.seq), sa.func.max(journal.c.seq)).where(
                journal.c.run_id == run_id,
                journal.c.flow == flow,
                journal.c.kind.in_(("flow.started", "flow.ended")),
            )
        )
    ).first()
    if bounds is None or bounds[0] is None:
        return []
    first, last = int(bounds[0]), int(bounds[1])
    if first == last:  # still running when the journal last heard of it
        last = first + limit
    q = (
        sa.select(journal.c.data)
        .where(journal.c.run_id == run_id, journal.c.seq >= first, journal.c.seq <= last)
        .order_by(journal.c.seq)
        .limit(limit)
    )
    return [dict(r[0]) for r in await conn.execute(q)]


async def list_recordings(
    conn: AsyncConnection,
    *,
    user: str | None = None,
    since: float | None = None,
    until: float | None = None,
    kind: str | None = None,
    group: str | None = None,
    status: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[dict[str, Any]]:
    t = recordings
    q = sa.select(t)
    if user is not None:
        q = q.where(t.c.user_id == user)
    if kind is not None:
        q = q.where(t.c.kind == kind)
    if group is not None:
        q = q.where(t.c.ptt_group == group)
    if status is not None:
        q = q.where(t.c.status == status)
    if since is not None:
        q = q.where(t.c.started_at >= since)
    if until is not None:
        q = q.where(t.c.started_at < until)
    q = q.order_by(t.c.started_at.desc(), t.c.id.desc()).limit(limit).offset(offset)
    return _rows(await conn.execute(q))


async def recording(conn: AsyncConnection, record_id: int) -> dict[str, Any] | None:
    row = (await conn.execute(sa.select(recordings).where(recordings.c.id == record_id))).first()
    return None if row is None else dict(row._mapping)


async def list_audit(
    conn: AsyncConnection,
    *,
    principal: str | None = None,
    action: str | None = None,
    outcome: str | None = None,
    since: float | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[dict[str, Any]]:
    t = audit
    q = sa.select(t)
    if principal is not None:
        q = q.where(t.c.principal == principal)
    if action is not None:
        q = q.where(t.c.action == action)
    if outcome is not None:
        q = q.where(t.c.outcome == outcome)
    if since is not None:
        q = q.where(t.c.at >= since)
    q = q.order_by(t.c.id.desc()).limit(limit).offset(offset)
    return _rows(await conn.execute(q))
