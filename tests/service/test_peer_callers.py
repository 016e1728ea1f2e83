"""A call from another tenant arrives on an anonymous peer line (docs/cluster.md, "Calls between
tenants"), but the dispatcher sees who calls: the caller's number, id and tenant from the
INVITE are on the line's leg record, in the journal (``leg.caller``), in the line's view in the
users API — for as long as that call lasts — and in the console's event text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from baton.service.callers import caller_from
from baton.service.runtime import Service
from baton.service.store.tables import callinfo_records, flow_records, journal
from baton.switch.sim import SimSwitch, answers

from .helpers import FAST_HASHER, Api, eventually, make_config

pytestmark = pytest.mark.realtime  # the store and the API run on threads and sockets

FROM_A = '"a-unit1" <sip:3101@10.0.0.7;user=phone>;tag=9f2'


class PeeringSim(SimSwitch):
    """The simulated switch with two peer lines, as a SIP switch with ``[sip.peers]`` has."""

    peer_lines = ("peer-1", "peer-2")
    peer_numbers = ("3",)

    def dial_peer(self, line: str, number: str) -> None:
        raise AssertionError("no call goes out to another tenant here")


def state(svc: Service, user: str) -> str:
    return svc.manager.state_of(svc.manager.user(user))


def test_the_caller_is_read_from_the_invites_headers() -> None:
    caller = caller_from({"From": FROM_A, "X-Baton-Tenant": "a"})
    assert caller is not None and caller.view() == {
        "number": "3101",
        "name": "a-unit1",
        "tenant": "a",
    }
    bare = caller_from({"From": "<sip:3101@10.0.0.7>;tag=1"})
    assert bare is not None and (bare.number, bare.name, bare.tenant) == ("3101", None, None)
    long = caller_from({"From": f'"{"x" * 80}" <sip:{"9" * 80}@10.0.0.7>;tag=1'})
    assert long is not None and long.name == "x" * 64 and long.number == "9" * 64  # fits
    assert caller_from({}) is None
    assert caller_from({"From": "<sip:3101@10.0.0.7"}) is None  # unparsable: nothing presented


async def test_a_peer_lines_caller_is_recorded_journalled_and_shown(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    sim = PeeringSim(default=answers(0.05))
    for u in config.users:
        sim.add_phone(u.id)
    for line in PeeringSim.peer_lines:
        sim.add_phone(line)
    svc = Service(config, switch=sim, hasher=FAST_HASHER, grace=1.0)
    await svc.start()
    try:
        a = Api(svc)
        await a.login("disp1")
        async with a.client("disp1") as c:
            headers = {"From": FROM_A, "X-Baton-Tenant": "a"}
            leg = sim.call_in("peer-1", "1001", headers=headers)
            await eventually(lambda: state(svc, "unit1") == "talking", what="unit1 answers")
            line = (await c.get("/api/users/peer-1")).json()
            assert line["leg"]["id"] == leg
            assert line["caller"] == {"number": "3101", "name": "a-unit1", "tenant": "a"}
            events = (await c.get("/api/events")).json()
            (shown,) = [e for e in events if e["kind"] == "leg.caller"]
            assert (shown["user"], shown["leg"], shown["number"]) == ("peer-1", leg, "3101")

            async def record() -> dict[str, Any] | None:
                legs = (await c.get("/api/records/legs", params={"user": "peer-1"})).json()
                return legs[0] if legs and legs[0].get("caller_number") else None

            rec = await eventually(record, what="the leg record names the caller")
            assert (rec["leg"], rec["caller_number"], rec["caller_name"], rec["caller_tenant"]) == (
                leg,
                "3101",
                "a-unit1",
                "a",
            )
            # The call ends: the line is anonymous again, and its next call (no From to
            # read) presents nobody rather than the last caller.
            sim.hang_up("peer-1")
            await eventually(lambda: state(svc, "peer-1") == "idle", what="the call ends")
            assert (await c.get("/api/users/peer-1")).json()["caller"] is None
            sim.call_in("peer-1", "1002")
            await eventually(lambda: state(svc, "unit2") == "talking", what="unit2 answers")
            assert (await c.get("/api/users/peer-1")).json()["caller"] is None
            # An ordinary user's call presents no caller: the user is who calls.
            assert (await c.get("/api/users/unit2")).json()["caller"] is None
        async with svc.store.read() as conn:
            kinds = (await conn.execute(sa.select(journal.c.kind, journal.c.data))).all()
        (presented,) = [d for k, d in kinds if k == "leg.caller"]
        assert presented["tenant"] == "a"
    finally:
        await svc.stop()


async def test_flow_and_call_records_name_the_caller_on_a_peer_line(tmp_path: Path) -> None:
    """The history a supervisor reads — flow records and stable-call records — names the
    caller on the line, as the leg record does; a user who is not a line carries none."""
    config = make_config(tmp_path)
    sim = PeeringSim(default=answers(0.05))
    for u in config.users:
        sim.add_phone(u.id)
    for line in PeeringSim.peer_lines:
        sim.add_phone(line)
    svc = Service(config, switch=sim, hasher=FAST_HASHER, grace=1.0)
    await svc.start()
    try:
        a = Api(svc)
        await a.login("disp1")
        async with a.client("disp1") as c:
            sim.call_in("peer-2", "1001", headers={"From": FROM_A, "X-Baton-Tenant": "a"})
            await eventually(lambda: state(svc, "unit1") == "talking", what="unit1 answers")
            sim.hang_up("peer-2")
            await eventually(lambda: state(svc, "unit1") == "idle", what="the call ends")
            caller = {"number": "3101", "name": "a-unit1", "tenant": "a"}

            async def flow_record() -> dict[str, Any] | None:
                rows = (await c.get("/api/records/flows", params={"user": "peer-2"})).json()
                return rows[0] if rows and rows[0].get("ended_at") else None

            rec = await eventually(flow_record, what="the flow record is closed")
            assert rec["name"] == "inbound_call" and rec["args"]["caller"] == "peer-2"
            assert rec["callers"] == {"peer-2": caller}
            detail = (await c.get(f"/api/records/flows/{rec['id']}")).json()
            assert detail["callers"] == {"peer-2": caller}

        async def call_records() -> list[Any]:
            async with svc.store.read() as conn:
                q = sa.select(callinfo_records.c.users, callinfo_records.c.callers)
                return list((await conn.execute(q)).all())

        ((users, callers),) = await eventually(call_records, what="the stable call's record")
        assert sorted(users) == ["peer-2", "unit1"] and callers == {"peer-2": caller}
        # A flow with no peer line in it carries no callers at all.
        m = svc.manager
        spec = svc.library.get("call")
        assert spec is not None
        flow = m.start(spec, m.user("disp1"), m.user("unit2"))
        await flow.wait()
        await svc.journal.sync()
        async with svc.store.read() as conn:
            plain = (
                await conn.execute(
                    sa.select(flow_records.c.callers).where(flow_records.c.flow == flow.name)
                )
            ).scalar_one_or_none()
        assert plain is None
    finally:
        await svc.stop()


class DiallingSim(PeeringSim):
    """Peer lines that take calls out: each records the number it was pointed at."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.pointed: list[tuple[str, str]] = []

    def dial_peer(self, line: str, number: str) -> None:
        self.pointed.append((line, number))


async def test_a_call_out_on_a_peer_line_keeps_the_number_dialled(tmp_path: Path) -> None:
    """A unit dials another tenant's number: the call goes out on a free peer line. The
    journal (``leg.dialled``), the line's leg record, the flow record, the stable call's record
    and the line's view name the number dialled — not ``peer-1`` alone — and the line's next
    call, from another tenant, presents its caller, not that number."""
    config = make_config(tmp_path)
    sim = DiallingSim(default=answers(0.05))
    for u in config.users:
        sim.add_phone(u.id)
    for line in PeeringSim.peer_lines:
        sim.add_phone(line)
    svc = Service(config, switch=sim, hasher=FAST_HASHER, grace=1.0)
    await svc.start()
    try:
        a = Api(svc)
        await a.login("disp1")
        async with a.client("disp1") as c:
            sim.call_in("unit1", "3101")
            await eventually(lambda: state(svc, "peer-1") == "talking", what="the line answers")
            assert sim.pointed == [("peer-1", "3101")]
            line = (await c.get("/api/users/peer-1")).json()
            assert (line["dialled"], line["caller"]) == ("3101", None)
            assert (await c.get("/api/users/unit1")).json()["dialled"] is None
            events = (await c.get("/api/events")).json()
            (shown,) = [e for e in events if e["kind"] == "leg.dialled"]
            assert (shown["user"], shown["number"]) == ("peer-1", "3101")
            assert shown["flow"].startswith("inbound_call#")
            sim.hang_up("unit1")
            await eventually(lambda: state(svc, "peer-1") == "idle", what="the call ends")
            assert (await c.get("/api/users/peer-1")).json()["dialled"] is None

            async def leg_record() -> dict[str, Any] | None:
                legs = (await c.get("/api/records/legs", params={"user": "peer-1"})).json()
                return legs[0] if legs and legs[0].get("ended_at") else None

            leg = await eventually(leg_record, what="the line's leg record is closed")
            assert (leg["direction"], leg["dialled_number"]) == ("outbound", "3101")
            assert leg.get("caller_number") is None

            async def flow_record() -> dict[str, Any] | None:
                rows = (await c.get("/api/records/flows", params={"user": "peer-1"})).json()
                return rows[0] if rows and rows[0].get("ended_at") else None

            rec = await eventually(flow_record, what="the flow record is closed")
            assert rec["name"] == "inbound_call" and rec["args"]["callee"] == "peer-1"
            assert (rec["dialled"], rec.get("callers")) == ({"peer-1": "3101"}, None)
            detail = (await c.get(f"/api/records/flows/{rec['id']}")).json()
            assert detail["dialled"] == {"peer-1": "3101"}

            # the line's next call comes in from another tenant: a caller, no number dialled
            sim.call_in("peer-1", "1002", headers={"From": FROM_A, "X-Baton-Tenant": "a"})
            await eventually(lambda: state(svc, "unit2") == "talking", what="unit2 answers")
            line = (await c.get("/api/users/peer-1")).json()
            assert line["dialled"] is None and line["caller"]["number"] == "3101"

        async def call_records() -> list[Any]:
            async with svc.store.read() as conn:
                q = sa.select(callinfo_records.c.users, callinfo_records.c.dialled).order_by(
                    callinfo_records.c.id
                )
                return list((await conn.execute(q)).all())

        rows = await eventually(call_records, what="the stable calls' records")
        (users, dialled) = rows[0]
        assert sorted(users) == ["peer-1", "unit1"] and dialled == {"peer-1": "3101"}
        assert all(d is None for _, d in rows[1:])
    finally:
        await svc.stop()
