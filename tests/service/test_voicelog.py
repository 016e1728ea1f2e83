"""Voice logging on the sim in virtual time: the policy, checksums, retention, the failure
alarm, playback and export (docs/service.md, "Voice logging")."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from baton.core import Priority, Session, User, flow
from baton.core.events import Event
from baton.flows import LIBRARY, DispatcherQueue, call
from baton.service.config import parse_config
from baton.service.errors import Conflict, NotFound
from baton.service.positions.alarms import Alarms
from baton.service.positions.flows import hang_up
from baton.service.positions.service import Positions
from baton.service.routing import Router
from baton.service.runtime import Service
from baton.service.store.tables import audit, metadata, recordings
from baton.service.voicelog.policy import Policy
from baton.service.voicelog.service import VoiceLogger
from baton.switch.media.wav import WavWriter
from baton.testing import World

from .helpers import FAST_HASHER, Api, api, assert_error, config_data, eventually, make_config

DAY = 86400.0
T0 = 1_800_000_000.0


class _Conn:
    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn

    async def execute(self, statement: Any) -> Any:
        return self.conn.execute(statement)


class MemoryStore:
    """The journal and the store in one in-memory SQLite database, written at once: the
    logger's rows without a writer task (and without real I/O in virtual time)."""

    def __init__(self) -> None:
        self.engine = sa.create_engine("sqlite://")
        metadata.create_all(self.engine)
        self.conn = self.engine.connect()

    def execute(self, statement: Any, label: str = "statement") -> asyncio.Future[Any]:
        self.conn.execute(statement)
        self.conn.commit()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    def audit(self, **kw: Any) -> asyncio.Future[Any]:
        kw["details"] = kw.get("details") or {}
        return self.execute(sa.insert(audit).values(at=0.0, **kw))

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[_Conn]:
        yield _Conn(self.conn)

    def rows(self, table: sa.Table = recordings) -> list[dict[str, Any]]:
        result = self.conn.execute(sa.select(table).order_by(table.c.id))
        return [dict(r._mapping) for r in result]


class Centre:
    """The test config's users on a World (virtual time) with the numbering plan, alarms and
    a voice logger writing to :class:`MemoryStore`."""

    def __init__(self, tmp_path: Path, **recording: Any) -> None:
        config = make_config(tmp_path, recording=recording)
        self.w = w = World()
        for u in config.users:
            w.add(User(u.id, name=u.display_name, numbers=u.numbers, keep=u.keep))
        w.sim.write_recordings = True
        self.offset = T0
        self.store = MemoryStore()
        self.events: list[Event] = []
        w.manager.events.subscribe(self.events.append)
        users = [w[u.id] for u in config.positions]
        self.positions = Positions(
            w.manager,
            w.sim,
            users,
            wallclock=self.wall,
            audit=lambda **kw: None,
            kick=lambda: self.queue.kick(),
            offered=lambda u: self.queue.offered_to(u) is not None,
        )
        self.queue = DispatcherQueue(
            "dispatch",
            w.manager,
            users,
            timeout=300,
            ready=self.positions.is_ready,
            on_missed=self.positions.missed,
        )
        w.manager.router = Router(
            config,
            LIBRARY,
            queue=lambda: self.queue,
            started=lambda f, who: None,
            positions=self.positions,
        )
        self.alarms = Alarms(
            w.manager, wallclock=self.wall, started_at=lambda f: None, audit=self.store.audit
        )
        self.log = VoiceLogger(
            w.manager,
            w.sim,
            Policy.of(config),
            folder=config.recordings,
            store=self.store,
            journal=self.store,
            alarms=self.alarms,
            run_id=1,
            wallclock=self.wall,
        )
        self.tasks = [
            asyncio.get_running_loop().create_task(self.log.run()),
            asyncio.get_running_loop().create_task(self.log.sweep_forever()),
        ]

    def wall(self) -> float:
        return self.offset + self.w.manager.now()

    async def rows(self) -> list[dict[str, Any]]:
        await self.log.idle()
        return self.store.rows()

    async def talk(self, caller: str, to: str, seconds: float) -> None:
        """``caller`` dials ``to``, they talk ``seconds``, ``caller`` hangs up."""
        self.w.sim.call_in(caller, to)
        await self.w.run(seconds)
        self.w.sim.hang_up(caller)
        await self.w.run(1)

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.log.close()
        self.alarms.close()
        await self.w.close()


@contextlib.asynccontextmanager
async def centre(tmp_path: Path, **recording: Any) -> AsyncIterator[Centre]:
    c = Centre(tmp_path, **recording)
    try:
        yield c
    finally:
        await c.close()


async def talked(svc: Service, seconds: float = 0.3) -> None:
    """Let a call on the real loop last long enough to be kept (a segment that holds next to
    nothing is dropped)."""
    start = svc.manager.now()
    await eventually(lambda: svc.manager.now() - start >= seconds, what="the call's talk")


def sha256(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def flip_last_byte(path: str) -> None:
    """Change the file behind Baton's back."""
    data = bytearray(Path(path).read_bytes())
    data[-1] ^= 0x55
    Path(path).write_bytes(bytes(data))


def truncate(path: str, by: int) -> None:
    Path(path).write_bytes(Path(path).read_bytes()[:-by])


def size(path: str) -> int:
    return Path(path).stat().st_size


def exists(path: str) -> bool:
    return Path(path).exists()


def remove(path: str) -> None:
    Path(path).unlink()


def write_wav(path: Path, seconds: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    w = WavWriter(path)
    w.write(np.zeros(round(seconds * 8000), dtype=np.int16))
    w.close()
    return path


def resolved(path: str) -> Path:
    return Path(path).resolve()


async def test_a_positions_call_is_recorded_with_its_checksum(tmp_path: Path) -> None:
    async with centre(tmp_path) as c:
        await c.talk("unit1", "2001", 30)
        (rec,) = await c.rows()
        assert (rec["kind"], rec["user_id"], rec["status"]) == ("call", "disp1", "ok")
        assert rec["reasons"] == ["position"]
        assert rec["end_reason"] == "leg ended"
        assert rec["seconds"] == pytest.approx(30, abs=1)
        assert rec["sha256"] == sha256(rec["path"])
        assert rec["size_bytes"] == size(rec["path"])
        assert Path(rec["path"]).is_relative_to(tmp_path / "recordings" / "voicelog")
        kinds = [e.kind for e in c.events if e.kind.startswith("recording.")]
        assert kinds == ["recording.started", "recording.ended"]


async def test_an_always_on_line_is_recorded_per_call_not_between_calls(tmp_path: Path) -> None:
    async with centre(tmp_path) as c:
        c.w.sim.call_in("unit1", "2001")
        await c.w.run(5)
        await c.w.start(hang_up, c.w["disp1"], priority=1).result()  # from the console
        await c.w.run(30)
        assert c.w.state("disp1") == "connected"  # the position's line stays up, idle
        (rec,) = await c.rows()
        # (The hang-up took the line from the call: a clear ended the recording; the moment
        # the hang-up held the line before releasing it held nothing and was dropped.)
        assert (rec["user_id"], rec["end_reason"], rec["status"]) == ("disp1", "cleared", "ok")
        assert rec["seconds"] == pytest.approx(4, abs=0.5)  # the call, not the idle line


async def test_the_policy_says_whose_calls_are_recorded(tmp_path: Path) -> None:
    async with centre(tmp_path, users=["unit2"], exclude=["disp2"]) as c:
        await c.talk("unit1", "1003", 5)  # two field units: not recorded
        await c.talk("unit1", "2002", 5)  # an excluded position
        assert await c.rows() == []
        await c.talk("unit1", "1002", 5)  # named in users
        (rec,) = await c.rows()
        assert (rec["user_id"], rec["reasons"]) == ("unit2", ["user"])


async def test_roles_can_be_recorded_and_positions_left_out(tmp_path: Path) -> None:
    async with centre(tmp_path, positions=False, roles=["field"]) as c:
        await c.talk("unit1", "2001", 5)
        (rec,) = await c.rows()
        assert (rec["user_id"], rec["reasons"]) == ("unit1", ["role"])


async def test_an_emergency_is_recorded_whatever_the_rules_say(tmp_path: Path) -> None:
    async with centre(tmp_path, positions=False) as c:
        await c.talk("unit3", "112", 20)
        (emergency,) = c.w.manager.flows.values()  # declared until a supervisor ends it
        await c.w.run(10)
        await emergency.stop("handled")
        await c.w.run(1)
        assert c.w.state("disp1") == "connected"  # the position's line stays up, unrecorded
        recs = await c.rows()
        assert "unit3" in {r["user_id"] for r in recs}
        assert {r["user_id"] for r in recs} >= {"disp1"}  # the positions it reached, too
        assert all(r["reasons"] == ["emergency"] for r in recs)
        assert all(r["status"] == "ok" and r["sha256"] == sha256(r["path"]) for r in recs)
        assert all(r["seconds"] > 0 for r in recs)  # no empty segments kept
        # each recording that started says how it ended: kept, dropped (empty) or failed
        started = [e.path for e in c.events if e.kind == "recording.started"]
        ends = ("recording.ended", "recording.dropped", "recording.failed")
        finished = [e.path for e in c.events if e.kind in ends]
        assert sorted(started) == sorted(finished)
        kept = {e.path for e in c.events if e.kind == "recording.ended"}
        assert kept == {r["path"] for r in recs}


async def test_each_talk_burst_is_recorded_with_its_talker(tmp_path: Path) -> None:
    async with centre(tmp_path, positions=False) as c:
        s = c.w.sim
        s.call_in("unit1", "802")  # the PTT group "north"
        await c.w.run(2)
        s.press("unit1", "*")  # unit1 talks
        await c.w.run(5)
        s.press("unit1", "#")  # and lets go
        await c.w.run(2)
        s.press("unit2", "*")  # unit2 talks
        await c.w.run(4)
        s.press("unit2", "#")
        await c.w.run(1)
        recs = await c.rows()
        bursts = [(r["kind"], r["talker"], r["ptt_group"], r["end_reason"]) for r in recs]
        assert bursts == [
            ("ptt", "unit1", "north", "released"),
            ("ptt", "unit2", "north", "released"),
        ]
        assert recs[1]["seconds"] == pytest.approx(4, abs=0.5)
        assert all(r["sha256"] == sha256(r["path"]) for r in recs)


async def test_bursts_in_a_group_emergency_are_recorded_whatever_the_rules(
    tmp_path: Path,
) -> None:
    async with centre(tmp_path, positions=False, ptt=False) as c:
        s = c.w.sim
        s.call_in("unit1", "802")
        await c.w.run(2)
        s.press("unit2", "*")  # an ordinary burst: PTT traffic is not recorded here
        await c.w.run(3)
        s.press("unit2", "#")
        await c.w.run(1)
        assert await c.rows() == []
        s.press("unit1", "9")  # the emergency key: the group's emergency, unit1 talks
        await c.w.run(4)
        s.press("unit1", "#")
        await c.w.run(1)
        (rec,) = await c.rows()
        assert (rec["kind"], rec["talker"], rec["reasons"]) == ("ptt", "unit1", ["emergency"])


async def test_bursts_of_other_groups_are_not_recorded(tmp_path: Path) -> None:
    async with centre(tmp_path, positions=False, groups=["engines"]) as c:
        c.w.sim.call_in("unit1", "802")
        await c.w.run(2)
        c.w.sim.press("unit1", "*")
        await c.w.run(5)
        c.w.sim.press("unit1", "#")
        await c.w.run(1)
        assert await c.rows() == []


async def test_a_recording_that_cannot_start_is_an_alarm(tmp_path: Path) -> None:
    async with centre(tmp_path) as c:
        c.w.sim.fail_next("record", "disk full")
        await c.talk("unit1", "2001", 5)
        (rec,) = await c.rows()
        assert (rec["status"], rec["user_id"]) == ("failed", "disp1")
        assert "disk full" in rec["error"]
        (alarm,) = c.alarms.faults()
        assert alarm["what"] == "recording" and alarm["user"] == "disp1"
        assert alarm["text"].startswith("Recording of disp1's call failed")
        assert "disk full" in alarm["text"]
        assert [e.kind for e in c.events if e.kind.startswith(("recording.", "alarm."))] == [
            "recording.failed",
            "alarm.raised",
        ]
        (entry,) = c.store.rows(audit)
        assert (entry["action"], entry["outcome"]) == ("alarm.recording", "failed")
        assert c.log.counts.failed["start"] == 1


async def test_a_file_gone_when_the_call_ends_is_an_alarm(tmp_path: Path) -> None:
    async with centre(tmp_path) as c:
        c.w.sim.call_in("unit1", "2001")
        await c.w.run(3)
        (rec,) = await c.rows()
        assert rec["status"] == "recording"
        remove(rec["path"])  # a disk pulled, a file deleted behind the switch's back
        c.w.sim.hang_up("unit1")
        await c.w.run(1)
        (rec,) = await c.rows()
        assert rec["status"] == "failed" and "not a WAV" in rec["error"]
        (alarm,) = c.alarms.faults()
        assert alarm["details"]["stage"] == "file"


async def test_a_preempted_call_goes_on_in_a_new_segment(tmp_path: Path) -> None:
    async with centre(tmp_path) as c:
        c.w.sim.call_in("unit1", "2001")  # unit1 talks to disp1
        await c.w.run(5)
        # A FLASH call takes disp1 from the routine one: the preemption clears disp1's media.
        c.w.start(call, c.w["disp1"], c.w["unit2"], priority=int(Priority.FLASH))
        await c.w.run(10)
        c.w.sim.hang_up("unit2")
        await c.w.run(2)
        recs = [r for r in await c.rows() if r["user_id"] == "disp1"]
        assert [r["end_reason"] for r in recs[:1]] == ["cleared"]
        assert len(recs) >= 2 and recs[0]["leg"] == recs[-1]["leg"]  # one line, two segments
        assert recs[-1]["seconds"] == pytest.approx(10, abs=1.5)
        assert all(r["status"] == "ok" for r in recs)


async def test_a_logger_error_is_an_alarm_and_logging_goes_on(tmp_path: Path) -> None:
    async with centre(tmp_path) as c:
        real = c.log._connected

        def broken(user: str, leg: str) -> None:
            c.log._connected = real  # type: ignore[method-assign]
            raise RuntimeError("boom")

        c.log._connected = broken  # type: ignore[method-assign]
        await c.talk("unit1", "2001", 5)  # the connect is missed, but not silently
        (alarm,) = c.alarms.faults()
        assert "could not follow" in alarm["text"] and "boom" in alarm["text"]
        await c.talk("unit2", "2001", 5)  # the logger is still on the event stream
        # (The first call was caught up with at its next hand-over, the settle.)
        recs = await c.rows()
        assert [(r["user_id"], r["status"]) for r in recs] == [("disp1", "ok")] * 2


async def test_recordings_a_crashed_run_left_open_get_their_checksum(tmp_path: Path) -> None:
    async with centre(tmp_path) as c:
        folder = tmp_path / "recordings" / "voicelog"
        kept, lost = write_wav(folder / "kept.wav", 2.0), folder / "lost.wav"
        for path in (kept, lost):
            c.store.execute(
                sa.insert(recordings).values(
                    run_id=0,  # an earlier run
                    path=str(path),
                    user_id="disp1",
                    started_at=T0,
                    ended_at=T0 + 2,
                    end_reason="crash",
                    kind="call",
                    status="recording",
                )
            )
        assert await c.log.recover() == 2
        ok, failed = await c.rows()
        assert (ok["status"], ok["sha256"], ok["seconds"]) == ("ok", sha256(str(kept)), 2.0)
        assert failed["status"] == "failed" and "missing" in failed["error"]
        (alarm,) = c.alarms.faults()
        assert alarm["details"]["recording"] == failed["id"]


async def test_retention_removes_old_files_and_keeps_the_records(tmp_path: Path) -> None:
    async with centre(tmp_path, retention_days=30, sweep_every=3600) as c:
        await c.talk("unit1", "2001", 5)
        await c.talk("unit2", "2001", 5)
        before = await c.rows()
        c.offset += 29 * DAY
        await c.w.run(3600)  # a sweep: nothing is old enough yet
        assert [r["status"] for r in await c.rows()] == ["ok", "ok"]
        c.offset += 2 * DAY
        await c.w.run(3600)
        after = await c.rows()
        for old, new in zip(before, after, strict=True):
            assert new["status"] == "expired" and new["expired_at"] is not None
            assert new["sha256"] == old["sha256"]  # the record stays, with its checksum
            assert not exists(new["path"])
        assert c.log.counts.expired == 2
        assert [e.kind for e in c.events if e.kind == "recording.expired"] == ["recording.expired"]
        assert c.store.rows(audit)[-1]["action"] == "recording.expire"
        with pytest.raises(NotFound, match="retention"):
            await c.log.verified(after[0])


async def test_a_changed_file_fails_verification_with_an_alarm(tmp_path: Path) -> None:
    async with centre(tmp_path) as c:
        await c.talk("unit1", "2001", 5)
        (rec,) = await c.rows()
        assert await c.log.verified(rec) == resolved(rec["path"])
        flip_last_byte(rec["path"])
        with pytest.raises(Conflict) as exc:
            await c.log.verified(rec)
        assert exc.value.id == "recording-tampered"
        (alarm,) = c.alarms.faults()
        assert "integrity" in alarm["text"]
        assert c.log.counts.integrity == 1


@pytest.mark.realtime
async def test_playback_export_and_metrics_over_the_api(tmp_path: Path) -> None:
    async with api(tmp_path, "disp1", "sup1") as (svc, a):
        assert svc.sim is not None
        svc.sim.call_in("unit2", "2002")
        disp2 = svc.manager.user("disp2")
        await eventually(lambda: svc.manager.state_of(disp2) == "talking", within=20)
        await talked(svc)
        svc.sim.hang_up("unit2")
        await eventually(
            lambda: svc.voicelog.counts.completed == 1, within=20, what="the recording kept"
        )
        await svc.journal.sync()
        async with a.client("disp1") as c, a.client("sup1") as s:
            (rec,) = (await c.get("/api/recordings")).json()
            assert rec["status"] == "ok" and rec["user_id"] == "disp2"
            assert (await c.get("/api/recordings", params={"kind": "call"})).json() == [rec]
            assert (await c.get("/api/recordings", params={"kind": "ptt"})).json() == []
            assert (await c.get("/api/recordings", params={"status": "failed"})).json() == []
            assert_error(await c.get("/api/recordings", params={"kind": "x"}), 422)
            r = await c.get(f"/api/recordings/{rec['id']}/download")
            assert r.status_code == 200
            assert hashlib.sha256(r.content).hexdigest() == rec["sha256"]

            body = {"recordings": [rec["id"]]}
            assert_error(await c.post("/api/recordings/export", json=body), 403, "forbidden")
            flows = (await s.get("/api/records/flows", params={"user": "unit2"})).json()
            r = await s.post("/api/recordings/export", json={"record": flows[0]["id"]})
            assert r.status_code == 200, r.text
            assert r.headers["content-type"] == "application/zip"
            z = zipfile.ZipFile(io.BytesIO(r.content))
            manifest = json.loads(z.read("manifest.json"))
            assert manifest["exported_by"] == "sup1"
            assert manifest["record"]["id"] == flows[0]["id"]
            (entry,) = manifest["recordings"]
            assert entry["integrity"] == "ok" and entry["user"] == "disp2"
            assert hashlib.sha256(z.read(entry["file"])).hexdigest() == entry["sha256"]
            await svc.journal.sync()
            (log,) = (await s.get("/api/audit", params={"action": "recording.export"})).json()
            assert log["principal"] == "sup1" and log["details"]["recordings"] == [rec["id"]]

            truncate(rec["path"], 100)  # behind Baton's back
            assert_error(
                await c.get(f"/api/recordings/{rec['id']}/download"), 409, "recording-tampered"
            )
            r = await s.post("/api/recordings/export", json=body)
            z = zipfile.ZipFile(io.BytesIO(r.content))
            (entry,) = json.loads(z.read("manifest.json"))["recordings"]
            assert entry["integrity"] == "mismatch" and "file" not in entry
            assert r.headers["x-baton-integrity-failures"] == "1"
            alarms = (await s.get("/api/alarms")).json()
            assert len(alarms) == 2 and all(x["what"] == "recording" for x in alarms)
            r = await s.post(f"/api/alarms/{alarms[0]['alarm'].replace('#', '%23')}/ack")
            assert r.status_code == 200 and r.json()["acknowledged_by"] == "sup1"
            assert_error(await c.get("/api/alarms"), 403, "forbidden")
            text = (await s.get("/metrics")).text
            assert "baton_recordings_integrity_failures_total 2" in text
            assert "baton_recordings_completed_total 1" in text


@pytest.mark.realtime
async def test_exporting_a_call_still_going_takes_its_recordings_so_far(tmp_path: Path) -> None:
    # A queued call's flow ends when the position answers (the call is settled), but the call
    # goes on: its export is its users' recordings until now, not until the flow's end.
    async with api(tmp_path, "sup1") as (svc, a):
        assert svc.sim is not None
        svc.sim.call_in("unit1", "100")
        unit1 = svc.manager.user("unit1")
        await eventually(lambda: svc.manager.state_of(unit1) == "talking", within=20)
        await talked(svc)
        await svc.journal.sync()
        async with a.client("sup1") as s:
            (flow,) = (await s.get("/api/records/flows", params={"user": "unit1"})).json()
            assert flow["name"] == "queued_call" and "ended_at" in flow
            r = await s.post("/api/recordings/export", json={"record": flow["id"]})
            assert r.status_code == 200, r.text
            manifest = json.loads(zipfile.ZipFile(io.BytesIO(r.content)).read("manifest.json"))
            (entry,) = manifest["recordings"]
            (position,) = set(flow["users"]) - {"unit1"}
            assert entry["user"] == position
            assert entry["status"] == "recording" and entry["integrity"] == "unchecked"


@pytest.mark.realtime
async def test_a_position_provisioned_over_the_api_is_recorded(tmp_path: Path) -> None:
    data = config_data(tmp_path)
    data["users"].append({"id": "adm1", "password": "adm1-pw", "role": "admin"})
    svc = Service(parse_config(data, "test"), hasher=FAST_HASHER, grace=1.0)
    await svc.start()
    try:
        a = Api(svc)
        async with a.client() as c:
            r = await c.post("/api/login", json={"user": "adm1", "password": "adm1-pw"})
            a.tokens["adm1"] = r.json()["token"]
        async with a.client("adm1") as c:
            new = {"id": "disp9", "numbers": ["2099"], "password": "disp9-pw", "role": "dispatcher"}
            r = await c.post("/api/users", json=new)
            assert r.status_code == 201, r.text
        assert svc.sim is not None
        svc.sim.call_in("unit1", "2099")
        disp9 = svc.manager.user("disp9")
        await eventually(lambda: svc.manager.state_of(disp9) == "talking", within=20)
        await talked(svc)
        svc.sim.hang_up("unit1")
        await eventually(
            lambda: svc.voicelog.counts.completed == 1, within=20, what="the recording kept"
        )
        await svc.journal.sync()
        async with svc.store.read() as conn:
            (rec,) = [dict(r._mapping) for r in await conn.execute(sa.select(recordings))]
        assert (rec["user_id"], rec["reasons"], rec["status"]) == ("disp9", ["position"], "ok")
    finally:
        await svc.stop()


@pytest.mark.realtime
async def test_a_queue_overflow_message_is_kept_in_a_fresh_recordings_folder(
    tmp_path: Path,
) -> None:
    # The recordings folder does not exist before the first start, and no voice-logged call
    # has made it: the queue's overflow message must still be recorded, not fail the call.
    dispatch = {
        "number": "100",
        "queue_timeout": 0.3,
        "overflow": "message",
        "agent_state": "logged_out",
    }
    data = config_data(tmp_path, dispatch=dispatch)
    assert not (tmp_path / "recordings").exists()
    svc = Service(parse_config(data, "test"), hasher=FAST_HASHER, grace=1.0)
    await svc.start()
    try:
        assert (tmp_path / "recordings").is_dir()
        assert svc.sim is not None
        svc.sim.call_in("unit1", "100")
        await eventually(lambda: svc.sim is not None and svc.sim.recordings, what="the message")
        (rec,) = svc.sim.recordings.values()
        assert "dispatch-unit1-" in rec.path
        svc.sim.hang_up("unit1")
        await eventually(lambda: not svc.manager.flows, what="the queued call's end")
        assert list((tmp_path / "recordings").glob("dispatch-unit1-*.wav"))
    finally:
        await svc.stop()


@pytest.mark.realtime
async def test_a_flows_own_recordings_are_sealed_with_their_checksum(tmp_path: Path) -> None:
    """docs/service.md, Integrity: a recording a flow makes itself (a queued caller's message
    here, ended by the caller hanging up) gets its SHA-256, size and length when the switch
    closes the file, like the voice logger's — so playback and export check it too; one the
    switch refused to start is ``failed``, with the alarm."""
    dispatch = {
        "number": "100",
        "queue_timeout": 0.3,
        "overflow": "message",
        "agent_state": "logged_out",
    }
    svc = Service(
        parse_config(config_data(tmp_path, dispatch=dispatch), "test"),
        hasher=FAST_HASHER,
        grace=1.0,
    )
    await svc.start()
    try:
        assert svc.sim is not None
        svc.sim.call_in("unit1", "100")
        await eventually(lambda: svc.sim is not None and svc.sim.recordings, what="the message")
        await talked(svc)
        svc.sim.hang_up("unit1")

        async def sealed() -> list[dict[str, Any]]:
            await svc.journal.sync()
            async with svc.store.read() as conn:
                rows = (await conn.execute(sa.select(recordings))).all()
            return [dict(r._mapping) for r in rows if r.status not in (None, "recording")]

        (rec,) = await eventually(sealed, what="the message's checksum")
        assert rec["by"].startswith("queued_call#") and "dispatch-unit1-" in rec["path"]
        assert rec["status"] == "ok" and rec["sha256"] == sha256(rec["path"])
        assert rec["size_bytes"] == size(rec["path"]) and rec["seconds"] > 0
        assert await svc.voicelog.verified(rec) == resolved(rec["path"])
        flip_last_byte(rec["path"])  # a changed message is caught like any recording
        with pytest.raises(Conflict):
            await svc.voicelog.verified(rec)

        @flow()
        async def record_nowhere(s: Session, user: User) -> None:
            await s.claim(user)
            await s.dial(user)
            await s.record(user, str(tmp_path / "no-such-folder" / "x.wav"))

        m = svc.manager
        failed = m.start(record_nowhere, m.user("unit2"))
        assert await failed.wait() == "failed"
        (bad,) = [r for r in await eventually(sealed, what="the failure") if r["id"] != rec["id"]]
        assert bad["status"] == "failed" and "missing" in bad["error"]
        assert any("x.wav" in a["text"] for a in svc.alarms.faults())
    finally:
        await svc.stop()
