"""The store on a real PostgreSQL (Debian's postgresql-15, started by the test as the
``postgres`` system user on a free loopback port, stopped by its pid): migrations, the journal,
call records and crash recovery through asyncpg. Skipped where PostgreSQL is not installed."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from baton.flows import call, emergency_call
from baton.service.runtime import Service
from baton.service.store.records import LegFilter, flow_detail, list_flows, list_legs
from baton.service.store.tables import directory, journal, runs

from .helpers import FAST_HASHER, crash, eventually, make_config
from .server import free_port
from .test_provision import NEW_UNIT, centre, data_with_admin, login

BIN = Path("/usr/lib/postgresql/15/bin")

pytestmark = [pytest.mark.realtime]

# Never skipped: `make test` installs Debian's PostgreSQL (scripts/system-packages.txt) and CI
# runs as root, which this test needs to run the server as the postgres user.
if not (BIN / "postgres").exists() or os.geteuid() != 0:
    pytest.fail(
        "needs Debian's PostgreSQL 15 (run `make test` as root, which installs it) and root",
        pytrace=False,
    )


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A throw-away cluster; yields its SQLAlchemy URL."""
    data = Path(tempfile.mkdtemp(prefix="baton-pg-"))
    shutil.chown(data, "postgres", "postgres")
    pw = pwd.getpwnam("postgres")

    def as_postgres() -> None:  # in the child, before exec: the server refuses to run as root
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)

    env = {**os.environ, "HOME": pw.pw_dir}
    subprocess.run(
        [str(BIN / "initdb"), "-D", str(data / "db"), "-A", "trust", "-U", "baton", "--no-sync"],
        check=True,
        capture_output=True,
        preexec_fn=as_postgres,
        env=env,
        cwd=data,
    )
    port = free_port()
    log = (data / "log").open("w")
    # Started directly (no wrapper), so that the pid we stop is the postmaster's own.
    proc = subprocess.Popen(
        [
            str(BIN / "postgres"),
            "-D",
            str(data / "db"),
            "-k",
            str(data),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-F",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=as_postgres,
        env=env,
        cwd=data,
    )
    try:
        deadline = time.monotonic() + 30
        while (
            subprocess.run(
                [str(BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)], capture_output=True
            ).returncode
            != 0
        ):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("PostgreSQL did not start: " + (data / "log").read_text())
            time.sleep(0.1)
        subprocess.run(
            [
                str(BIN / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-U",
                "baton",
                "-d",
                "postgres",
                "-c",
                "CREATE DATABASE baton",
            ],
            check=True,
            capture_output=True,
        )
        yield f"postgresql+asyncpg://baton@127.0.0.1:{port}/baton"
    finally:
        proc.send_signal(signal.SIGINT)  # the "fast" shutdown
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        with contextlib.suppress(OSError):
            shutil.rmtree(data)


async def test_records_and_recovery_on_postgresql(postgres: str, tmp_path: Path) -> None:
    config = make_config(tmp_path, database=postgres)
    svc = Service(config, hasher=FAST_HASHER)
    await svc.start()
    m = svc.manager
    first = m.start(call, m.user("disp1"), m.user("unit1"))
    await first.wait()
    await eventually(lambda: m.state_of(m.user("unit1")) == "talking")
    emergency = m.start(emergency_call, m.user("disp2"), m.user("unit1"))
    await eventually(
        lambda: (
            m.owner_of(m.user("unit1")) is emergency and m.state_of(m.user("unit1")) == "talking"
        )
    )
    await svc.journal.sync()
    async with svc.store.read() as conn:
        seqs = [
            r[0]
            for r in await conn.execute(
                sa.select(journal.c.seq)
                .where(journal.c.run_id == svc.run_id)
                .order_by(journal.c.seq)
            )
        ]
        assert seqs == list(range(1, m.events.last_seq + 1))
        (rec,) = await list_flows(conn, name="emergency_call")
        detail = await flow_detail(conn, rec["id"])
        assert detail is not None and detail["preemptions_made"][0]["victim"] == "p2p#1"
        assert await list_flows(conn, user="unit1") != []
    # Crash: the next start closes what the dead run left open.
    await crash(svc)
    again = Service(config, hasher=FAST_HASHER)
    await again.start()
    try:
        async with again.store.read() as conn:
            legs = await list_legs(conn, LegFilter())
            states = [r.end_reason for r in await conn.execute(sa.select(runs).order_by(runs.c.id))]
        assert legs and {r["end_reason"] for r in legs} <= {"crash", "normal", "cancelled"}
        assert "crash" in {r["end_reason"] for r in legs}
        assert states == ["crashed", None]
    finally:
        await again.stop()


async def test_provisioning_is_stored_on_postgresql(postgres: str, tmp_path: Path) -> None:
    # A database of its own: the directory is seeded by the first start on it.
    engine = create_async_engine(postgres, isolation_level="AUTOCOMMIT")
    async with engine.connect() as conn:
        await conn.execute(sa.text("CREATE DATABASE baton_directory"))
    await engine.dispose()
    url = postgres.rsplit("/", 1)[0] + "/baton_directory"
    data = data_with_admin(tmp_path, database=url)
    async with centre(tmp_path, data) as a, a.client("adm1") as c:
        assert (await c.post("/api/users", json=NEW_UNIT)).status_code == 201
        r = await c.patch("/api/groups/engines", json={"members": ["unit1", "unit9"]})
        assert r.status_code == 200, r.text
        assert (await c.delete("/api/users/unit3")).status_code == 200
    async with centre(tmp_path, data) as a, a.client("adm1") as c:
        users = {u["id"] for u in (await c.get("/api/users")).json()}
        assert "unit9" in users and "unit3" not in users
        assert (await c.get("/api/groups/engines")).json()["members"] == ["unit1", "unit9"]
        assert (await login(a, "unit9", NEW_UNIT["password"])).status_code == 200
        async with a.svc.store.read() as conn:
            rows = {(r.kind, r.id): r for r in await conn.execute(sa.select(directory))}
        assert rows[("user", "unit9")].updated_by == "adm1"
        assert rows[("user", "unit3")].data is None and rows[("user", "unit3")].removed_at
        assert rows[("user", "unit1")].updated_by is None  # seeded from the config
