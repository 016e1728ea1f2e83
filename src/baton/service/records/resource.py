"""Call records, the recordings index and the audit log (read side of the store)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse

from baton.core.priority import priority_name
from baton.service.deps import Authed, Svc, client_address
from baton.service.errors import NotFound
from baton.service.flows.trace import build_trace
from baton.service.records.present import parse_time, present, typed_args
from baton.service.runtime import Service
from baton.service.store import records

router = APIRouter(prefix="/api", tags=["records"])

Limit = Annotated[int, Query(ge=1, le=1000)]
Offset = Annotated[int, Query(ge=0, le=10_000_000)]
Time = Annotated[
    str | None,
    Query(
        description="ISO 8601 with a zone (2026-12-06T08:00:00+00:00) or seconds since the epoch"
    ),
]


@router.get("/records/legs")
async def legs(
    principal: Authed,
    svc: Svc,
    user: str | None = None,
    since: Time = None,
    until: Time = None,
    cause: str | None = None,
    direction: Literal["inbound", "outbound"] | None = None,
    open: bool | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> list[dict[str, Any]]:
    """Call records per leg, newest first: start, answer, end, cause (``end_reason`` is the cause,
    or ``shutdown`` / ``crash`` / ``restart`` for a leg the service closed)."""
    f = records.LegFilter(
        user,
        parse_time(since, "since"),
        parse_time(until, "until"),
        cause,
        direction,
        open,
        limit,
        offset,
    )
    async with svc.store.read() as conn:
        return list(present(await records.list_legs(conn, f)))


@router.get("/records/flows")
async def flows(
    principal: Authed,
    svc: Svc,
    name: str | None = None,
    user: str | None = None,
    outcome: str | None = None,
    started_by: str | None = None,
    since: Time = None,
    until: Time = None,
    preempted: bool | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> list[dict[str, Any]]:
    """Call records per flow, newest first: name, priority, arguments, who started it, outcome,
    error. ``preempted=true``: only flows that lost a user to a preemption."""
    async with svc.store.read() as conn:
        rows = await records.list_flows(
            conn,
            name=name,
            user=user,
            outcome=outcome,
            started_by=started_by,
            since=parse_time(since, "since"),
            until=parse_time(until, "until"),
            preempted=preempted,
            limit=limit,
            offset=offset,
        )
    return [_flow_record(svc, r) for r in rows]


@router.get("/records/flows/{record_id}")
async def flow(record_id: int, principal: Authed, svc: Svc) -> dict[str, Any]:
    """A flow record with the preemptions it suffered (victim, preempting flow, priority, reason)
    and those it made."""
    _storable(record_id, "unknown-record", f"no flow record {record_id}")
    async with svc.store.read() as conn:
        row = await records.flow_detail(conn, record_id)
    if row is None:
        raise NotFound(
            f"no flow record {record_id}", id="unknown-record", details={"record": record_id}
        )
    return _flow_record(svc, row)


def _flow_record(svc: Service, row: dict[str, Any]) -> dict[str, Any]:
    """A flow record for the API: times ISO 8601, unset values left out, arguments typed."""
    spec = svc.library.get(str(row.get("name")))
    out: dict[str, Any] = present({**row, "args": typed_args(spec, row.get("args"))})
    if isinstance(row.get("priority"), int):
        out["priority_name"] = priority_name(row["priority"])
    return out


@router.get("/records/flows/{record_id}/trace")
async def flow_trace(record_id: int, principal: Authed, svc: Svc) -> dict[str, Any]:
    """The sequence diagram of a recorded flow, from the journal."""
    _storable(record_id, "unknown-record", f"no flow record {record_id}")
    async with svc.store.read() as conn:
        row = await records.flow_detail(conn, record_id)
        if row is None:
            raise NotFound(
                f"no flow record {record_id}", id="unknown-record", details={"record": record_id}
            )
        rows = await records.flow_events(conn, int(row["run_id"]), str(row["flow"]))
    for d in rows:  # a flow.started journalled before arguments were typed reads like a new one
        if d.get("kind") == "flow.started" and isinstance(d.get("args"), dict):
            d["args"] = typed_args(svc.library.get(str(d.get("name"))), d["args"])
    return build_trace(str(row["flow"]), rows)


@router.get("/recordings")
async def recordings(
    principal: Authed,
    svc: Svc,
    user: str | None = None,
    since: Time = None,
    until: Time = None,
    kind: Annotated[
        Literal["call", "ptt"] | None, Query(description="call (a leg) or ptt (a talk burst)")
    ] = None,
    group: Annotated[str | None, Query(description="a PTT group's talk bursts")] = None,
    status: Annotated[
        Literal["recording", "ok", "failed", "expired"] | None, Query(description="its status")
    ] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> list[dict[str, Any]]:
    """The recordings index, newest first (needs ``recordings``): voice-log recordings carry
    ``kind``, ``talker``, ``ptt_group``, ``reasons``, ``status``, ``sha256``, ``seconds``."""
    principal.require("recordings", "list recordings")
    async with svc.store.read() as conn:
        rows = await records.list_recordings(
            conn,
            user=user,
            since=parse_time(since, "since"),
            until=parse_time(until, "until"),
            kind=kind,
            group=group,
            status=status,
            limit=limit,
            offset=offset,
        )
    folder = svc.config.recordings.resolve()
    for r in rows:
        r["available"] = _inside(Path(r["path"]), folder) is not None
    return list(present(rows))


def _storable(record_id: int, ident: str, message: str) -> None:
    """An id no row can have (beyond the database's 64-bit integers) is simply not found —
    not a driver overflow answered as a 500."""
    if not 0 < record_id < 2**63:
        raise NotFound(message, id=ident, details={"record": str(record_id)})


def _inside(path: Path, folder: Path) -> Path | None:
    """The file, if it exists inside the recordings folder (no download from anywhere else)."""
    try:
        resolved = path.resolve()
    except OSError:
        return None
    if not resolved.is_relative_to(folder) or not resolved.is_file():
        return None
    return resolved


@router.get("/recordings/{record_id}/download", response_class=FileResponse)
async def download(record_id: int, request: Request, principal: Authed, svc: Svc) -> FileResponse:
    """The recording's WAV file (needs ``recordings``; audited). 404 if the file is gone, lies
    outside the recordings folder (``recording-missing``) or was removed by the retention
    policy (``recording-expired``); 409 ``recording-tampered`` if it no longer matches the
    checksum stored with it."""
    principal.require("recordings", "download recordings")
    _storable(record_id, "unknown-recording", f"no recording {record_id}")
    async with svc.store.read() as conn:
        row = await records.recording(conn, record_id)
    if row is None:
        raise NotFound(
            f"no recording {record_id}", id="unknown-recording", details={"recording": record_id}
        )
    # Checked against the checksum stored with it: a changed file is refused, with an alarm.
    path = await svc.voicelog.verified(row)
    svc.audit(
        principal,
        "recording.download",
        str(record_id),
        "ok",
        {"path": row["path"]},
        remote=client_address(request),
    )
    await svc.journal.sync()
    return FileResponse(path, media_type="audio/wav", filename=path.name)


@router.get("/audit")
async def audit(
    principal: Authed,
    svc: Svc,
    user: str | None = None,
    action: str | None = None,
    outcome: Literal["ok", "denied", "failed"] | None = None,
    since: Time = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> list[dict[str, Any]]:
    """The audit log, newest first (needs ``audit``)."""
    principal.require("audit", "read the audit log")
    async with svc.store.read() as conn:
        rows = await records.list_audit(
            conn,
            principal=user,
            action=action,
            outcome=outcome,
            since=parse_time(since, "since"),
            limit=limit,
            offset=offset,
        )
    return list(present(rows))
