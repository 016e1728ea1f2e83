"""Voice logging over HTTP: the export of a call's recordings, and the fault alarms."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from baton.service.deps import Authed, Svc, client_address
from baton.service.errors import ApiError, Forbidden, NotFound
from baton.service.positions.service import iso
from baton.service.store import records
from baton.service.store.tables import leg_records, recordings
from baton.service.voicelog.files import write_archive

router = APIRouter(prefix="/api", tags=["recordings"])

#: Recordings one export may hold.
MAX_EXPORT = 500


class ExportBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    record: int | None = Field(
        default=None, ge=1, lt=2**63, description="a flow record (a call in the history)"
    )
    recordings: list[int] | None = Field(
        default=None, max_length=MAX_EXPORT, description="recording ids"
    )

    @model_validator(mode="after")
    def _one(self) -> ExportBody:
        if (self.record is None) == (self.recordings is None):
            raise ValueError("give either record or recordings")
        return self


def _keeps(svc: Any, user_id: str) -> bool:
    """Is ``user_id``'s line always on (``keep``)? An unknown user (removed since) is not."""
    user = svc.config.user(user_id)
    return user is not None and bool(user.keep)


def _when(v: float | None) -> str | None:
    return None if v is None else iso(v)


async def _select(svc: Any, body: ExportBody) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    t = recordings
    async with svc.store.read() as conn:
        if body.recordings is not None:
            ids = [i for i in body.recordings if 0 < i < 2**63]
            q = sa.select(t).where(t.c.id.in_(ids)).order_by(t.c.started_at, t.c.id)
            rows = [dict(r._mapping) for r in await conn.execute(q)]
            missing = sorted(set(body.recordings) - {r["id"] for r in rows})
            if missing:
                raise NotFound(
                    f"no recording {missing[0]}",
                    id="unknown-recording",
                    details={"recordings": missing},
                )
            return None, rows
        assert body.record is not None
        flow = await records.flow_detail(conn, body.record)
        if flow is None:
            raise NotFound(
                f"no flow record {body.record}",
                id="unknown-record",
                details={"record": body.record},
            )
        # The call's recordings: its users', in its run, from its start until the last of its
        # legs ended — or now, while one is still up (a flow may end at a settle while the
        # call goes on). A position's always-on line (``keep``) never ends, so it does not
        # stretch the window.
        users = list(flow["users"] or [])
        now = svc.wallclock()
        end = flow["ended_at"] if flow["ended_at"] is not None else now
        lg = leg_records
        legs = await conn.execute(
            sa.select(lg.c.user_id, lg.c.ended_at).where(
                lg.c.run_id == flow["run_id"],
                lg.c.user_id.in_(users),
                lg.c.started_at <= end,
                sa.or_(lg.c.ended_at.is_(None), lg.c.ended_at >= flow["started_at"]),
            )
        )
        ends = [now if e is None and not _keeps(svc, u) else e for u, e in legs]
        end = max([end, *(e for e in ends if e is not None)])
        q = (
            sa.select(t)
            .where(
                t.c.run_id == flow["run_id"],
                t.c.user_id.in_(users),
                t.c.started_at <= end,
                sa.or_(t.c.ended_at.is_(None), t.c.ended_at >= flow["started_at"]),
            )
            .order_by(t.c.started_at, t.c.id)
            .limit(MAX_EXPORT)
        )
        return flow, [dict(r._mapping) for r in await conn.execute(q)]


@router.post(
    "/recordings/export",
    response_class=Response,
    responses={200: {"content": {"application/zip": {}}}},
)
async def export(body: ExportBody, request: Request, principal: Authed, svc: Svc) -> Response:
    """A zip of the recordings — of one call (``record``: a flow record id from the history)
    or by id (``recordings``) — with ``manifest.json``: each recording's metadata, SHA-256 and
    the result of checking the file against it (``integrity``: ``ok``, ``mismatch``,
    ``recording-missing``, ``recording-expired``). A file that fails the check is left out
    (and raises an alarm); ``X-Baton-Integrity-Failures`` counts them. Needs ``export``;
    every recorded user must be in the caller's scope. Audited (``recording.export``)."""
    principal.require("export", "export recordings")
    flow, rows = await _select(svc, body)
    users = sorted({r["user_id"] for r in rows if r["user_id"]})
    if principal.scope is not None:
        outside = [u for u in users if u not in principal.scope]
        if outside:
            raise Forbidden(
                f"you may not export recordings of {', '.join(outside)}",
                id="user-not-in-scope",
                details={"users": outside},
            )
    entries: list[dict[str, Any]] = []
    files: list[tuple[str, Path]] = []
    failures = 0
    for r in rows:
        entry: dict[str, Any] = {
            "id": r["id"],
            "user": r["user_id"],
            "kind": r["kind"] or "flow",
            "started_at": _when(r["started_at"]),
            "ended_at": _when(r["ended_at"]),
            "seconds": r["seconds"],
            "sha256": r["sha256"],
            "size_bytes": r["size_bytes"],
            "status": r["status"],
        }
        for key, col in (
            ("talker", "talker"),
            ("group", "ptt_group"),
            ("leg", "leg"),
            ("reasons", "reasons"),
            ("meeting", "meeting"),
            ("by", "by"),
            ("error", "error"),
        ):
            if r[col]:
                entry[key] = r[col]
        try:
            path = await svc.voicelog.verified(r)
        except ApiError as exc:
            entry["integrity"] = "mismatch" if exc.id == "recording-tampered" else exc.id
            failures += exc.id != "recording-expired"
        else:
            entry["integrity"] = "ok" if r["sha256"] else "unchecked"
            entry["file"] = f"recordings/{r['id']}-{path.name}"
            files.append((entry["file"], path))
        entries.append({k: v for k, v in entry.items() if v is not None})
    manifest: dict[str, Any] = {
        "exported_at": iso(svc.wallclock()),
        "exported_by": principal.user_id,
        "recordings": entries,
    }
    if flow is not None:
        manifest["record"] = {
            "id": flow["id"],
            "flow": flow["flow"],
            "name": flow["name"],
            "users": flow["users"],
            "started_at": _when(flow["started_at"]),
            "ended_at": _when(flow["ended_at"]),
            "outcome": flow["outcome"],
        }
    data = await asyncio.to_thread(write_archive, manifest, files)
    ids = [r["id"] for r in rows]
    svc.audit(
        principal,
        "recording.export",
        None if flow is None else f"record {flow['id']}",
        "ok",
        {"recordings": ids, "integrity_failures": failures},
        remote=client_address(request),
    )
    await svc.journal.sync()
    name = f"baton-record-{flow['id']}" if flow is not None else "baton-recordings"
    return Response(
        data,
        media_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="{name}.zip"',
            "X-Baton-Integrity-Failures": str(failures),
        },
    )


@router.get("/alarms")
async def list_alarms(principal: Authed, svc: Svc) -> list[dict[str, Any]]:
    """Fault alarms of the centre (a recording that failed), newest first: ``alarm``,
    ``what``, ``text``, ``raised_at``, ``user``, ``details`` and, once acknowledged,
    ``acknowledged_by`` and ``acknowledged_at``. Needs ``audit`` (supervisors)."""
    principal.require("audit", "see the centre's fault alarms")
    return svc.alarms.faults()


@router.post("/alarms/{alarm}/ack")
async def acknowledge_alarm(alarm: str, principal: Authed, svc: Svc) -> dict[str, Any]:
    """Acknowledge a fault alarm (``audit``: supervisors). Audited. 409
    ``already-acknowledged`` names who was first."""
    principal.require("audit", "acknowledge the centre's fault alarms")
    out = svc.alarms.acknowledge_fault(alarm, principal.user_id, principal.role)
    await svc.journal.sync()
    return out
