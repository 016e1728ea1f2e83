"""The local cluster's runner (``deploy/local/run.sh``, docs/cluster.md "On one machine") as a
process manager: a process that exits is reported once and the others go on — a killed shard
is a fail-over to watch, not the end of the cluster — and ``kill -USR1`` starts it again the
way it was started."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from baton.service.cluster.local import (
    MARKER,
    LocalCluster,
    banner,
    main,
    prepare_dir,
    tenant_toml,
)
from baton.service.config import load_config

pytestmark = [pytest.mark.realtime]


def _until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_process_that_exits_is_reported_once_and_the_rest_goes_on(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path)
    try:
        shard = cluster._spawn("shard-0", ["sleep", "30"])
        edge = cluster._spawn("kamailio", ["sleep", "30"])
        assert cluster.exited() == []
        shard.kill9()
        assert cluster.exited() == [shard]
        assert cluster.exited() == []  # reported once
        assert edge.alive()
        [again] = cluster.respawn_exited()
        assert again.name == "shard-0" and again.alive() and again.pid != shard.pid
        assert cluster.procs == [again, edge]  # in the old one's place
        assert cluster.exited() == []
    finally:
        cluster.stop()
    assert not again.alive() and not edge.alive()


def test_a_process_starts_again_with_its_environment_and_folder(tmp_path: Path) -> None:
    """PostgreSQL runs as its own user, in its own folder: a restart must keep both."""
    work = tmp_path / "work"
    work.mkdir()
    cluster = LocalCluster(tmp_path)
    try:
        env = dict(os.environ, MARK="marked")
        proc = cluster._spawn(
            "postgres", ["sh", "-c", 'echo "$MARK $(pwd)"; exec sleep 30'], env=env, cwd=work
        )
        line = f"marked {work}\n"
        _until(lambda: proc.output() == line)
        proc.kill9()
        cluster.respawn_exited()
        _until(lambda: proc.output() == line * 2)
    finally:
        cluster.stop()


def test_the_banner_says_where_phones_and_dispatchers_go(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path, sip_port=5260, etcd_port=2379, pg_port=5432)
    try:
        shard = cluster._spawn("shard-0", ["sleep", "30"])
        text = banner(
            cluster,
            ["acme"],
            {"acme": [("shard-0", "127.0.0.1:8100"), ("shard-1", "127.0.0.1:8110")]},
        )
    finally:
        cluster.stop()
    assert "udp:127.0.0.1:5260" in text
    assert "user acme-disp, password acme-disp-pw; acme-admin, acme-admin-pw provisions" in text
    assert "http://127.0.0.1:8100/ on shard-0, http://127.0.0.1:8110/ on shard-1" in text
    assert f"shard-0 {shard.pid}" in text  # to kill one and watch
    assert f"`kill -USR1 {os.getpid()}`" in text


def test_what_a_killed_process_left_behind_ends_with_it(tmp_path: Path) -> None:
    """Kamailio's workers outlive a ``kill -9`` of its main process and keep its port: the
    runner ends its process group when it sees the main process gone."""
    cluster = LocalCluster(tmp_path)
    try:
        edge = cluster._spawn("kamailio", ["sh", "-c", "sleep 30 & echo $!; exec sleep 30"])
        _until(lambda: edge.output().strip().isdigit())
        worker = int(edge.output())
        os.kill(edge.pid, signal.SIGKILL)
        _until(lambda: not edge.alive())
        os.kill(worker, 0)  # still there, an orphan
        assert cluster.exited() == [edge]
        _until(lambda: not _running(worker))
    finally:
        cluster.stop()


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False


def test_a_folder_the_runner_did_not_make_is_never_wiped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--dir`` is where the runner keeps its data, wiped at each start: given a folder it did
    not make (``--dir .`` in the repository, a home folder), it refuses and deletes nothing."""
    mine = tmp_path / "work"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert main(["--dir", str(mine)]) == 2
    assert (mine / "notes.txt").read_text() == "keep me"
    err = capsys.readouterr().err
    assert str(mine) in err and "not a folder this runner made" in err


def test_a_folder_the_runner_made_is_wiped_at_the_next_start(tmp_path: Path) -> None:
    root = tmp_path / "cluster"
    prepare_dir(root)  # new: made, and marked
    assert (root / MARKER).exists()
    (root / "etcd.log").write_text("an old run")
    prepare_dir(root)  # the runner's own: wiped, marked again
    assert sorted(p.name for p in root.iterdir()) == [MARKER]
    old = tmp_path / "old"  # what a run made before the runner marked its folders
    old.mkdir()
    (old / "shard-0.toml").write_text("")
    (old / "acme.toml").write_text("")
    prepare_dir(old)
    assert sorted(p.name for p in old.iterdir()) == [MARKER]
    empty = tmp_path / "empty"
    empty.mkdir()
    prepare_dir(empty)  # an empty folder holds nothing to lose
    assert (empty / MARKER).exists()


def test_a_tenants_recordings_stay_in_the_clusters_folder(tmp_path: Path) -> None:
    """Relative paths in a centre file are read from its folder (docs/service.md): the
    tenant files the runner writes into --dir keep their recordings at <dir>/<tenant>/…,
    not in a var/ nested inside the cluster's var/cluster."""
    (tmp_path / "acme.toml").write_text(
        tenant_toml("acme", "sqlite:///x.db", users=[("a", "2001", "dispatcher", None)])
    )
    config = load_config(tmp_path / "acme.toml")
    assert config.recordings == tmp_path / "acme" / "recordings"


def test_the_runners_help_says_dir_is_wiped(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "wiped at each start" in out and "how many shards" in out
    assert "\n    python -m baton.service.cluster.local --dir var/cluster --shards 2\n" in out
