"""No Python in the records: flow arguments as JSON values of their type, times ISO 8601 with the
zone, unset values left out — for new records, and for rows written before (docs/service.md,
The store)."""

from __future__ import annotations

import enum
from pathlib import Path

import pytest
import sqlalchemy as sa

from baton.core import Priority, Session, User, flow
from baton.service.records.present import present, typed_args
from baton.service.store.tables import flow_records, journal

from .helpers import api, assert_error, eventually

pytestmark = pytest.mark.realtime


class Mode(enum.Enum):
    LOUD = "loud"
    QUIET = "quiet"


@flow()
async def sample(
    s: Session,
    who: User,
    members: list[User],
    urgent: bool = False,
    mode: Mode = Mode.LOUD,
    ring: float = 30.0,
    tries: int = 2,
    level: Priority = Priority.ROUTINE,
    note: str | None = None,
    number: str = "1001",
) -> None:
    """A flow with one parameter of each kind."""


def test_old_rows_are_read_by_the_flows_own_types() -> None:
    old = {
        "who": "unit1",
        "members": "unit1,unit2",
        "urgent": "True",
        "mode": "Mode.QUIET",
        "ring": "12.5",
        "tries": "3",
        "level": "Priority.FLASH",
        "note": "None",
        "number": "1001",  # a str parameter stays a string, digits or not
    }
    typed = {
        "who": "unit1",
        "members": ["unit1", "unit2"],
        "urgent": True,
        "mode": "quiet",
        "ring": 12.5,
        "tries": 3,
        "level": "FLASH",
        "number": "1001",
    }
    assert typed_args(sample, old) == typed
    assert typed_args(sample, typed) == typed  # new rows pass unchanged
    # A flow no longer installed: its strings stay, an unset one is still left out.
    assert typed_args(None, old) == {k: v for k, v in old.items() if k != "note"}


def test_present_makes_times_iso_and_leaves_unset_values_out() -> None:
    row = {"id": 1, "started_at": 0.25, "ended_at": None, "nested": [{"at": 86400}]}
    assert present(row) == {
        "id": 1,
        "started_at": "1970-01-01T00:00:00.250+00:00",
        "nested": [{"at": "1970-01-02T00:00:00.000+00:00"}],
    }


async def test_flow_records_in_the_api_have_no_python(tmp_path: Path) -> None:
    async with api(tmp_path, "disp1", "sup1") as (svc, a), a.client("disp1") as c:
        r = await c.post(
            "/api/flows",
            json={
                "flow": "conference",
                "args": {"dispatcher": "disp1", "members": ["unit1", "unit2"], "ring": 20},
            },
        )
        assert r.status_code == 201, r.text
        (live,) = (await c.get("/api/flows")).json()
        assert live["args"] == {
            "dispatcher": "disp1",
            "members": ["unit1", "unit2"],
            "on_leave": "end",
            "ring": 20.0,
        }
        assert live["started_at"].endswith("+00:00")
        await svc.journal.sync()
        (rec,) = (await c.get("/api/records/flows", params={"name": "conference"})).json()
        assert rec["args"] == live["args"] and rec["priority_name"] == "PRIORITY"
        assert rec["started_at"].endswith("+00:00") and "ended_at" not in rec  # still open
        assert (await c.post(f"/api/flows/{live['name'].replace('#', '%23')}/cancel")).is_success
        await eventually(lambda: not svc.manager.flows)
        await svc.journal.sync()
        detail = (await c.get(f"/api/records/flows/{rec['id']}")).json()
        assert detail["ended_at"] > detail["started_at"]  # ISO strings of one zone sort by time
        legs = (await c.get("/api/records/legs", params={"since": rec["started_at"]})).json()
        assert legs and all(leg["started_at"].endswith("+00:00") for leg in legs)
        bad = await c.get("/api/records/legs", params={"since": "yesterday"})
        assert_error(bad, 422, "invalid-argument", field="since")
        # A row written before arguments were typed reads like a new one.
        async with svc.store.engine.begin() as conn:
            await conn.execute(
                sa.insert(flow_records).values(
                    run_id=svc.run_id,
                    flow="conference#99",
                    name="conference",
                    priority=int(Priority.PRIORITY),
                    args={
                        "dispatcher": "disp1",
                        "members": "unit1,unit2",
                        "on_leave": "OnLeave.CONTINUE",
                        "ring": "30.0",
                    },
                    users=["disp1"],
                    started_at=1.0,
                )
            )
        (old,) = (
            await c.get("/api/records/flows", params={"until": "1970-01-02T00:00:00Z"})
        ).json()
        assert old["args"] == {
            "dispatcher": "disp1",
            "members": ["unit1", "unit2"],
            "on_leave": "continue",
            "ring": 30.0,
        }
        assert old["started_at"] == "1970-01-01T00:00:01.000+00:00"
        # …and so does its trace, from a journal row of those days.
        started = {
            "kind": "flow.started",
            "seq": 10**6,
            "t": 0.0,
            "flow": "conference#99",
            "name": "conference",
            "priority": int(Priority.PRIORITY),
            "args": {"dispatcher": "disp1", "on_leave": "OnLeave.CONTINUE", "ring": "30.0"},
        }
        async with svc.store.engine.begin() as conn:
            await conn.execute(
                sa.insert(journal).values(
                    run_id=svc.run_id,
                    seq=10**6,
                    t=0.0,
                    at=1.0,
                    kind="flow.started",
                    flow="conference#99",
                    data=started,
                )
            )
        trace = (await c.get(f"/api/records/flows/{old['id']}/trace")).json()
        assert "on_leave=continue ring=30.0" in trace["steps"][0]["text"], trace["steps"][0]
    async with api(tmp_path, "sup1") as (_, a2), a2.client("sup1") as c2:
        entries = (await c2.get("/api/audit", params={"action": "flow.start"})).json()
        assert entries and all(e["at"].endswith("+00:00") for e in entries)
