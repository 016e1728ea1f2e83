"""The store on real SQLite files: migrations, the journal, call records, crash recovery."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from argon2 import PasswordHasher

from baton.core.events import Event
from baton.flows import call, emergency_call
from baton.service.errors import Unauthenticated
from baton.service.runtime import Service
from baton.service.store import Store
from baton.service.store.records import LegFilter, flow_detail, list_flows, list_legs
from baton.service.store.tables import audit, journal, metadata, runs, tokens, users

from .helpers import FAST_HASHER, crash, eventually, make_config, running

pytestmark = pytest.mark.realtime


async def rows(svc: Service, table: sa.Table, *where: Any) -> list[dict[str, Any]]:
    async with svc.store.read() as conn:
        result = await conn.execute(
            sa.select(table).where(*where).order_by(table.c[next(iter(table.c.keys()))])
        )
        return [dict(r._mapping) for r in result]


async def test_migrations_build_the_schema_the_code_uses(tmp_path: Path) -> None:
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'a' / 'b.db'}")
    await store.open()
    try:
        assert await store.revision() == Store.head() == "0009"

        def diff(conn: sa.Connection) -> list[Any]:
            return compare_metadata(MigrationContext.configure(conn), metadata)

        async with store.engine.connect() as conn:
            assert await conn.run_sync(diff) == []
        await store.close()
        await store.open()  # a second open finds the schema current
        assert await store.revision() == "0009"
    finally:
        await store.close()


async def test_every_event_is_journalled_in_order_and_a_call_is_recorded(tmp_path: Path) -> None:
    async with running(tmp_path) as svc:
        m = svc.manager
        flow = m.start(call, m.user("disp1"), m.user("unit1"))
        await flow.wait()
        await eventually(lambda: m.state_of(m.user("unit1")) == "talking")
        await svc.journal.sync()
        seqs = [r["seq"] for r in await rows(svc, journal, journal.c.run_id == svc.run_id)]
        assert seqs == list(range(1, m.events.last_seq + 1))
        async with svc.store.read() as conn:
            legs = await list_legs(conn, LegFilter(open=True))
            flows = await list_flows(conn, name="call")
        assert {(r["user_id"], r["direction"], r["owner"]) for r in legs} == {
            ("disp1", "outbound", "call#1"),
            ("unit1", "outbound", "call#1"),
        }
        assert all(r["answered_at"] is not None and r["ended_at"] is None for r in legs)
        (rec,) = flows
        assert rec["flow"] == "call#1" and rec["outcome"] == "completed"
        assert rec["args"] == {"caller": "disp1", "callee": "unit1"}  # as given
        assert sorted(rec["users"]) == ["disp1", "unit1"]
        # The far end hangs up: both legs close with a cause.
        svc.sim.hang_up("unit1")  # type: ignore[union-attr]
        await eventually(lambda: m.state_of(m.user("disp1")) == "idle")
        await svc.journal.sync()
        async with svc.store.read() as conn:
            ended = await list_legs(conn, LegFilter(open=False))
        assert {r["user_id"]: r["end_reason"] for r in ended} == {
            "unit1": "normal",
            "disp1": "normal",
        }


async def test_preemptions_are_recorded_with_the_preempting_flow_and_reason(tmp_path: Path) -> None:
    async with running(tmp_path) as svc:
        m = svc.manager
        first = m.start(call, m.user("disp1"), m.user("unit1"))
        await first.wait()
        await eventually(lambda: m.state_of(m.user("unit1")) == "talking")
        emergency = m.start(emergency_call, m.user("disp2"), m.user("unit1"))
        await eventually(
            lambda: (
                m.state_of(m.user("unit1")) == "talking"
                and m.owner_of(m.user("unit1")) is emergency
            )
        )
        await svc.journal.sync()
        async with svc.store.read() as conn:
            (rec,) = await list_flows(conn, name="emergency_call")
            detail = await flow_detail(conn, rec["id"])
            assert detail is not None
            made = detail["preemptions_made"]
            assert [(p["user_id"], p["victim"], p["claimer"], p["reason"]) for p in made] == [
                ("unit1", "p2p#1", "emergency_call#1", "emergency")
            ]
            assert made[0]["seconds"] is not None and made[0]["priority"] == 50
            assert await list_flows(conn, preempted=True) == []  # the victim was a P2P, not a flow
        emergency.cancel()
        await emergency.wait()


async def test_a_crash_leaves_records_that_the_next_start_closes_with_crash(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path)
    svc = Service(config, hasher=FAST_HASHER)
    await svc.start()
    m = svc.manager
    flow = m.start(call, m.user("disp1"), m.user("unit1"))
    await flow.wait()
    await eventually(lambda: m.state_of(m.user("unit1")) == "talking")
    await svc.journal.sync()
    crashed_run = svc.run_id
    # The process dies: nothing is stopped, flushed or closed beyond what was acknowledged.
    await crash(svc)
    again = Service(config, hasher=FAST_HASHER)
    await again.start()
    try:
        assert again.run_id == crashed_run + 1
        legs = await rows(
            again,
            sa.table(
                "leg_records", sa.column("run_id"), sa.column("end_reason"), sa.column("ended_at")
            ),
        )
        assert legs and all(r["end_reason"] == "crash" and r["ended_at"] for r in legs)
        (old, new) = await rows(again, runs)
        assert old["end_reason"] == "crashed" and new["ended_at"] is None
    finally:
        await again.stop()
    (old, new) = await rows_after_stop(config)
    assert new["end_reason"] == "stopped"


async def rows_after_stop(config: Any) -> list[dict[str, Any]]:
    store = Store(config.database)
    await store.open()
    try:
        async with store.read() as conn:
            return [
                dict(r._mapping) for r in await conn.execute(sa.select(runs).order_by(runs.c.id))
            ]
    finally:
        await store.close()


async def test_a_clean_stop_flushes_and_closes_the_run_with_shutdown(tmp_path: Path) -> None:
    async with running(tmp_path) as svc:
        m = svc.manager
        flow = m.start(call, m.user("disp1"), m.user("unit1"))
        await flow.wait()
        await eventually(lambda: m.state_of(m.user("unit1")) == "talking")
        last = m.events.last_seq
        config = svc.config
    store = Store(config.database)
    await store.open()
    try:
        async with store.read() as conn:
            seqs = [
                r[0] for r in await conn.execute(sa.select(journal.c.seq).order_by(journal.c.seq))
            ]
            legs = await list_legs(conn, LegFilter())
            flows = await list_flows(conn)
        # Everything published before the stop, and what the stop itself caused, is there.
        assert seqs[:last] == list(range(1, last + 1))
        assert legs and all(r["ended_at"] is not None for r in legs)
        assert {r["end_reason"] for r in legs} <= {"shutdown", "normal", "cancelled", "collected"}
        assert all(r["ended_at"] is not None for r in flows)
    finally:
        await store.close()


async def test_passwords_are_stored_as_argon2_hashes_and_refreshed_only_when_changed(
    tmp_path: Path,
) -> None:
    async with running(tmp_path) as svc:
        stored = {r["id"]: r for r in await rows(svc, users)}
        assert set(stored) == {u.id for u in svc.config.users}
        for u in svc.config.users:
            digest = stored[u.id]["password_hash"]
            assert digest.startswith("$argon2id$") and u.password not in digest
    data_path = tmp_path
    async with running(data_path) as svc2:  # same passwords: hashes kept
        again = {r["id"]: r["password_hash"] for r in await rows(svc2, users)}
    assert again == {k: v["password_hash"] for k, v in stored.items()}


async def test_a_job_that_fails_fails_alone(tmp_path: Path) -> None:
    async with running(tmp_path) as svc:
        j = svc.journal
        bad = j.execute(sa.insert(tokens).values(id="x"), "bad")  # NOT NULL columns missing
        good = j.audit(
            principal="disp1", role="dispatcher", action="test", target=None, outcome="ok"
        )
        with pytest.raises(sa.exc.IntegrityError):
            await bad
        await good
        assert [r["action"] for r in await rows(svc, audit)] == ["test"]


async def test_sync_waits_for_what_was_queued_before_it(tmp_path: Path) -> None:
    async with running(tmp_path) as svc:
        j = svc.journal
        for i in range(50):
            j.audit(principal=None, role=None, action=f"a{i}", target=None, outcome="ok")
        assert j.pending >= 50
        queued = j._appended
        await j.sync()
        assert j._committed >= queued  # (a heartbeat may have been queued since)
        assert len(await rows(svc, audit)) == 50
        await asyncio.wait_for(j.sync(), 1)  # nothing queued: returns at once


@dataclass(slots=True, kw_only=True)
class _Odd(Event):
    """An event a flow library might define, carrying what JSON cannot hold."""

    kind: ClassVar[str] = "odd.thing"
    colour: Any = None
    ratio: float = 0.0
    thing: Any = None


async def test_an_event_json_cannot_hold_is_stored_plainly_and_journalling_goes_on(
    tmp_path: Path,
) -> None:
    import enum

    class Colour(enum.Enum):
        RED = "red"

    async with running(tmp_path) as svc:
        bus = svc.manager.events
        bus.publish(_Odd(colour=Colour.RED, ratio=float("nan"), thing=object()))
        bus.publish(_Odd(colour={1: (Colour.RED,)}))
        await svc.journal.sync()
        stored = [r["data"] for r in await rows(svc, journal) if r["kind"] == "odd.thing"]
        assert stored[0]["colour"] == "red" and stored[0]["ratio"] == "nan"
        assert stored[0]["thing"].startswith("<object")
        assert stored[1]["colour"] == {"1": ["red"]}


class CountingHasher(PasswordHasher):
    """FAST_HASHER's parameters, counting its verifies and hashes."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=1024, parallelism=1)
        self.verifies = 0
        self.hashes = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
        self.verifies += 1
        return super().verify(hash, password)

    def hash(self, password: str | bytes, *, salt: bytes | None = None) -> str:
        self.hashes += 1
        return super().hash(password, salt=salt)


async def test_a_start_sees_unchanged_passwords_without_an_argon2_verify(tmp_path: Path) -> None:
    """The users table's quick check: a second start verifies no password with argon2; a check
    that does not match (a row from before it) costs one verify, and is written back."""
    config = make_config(tmp_path)
    first = CountingHasher()
    svc = Service(config, hasher=first, grace=1.0)
    await svc.start()
    await svc.stop()
    assert first.hashes == len(config.users) and first.verifies == 0
    store = Store(config.database)
    await store.open()
    try:
        async with store.engine.begin() as conn:
            stale = sa.update(users).where(users.c.id == "unit1").values(password_check=None)
            await conn.execute(stale)
    finally:
        await store.close()
    again = CountingHasher()
    svc = Service(config, hasher=again, grace=1.0)
    await svc.start()
    await svc.stop()
    assert (again.verifies, again.hashes) == (1, 0)
    third = CountingHasher()
    svc = Service(config, hasher=third, grace=1.0)
    await svc.start()
    try:
        assert (third.verifies, third.hashes) == (0, 0)
        await svc.auth.login("unit1", "unit1-pw", None)  # the hash is still the login's
        with pytest.raises(Unauthenticated):
            await svc.auth.login("unit1", "unit1-pw-old", None)
    finally:
        await svc.stop()
