"""A shard on a three-member etcd cluster, as real processes on loopback (docs/cluster.md, "What
each failure does"): losing the member it talks to (a minority) costs it nothing — it moves to
another endpoint and keeps its lease; losing the quorum (two of three down) stops it serving
within the TTL; the quorum back, it serves again under a new epoch.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from baton.service.cluster.lease import Directory
from baton.service.cluster.local import (
    PG_BIN,
    LocalCluster,
    Proc,
    free_port,
    free_udp_tcp_port,
    shard_toml,
    tenant_toml,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

TTL = 3.0

if not (PG_BIN / "postgres").exists() or os.geteuid() != 0:
    pytest.fail("needs Debian's PostgreSQL 15 and root (`make test` as root)", pytrace=False)


def wait_for(check: Callable[[], bool], what: str, timeout: float) -> float:
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
    return time.monotonic()


def holder(endpoints: list[str]) -> dict[str, Any] | None:
    async def get() -> dict[str, Any] | None:
        d = Directory(tuple(endpoints), ttl=TTL)
        try:
            async with asyncio.timeout(2):
                return await d.holder("solo")
        except Exception:
            return None
        finally:
            await d.close()

    return asyncio.run(get())


def answers(port: int) -> bool:
    """Whether a SIP listener on ``port`` answers an OPTIONS (the shard serves the tenant)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(0.5)
        me = s.getsockname()[1]
        s.sendto(
            (
                f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK-{time.monotonic_ns()};rport\r\n"
                "Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=p\r\n"
                f"To: <sip:127.0.0.1:{port}>\r\nCall-ID: probe-{me}@127.0.0.1\r\n"
                "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
            ).encode(),
            ("127.0.0.1", port),
        )
        try:
            return s.recv(65536).startswith(b"SIP/2.0 ")
        except OSError:
            return False


@pytest.fixture(scope="module")
def rig(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LocalCluster, list[Proc], Proc, int]]:
    root = tmp_path_factory.mktemp("quorum")
    cluster = LocalCluster(root, python=sys.executable)
    env_path = os.environ.get("PYTHONPATH", "")
    src = str(Path(__file__).resolve().parents[2] / "src")
    os.environ["PYTHONPATH"] = f"{src}:{env_path}" if env_path else src
    try:
        members = cluster.start_etcd_cluster(3)
        cluster.start_postgres()
        db = cluster.create_database("solo")
        users = [("s-disp", "4001", "dispatcher", None), ("s-unit1", "4101", "field", None)]
        (root / "solo.toml").write_text(tenant_toml("solo", db, users=users))
        sip = free_udp_tcp_port()
        placements = {
            "solo": {
                "config": str(root / "solo.toml"),
                "role": "active",
                "sip": f"udp:127.0.0.1:{sip}",
                "rtp_ports": "35000-35099",
                "api": f"127.0.0.1:{free_port()}",
            }
        }
        (root / "shard.toml").write_text(
            shard_toml("shard-s", cluster.etcd_endpoints, placements, ttl=TTL)
        )
        shard = cluster.start_shard(root / "shard.toml", "shard-s")
        wait_for(lambda: answers(sip), "the shard serving solo", 90)
        yield cluster, members, shard, sip
    finally:
        cluster.stop()
        os.environ["PYTHONPATH"] = env_path


def test_a_minority_lost_keeps_the_lease_a_quorum_lost_stops_the_shard(
    rig: tuple[LocalCluster, list[Proc], Proc, int],
) -> None:
    cluster, members, shard, sip = rig
    endpoints = cluster.etcd_endpoints
    first = holder(endpoints)
    assert first is not None and first["shard"] == "shard-s"

    # The member the shard talks to first goes down: a minority. The shard moves to the next
    # endpoint and renews there: same epoch, never stopped, still answering.
    members[0].stop()
    end = time.monotonic() + 2 * TTL  # every probe waits its answer (0.5 s at most)
    while time.monotonic() < end:
        assert answers(sip), "the shard stopped serving with a majority of etcd up"
    again = holder(endpoints[1:])
    assert again is not None and again["epoch"] == first["epoch"]
    assert f"lease of epoch {first['epoch']} lost" not in shard.output()

    # A second member down: no quorum. The shard cannot renew and stops serving the tenant
    # within the TTL of its last renewal that etcd acknowledged — which may come up to an
    # election timeout (1 s) after the quorum went, while the leader has not noticed yet.
    members[1].stop()
    lost_at = time.monotonic()
    stopped = wait_for(lambda: not answers(sip), "the shard to stop serving", 3 * TTL)
    assert stopped - lost_at <= 2 * TTL, stopped - lost_at
    assert f"lease of epoch {first['epoch']} lost" in shard.output()
    assert shard.alive()

    # The quorum back: the shard takes the tenant again, under a newer epoch.
    cluster.respawn(members[1])
    back = time.monotonic()
    wait_for(lambda: answers(sip), "the shard serving again", 30)
    print(
        f"quorum lost: stopped in {stopped - lost_at:.2f} s; back: served {time.monotonic() - back:.2f} s after"
    )
    now = holder(endpoints[1:])
    assert now is not None and now["shard"] == "shard-s" and now["epoch"] > first["epoch"]
