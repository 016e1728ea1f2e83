"""``baton serve`` as a process: start-up banner, a bad config, the WebSocket event stream, a
clean stop on SIGINT or SIGTERM (status 0) that flushes the journal, and ``make run`` stopped
quietly."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import websockets

from baton.core import Priority
from baton.service.cli import build_parser, serve_main, with_overrides
from baton.service.config import ConfigError, UserConfig, load_config, parse_config
from baton.service.runtime import Service
from baton.service.store import Store
from baton.service.store.directory import write_entry
from baton.service.store.tables import runs

from .helpers import FAST_HASHER, PASSWORDS
from .server import free_port, serve, to_toml

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.realtime


def test_check_and_a_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.toml"
    good.write_text(to_toml({"users": [{"id": "a", "password": "p", "role": "dispatcher"}]}))
    assert serve_main(["--config", str(good), "--check"]) == 0
    from baton.flows import LIBRARY

    assert f"ok (1 users, switch sim, {len(LIBRARY)} flows)" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text(to_toml({"users": [{"id": "a", "password": "p"}, {"id": "b"}]}))
    assert serve_main(["--config", str(bad)]) == 2
    assert "users[1].password: field required" in capsys.readouterr().err
    assert serve_main([]) == 2
    assert serve_main(["--sim", "--check"]) == 0


def test_a_misspelt_permission_is_a_configuration_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `barge-in` for `barge_in` granted nothing, silently: --check said ok and the role's users
    # were refused barge-ins with no hint why. A permission no flow and not the service names
    # is now named, by --check and at start.
    cfg = tmp_path / "site.toml"
    data = {
        "roles": {"dispatcher": {"permissions": ["barge-in", "audit"]}},
        "users": [{"id": "d", "password": "p", "role": "dispatcher"}],
        "database": str(tmp_path / "b.db"),
    }
    cfg.write_text(to_toml(data))
    assert serve_main(["--config", str(cfg), "--check"]) == 2
    err = capsys.readouterr().err
    assert "roles.dispatcher.permissions[0]: unknown permission 'barge-in'" in err, err
    assert "barge_in" in err and "permissions[1]" not in err
    with pytest.raises(ConfigError) as info:
        Service(load_config(cfg), hasher=FAST_HASHER)
    assert info.value.problems[0].startswith("roles.dispatcher.permissions[0]: unknown")
    # A plug-in's own permission is known once its flow is loaded (examples/escort).
    data["roles"] = {"dispatcher": {"permissions": ["escort"]}}
    data["flows"] = {"plugins": ["escort_flows"], "paths": [str(ROOT / "examples" / "escort")]}
    cfg.write_text(to_toml(data))
    assert serve_main(["--config", str(cfg), "--check"]) == 0, capsys.readouterr().err


def test_command_line_overrides_keep_a_role_table_extending_its_builtin(tmp_path: Path) -> None:
    # `[roles.dispatcher] permissions = ["escort"]` adds a permission and keeps the built-in's
    # cap, position and scope — with --listen, --sim or --database given too (they re-validate
    # the file; the defaults it left unset must stay unset).
    path = tmp_path / "site.toml"
    path.write_text(
        to_toml(
            {
                "roles": {"dispatcher": {"permissions": ["escort"]}},
                "users": [{"id": "d", "password": "p", "role": "dispatcher"}],
            }
        )
    )
    config = load_config(path)
    args = build_parser().parse_args(
        ["--config", str(path), "--listen", "127.0.0.1:9999", "--sim", "--database", "x.db"]
    )
    changed = with_overrides(config, args)
    assert changed.api.listen == "127.0.0.1:9999" and changed.switch == "sim"
    role = changed.all_roles["dispatcher"]
    assert role == config.all_roles["dispatcher"]
    assert "escort" in role.permissions and "call" in role.permissions
    assert role.max_priority == Priority.EMERGENCY and role.position
    assert role.effective_scope == "centre"


def test_the_banner_prints_no_sip_centres_password_even_on_virtual_phones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from baton.service.cli import _banner

    class Run:
        run_id = 1

    data = {
        "users": [{"id": "d", "password": "d-secret", "role": "dispatcher"}],
        "sip": {"listen": ["udp:127.0.0.1:5060"]},
    }
    path = tmp_path / "site.toml"
    path.write_text(to_toml(data))
    args = build_parser().parse_args(["--config", str(path), "--sim"])
    _banner(with_overrides(load_config(path), args), Run())
    out = capsys.readouterr().out
    assert "dispatcher login: d / (password: see the users' password keys in" in out
    assert "d-secret" not in out
    del data["sip"]
    path.write_text(to_toml(data))
    _banner(load_config(path), Run())  # made for virtual phones: shown
    assert "dispatcher login: d / d-secret" in capsys.readouterr().out


def test_the_banner_offers_a_dispatchers_login_not_an_administrators(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The built-in admin role is a position role too, so a file listing its admin first had
    the banner offer "dispatcher login: adm1": the provisioning account. It offers the first
    user whose role staffs a position; with none, the first position, as a plain login."""
    from baton.service.cli import _banner

    class Run:
        run_id = 1

    users = [
        {"id": "adm1", "password": "adm1-pw", "role": "admin"},
        {"id": "unit1", "password": "u-pw", "role": "field"},
        {"id": "sup1", "password": "sup1-pw", "role": "supervisor"},
    ]
    path = tmp_path / "site.toml"
    path.write_text(to_toml({"users": users}))
    _banner(load_config(path), Run())
    out = capsys.readouterr().out
    assert "dispatcher login: sup1 / sup1-pw   (sup1, role supervisor)" in out, out
    assert "adm1" not in out and "u-pw" not in out
    path.write_text(to_toml({"users": users[:2]}))  # nobody to staff a position
    _banner(load_config(path), Run())
    out = capsys.readouterr().out
    assert "  login: adm1 / adm1-pw   (adm1, role admin)" in out and "dispatcher login" not in out


def test_check_reports_every_plugin_and_switch_problem_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "broken.toml"
    cfg.write_text(
        to_toml(
            {
                "users": [{"id": "a", "password": "p"}],
                "flows": {"plugins": ["nosuchmodule", "json"], "paths": ["nope"]},
                "sip": {"listen": ["udp:127.0.0.1:5999"], "bogus": 1},
            }
        )
    )
    assert serve_main(["--config", str(cfg), "--check"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"baton serve: bad configuration in {cfg}:"), err
    assert "flows.paths: " in err and "is not a folder" in err
    assert "flows.plugins[0] (nosuchmodule): cannot import 'nosuchmodule'" in err
    assert "flows.plugins[1] (json): defines no flow" in err
    assert "sip.bogus: unknown key" in err
    assert "Traceback" not in err


def test_check_reports_a_files_own_and_its_permission_problems_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # docs/service.md: every problem with its key, all at once. A misspelt permission (known
    # only once the flows are loaded) was hidden behind any problem of the file itself: fixing
    # a users[1].password then revealed roles.dispatcher.permissions[0] on the next try.
    cfg = tmp_path / "two.toml"
    cfg.write_text(
        to_toml(
            {
                "roles": {"dispatcher": {"permissions": ["barge-in"]}},
                "flows": {"plugins": ["nosuchmodule"]},
                "users": [{"id": "a", "password": "p"}, {"id": "b"}],
            }
        )
    )
    assert serve_main(["--config", str(cfg), "--check"]) == 2
    err = capsys.readouterr().err
    assert "users[1].password: field required" in err
    assert "roles.dispatcher.permissions[0]: unknown permission 'barge-in'" in err
    assert "flows.plugins[0] (nosuchmodule): cannot import" in err


def test_a_bad_sip_table_stops_start_up_naming_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "sip.toml"
    cfg.write_text(
        to_toml(
            {
                "switch": "sip",
                "database": f"sqlite+aiosqlite:///{tmp_path / 'x.db'}",
                "users": [{"id": "a", "password": "p"}],
                "sip": {"listen": ["carrier-pigeon:127.0.0.1:5060"], "realm": "baton"},
            }
        )
    )
    r = subprocess.run(
        [sys.executable, "-m", "baton.cli", "serve", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2, r.stderr
    assert "sip.listen[0]" in r.stderr
    assert "Traceback" not in r.stderr


async def test_the_banner_the_event_stream_and_a_clean_stop(tmp_path: Path) -> None:
    with serve(tmp_path) as server:
        banner = server.output()
        assert f"console:  {server.base}/console/" in banner
        assert "dispatcher login: disp1 / disp1-pw" in banner
        async with httpx.AsyncClient(base_url=server.base) as c:
            r = await c.post("/api/login", json={"user": "disp1", "password": PASSWORDS["disp1"]})
            token = r.json()["token"]
            headers = {"Authorization": f"Bearer {token}"}
            # No credentials: the handshake is refused.
            with pytest.raises(websockets.InvalidStatus):
                async with websockets.connect(f"{server.ws}/api/events/stream"):
                    pass
            async with websockets.connect(f"{server.ws}/api/events/stream?token={token}") as ws:
                hello = json.loads(await ws.recv())
                assert hello["type"] == "hello" and hello["user"] == "disp1"
                # What the stream does not speak is ignored, not the end of the stream.
                await ws.send(b"\x00\xff binary")
                await ws.send("no json {")
                await ws.send(json.dumps({"type": "ping"}))
                r = await c.post(
                    "/api/flows",
                    headers=headers,
                    json={"flow": "call", "args": {"caller": "disp1", "callee": "unit1"}},
                )
                assert r.status_code == 201
                seen: list[dict[str, Any]] = []
                async with asyncio.timeout(10):
                    while True:
                        msg = json.loads(await ws.recv())
                        seen.append(msg)
                        users = {u["id"]: u for u in msg.get("users", [])}
                        if users.get("unit1", {}).get("state") == "talking":
                            break
                assert {"type": "pong"} in seen
                events = [m["event"] for m in seen if m["type"] == "event"]
                assert events[0]["kind"] == "flow.started" and events[0]["text"].startswith(
                    "call#1 starts"
                )
                assert any(m.get("flows") for m in seen if m["type"] == "event")
                assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
        pid = server.proc.pid
    assert server.proc.returncode == 0, server.output()
    assert "event stream failed" not in server.output()
    # credentials never reach the log: the secret is everything after "baton_<id>_" (it may
    # hold "_" itself, so a split on the last one could test a fragment as short as "0")
    secret = token.split("_", 2)[2]
    assert len(secret) >= 40 and secret not in server.output()
    lines = [json.loads(x) for x in server.output().splitlines() if x.startswith("{")]
    assert any(x["msg"] == "service stopped" for x in lines)
    access = [x for x in lines if x["logger"] == "baton.service.access"]
    assert access and {"request_id", "status", "ms"} <= set(access[0])
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'baton.db'}")
    await store.open()
    try:
        async with store.read() as conn:
            (run,) = (await conn.execute(sa.select(runs))).all()
        assert run.end_reason == "stopped", pid
    finally:
        await store.close()


def test_a_port_in_use_is_one_plain_line(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        to_toml(
            {
                "database": f"sqlite+aiosqlite:///{tmp_path / 'x.db'}",
                "users": [{"id": "a", "password": "p", "role": "dispatcher"}],
            }
        )
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        command = ["serve", "--config", str(cfg), "--listen", f"127.0.0.1:{port}"]
        r = subprocess.run(
            [sys.executable, "-m", "baton.cli", *command],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        f"baton serve: cannot listen on 127.0.0.1:{port}: the address is in use "
        "(another baton serve? choose a port with --listen or [api] listen)"
    ]
    assert "Traceback" not in r.stdout + r.stderr


def test_a_sip_port_in_use_is_one_plain_line(tmp_path: Path) -> None:
    """The switch's listen address taken (another baton serve, a softphone on 5060): one line
    that names it, no traceback, and nothing logged about tasks the failed start left behind."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        cfg = tmp_path / "c.toml"
        cfg.write_text(
            to_toml(
                {
                    "switch": "sip",
                    "database": f"sqlite+aiosqlite:///{tmp_path / 'x.db'}",
                    "api": {"listen": f"127.0.0.1:{free_port()}"},
                    "sip": {"listen": [f"udp:127.0.0.1:{port}"]},
                    "users": [{"id": "a", "password": "p", "role": "dispatcher"}],
                }
            )
        )
        r = subprocess.run(
            [sys.executable, "-m", "baton.cli", "serve", "--config", str(cfg)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1] == (
        f"baton serve: sip: cannot listen on ['udp:127.0.0.1:{port}']: "
        "[Errno 98] Address already in use"
    )
    assert "Traceback" not in r.stdout + r.stderr
    assert "background task" not in r.stdout + r.stderr


def test_listeners_that_share_a_tcp_port_fail_the_check(tmp_path: Path) -> None:
    """A browser phone's SIP WebSocket put on the API's port, or beside tcp: on one port: one
    of them could never listen, so --check says so rather than ok."""
    cfg = tmp_path / "c.toml"

    def check(*listen: str) -> list[str]:
        cfg.write_text(
            to_toml(
                {
                    "switch": "sip",
                    "api": {"listen": "127.0.0.1:8443"},
                    "sip": {"listen": ["udp:127.0.0.1:5060", *listen]},
                    "users": [{"id": "a", "password": "p", "role": "dispatcher"}],
                }
            )
        )
        r = subprocess.run(
            [sys.executable, "-m", "baton.cli", "serve", "--config", str(cfg), "--check"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 2
        lines = r.stderr.strip().splitlines()
        assert lines[0] == f"baton serve: bad configuration in {cfg}:"
        return lines[1:]

    assert check("tcp:127.0.0.1:5060", "ws:127.0.0.1:5060") == [
        "  sip.listen[2]: ws:127.0.0.1:5060 and tcp:127.0.0.1:5060 would take the same TCP port"
    ]
    assert check("ws:127.0.0.1:8443") == [
        "  api.listen: 127.0.0.1:8443 is also sip.listen[1] (ws:127.0.0.1:8443): "
        "give them different ports"
    ]


def _wait_up(proc: subprocess.Popen[str], base: str, log: Path) -> None:
    # The demo's users' passwords are hashed with argon2id's full cost at start: on a loaded
    # two-core box that alone has taken half a minute.
    deadline = time.monotonic() + 90
    while True:
        assert proc.poll() is None, log.read_text()
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/api/health", timeout=1).status_code == 200:
                return
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)


def test_sigterm_is_a_clean_stop_with_status_0(tmp_path: Path) -> None:
    with serve(tmp_path) as server:
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=20) == 0, server.output()
    lines = [json.loads(x) for x in server.output().splitlines() if x.startswith("{")]
    assert [x["msg"] for x in lines if x["msg"].startswith("stopped by")] == ["stopped by SIGTERM"]
    assert any(x["msg"] == "service stopped" for x in lines)
    assert "Traceback" not in server.output()


def test_make_run_stopped_by_sigterm_says_nothing_of_it(tmp_path: Path) -> None:
    # The Makefile's own recipe, in a scratch folder (its var/ lands there), on virtual phones
    # and a free port; the venv is the one running the tests, taken as installed (-o).
    root = Path(__file__).resolve().parents[2]
    shutil.copy(root / "Makefile", tmp_path / "Makefile")
    (tmp_path / "examples").mkdir()
    shutil.copy(root / "examples" / "demo.toml", tmp_path / "examples" / "demo.toml")
    venv = Path(sys.executable).parent.parent
    assert (venv / "bin" / "baton").exists(), venv
    port = free_port()
    log = tmp_path / "make.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                "make",
                "--no-print-directory",
                f"VENV={venv}",
                "-o",
                f"{venv}/.installed",
                "run",
                f"RUN_ARGS=--sim --listen 127.0.0.1:{port}",
            ],
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            _wait_up(proc, f"http://127.0.0.1:{port}", log)
            # `exec` in the recipe: make's child is baton serve itself, not a shell.
            (child,) = _children(proc.pid)
            assert "baton" in Path(f"/proc/{child}/cmdline").read_text()
            os.kill(child, signal.SIGTERM)
            assert proc.wait(timeout=20) == 0, log.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)
    output = log.read_text()
    assert "Terminated" not in output and "***" not in output, output
    assert "stopped by SIGTERM" in output


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_a_config_clashing_with_the_stored_directory_is_one_plain_message(
    tmp_path: Path,
) -> None:
    # The store's directory has a user created over the API with number 1002; the file now
    # gives that number to a new user: start-up stops, naming it (docs/service.md, Provisioning).
    db = f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"
    users = [{"id": "a", "password": "p", "role": "dispatcher", "numbers": ["1001"]}]

    async def provisioned() -> None:
        svc = Service(parse_config({"database": db, "users": users}), hasher=FAST_HASHER)
        await svc.start()
        async with svc.store.engine.begin() as conn:
            user = UserConfig(id="b", password="x", numbers=("1002",))
            await write_entry(conn, "user", "b", user, at=0, by="a")
        await svc.stop()

    asyncio.run(provisioned())
    cfg = tmp_path / "c.toml"
    users.append({"id": "c", "password": "p", "numbers": ["1002"]})
    cfg.write_text(to_toml({"database": db, "users": users}))
    listen = f"127.0.0.1:{free_port()}"
    r = subprocess.run(
        [sys.executable, "-m", "baton.cli", "serve", "--config", str(cfg), "--listen", listen],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2, r.stdout + r.stderr
    assert "with the store's directory:" in r.stderr
    assert "number '1002' is already used by user" in r.stderr
    assert "Traceback" not in r.stdout + r.stderr
