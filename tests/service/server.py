"""A real ``baton serve`` process on a free loopback port, for the WebSocket and browser tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from .helpers import config_data


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(v)


def to_toml(data: dict[str, Any]) -> str:
    """Enough TOML for the test configs: scalars, tables, arrays of tables."""
    head, tables = [], []
    for key, v in data.items():
        if isinstance(v, dict):
            tables.append(f"[{key}]\n" + "".join(f"{k} = {_value(x)}\n" for k, x in v.items()))
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            for item in v:
                tables.append(
                    f"[[{key}]]\n" + "".join(f"{k} = {_value(x)}\n" for k, x in item.items())
                )
        else:
            head.append(f"{key} = {_value(v)}\n")
    return "".join(head) + "\n" + "\n".join(tables)


class Server:
    def __init__(self, proc: subprocess.Popen[str], base: str, log: Path) -> None:
        self.proc = proc
        self.base = base
        self.log = log

    @property
    def ws(self) -> str:
        return self.base.replace("https://", "wss://").replace("http://", "ws://")

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def serve(tmp_path: Path, *extra: str, **overrides: Any) -> Iterator[Server]:
    """Start ``baton serve`` with the test config; stop it by its pid (SIGINT, then SIGKILL)."""
    port = free_port()
    cfg = tmp_path / "baton.toml"
    data = config_data(tmp_path, **overrides)
    data.setdefault("log", {"format": "json"})
    cfg.write_text(to_toml(data))
    log = tmp_path / "serve.log"
    out = log.open("w")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "baton.cli",
            "serve",
            "--config",
            str(cfg),
            "--listen",
            f"127.0.0.1:{port}",
            *extra,
        ],
        stdout=out,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    # With [api.tls] the server speaks HTTPS (its certificate is the test's own: not checked
    # here, only whether it is up).
    tls = "tls" in data.get("api", {})
    base = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60  # a loaded 2-core box takes 30 s and more to import
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"baton serve exited {proc.returncode}:\n{log.read_text()}")
            with contextlib.suppress(httpx.HTTPError):
                health = httpx.get(f"{base}/api/health", timeout=1, verify=not tls)
                if health.status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise AssertionError(f"baton serve did not come up:\n{log.read_text()}")
            time.sleep(0.05)
        yield Server(proc, base, log)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        out.close()
