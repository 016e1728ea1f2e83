"""Child processes of a benchmark: placed on a core, stopped with their parent, measured.

A benchmark that compares engines gives each one a core of its own (:func:`pick_cores`,
:func:`place`) and reads its CPU time from ``/proc`` (:func:`cpu_seconds`). Every child gets
SIGTERM if the orchestrator dies (:func:`die_with_parent`), and :class:`Child` stops its process
by pid, so nothing outlives a run.

The orchestrator and a child speak JSON lines: :class:`Child` sends commands (``{"op": …}``) on
the child's stdin and reads its answers from its stdout. In the child, :func:`reply` answers,
and :func:`commands` (a plain loop) or :func:`serve_commands` (an asyncio child) reads the
commands until ``{"op": "quit"}`` or the end of input.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import resource
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, Final

__all__ = [
    "Child",
    "commands",
    "cpu_seconds",
    "die_with_parent",
    "libc",
    "pick_cores",
    "place",
    "raise_fd_limit",
    "reply",
    "serve_commands",
]

libc = ctypes.CDLL(None, use_errno=True)


_CLK_TCK: Final = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """A process's CPU time (user + system, every thread) from ``/proc/<pid>/stat``."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    fields = stat[stat.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime (fields 14, 15)


def pick_cores() -> tuple[int, int]:
    """(engine core, generator core): two different cores when the process may use two."""
    cores = sorted(os.sched_getaffinity(0))
    return cores[0], cores[1] if len(cores) > 1 else cores[0]


def raise_fd_limit() -> None:
    # 2,000 calls are 8,000 sockets in the engine alone.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def place(core: int, rt_priority: int) -> str:
    """Pin this process (and the threads it starts later) to ``core``; with ``rt_priority``
    > 0, run it SCHED_FIFO at that priority. Returns the policy it got.

    The build machine is shared: other work runs on both cores, and on this kernel (EEVDF) a
    nice -10 process still waits up to tens of milliseconds behind it — delay that is not the
    engine's. A low real-time priority (the way media servers are usually deployed) removes
    that noise. Both engines under test and the generator get the same treatment; the kernel's
    real-time throttling (95 % by default) still leaves the core to others now and then.
    """
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {core})
    if rt_priority > 0:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(rt_priority))
            return "fifo"
        except OSError:
            pass
    try:
        os.setpriority(os.PRIO_PROCESS, 0, -10)
        return "nice-10"
    except OSError:
        return "default"


def die_with_parent() -> None:
    """preexec_fn: SIGTERM this child if the orchestrator dies, so nothing outlives a run."""
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Child:
    """A child process driven by JSON lines, stopped by its pid when done (also on errors)."""

    def __init__(self, argv: list[str], name: str) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            preexec_fn=die_with_parent,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._in = self.proc.stdin
        self._out = self.proc.stdout.fileno()
        self._buf = b""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, obj: Any) -> None:
        self._in.write(json.dumps(obj).encode() + b"\n")
        self._in.flush()

    def read(self, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.name}: no answer within {timeout:.0f} s")
            ready, _, _ = select.select([self._out], [], [], left)
            if ready:
                data = os.read(self._out, 1 << 20)
                if not data:
                    raise RuntimeError(f"{self.name} exited (status {self.proc.poll()})")
                self._buf += data
        line, self._buf = self._buf.split(b"\n", 1)
        reply = json.loads(line)
        if isinstance(reply, dict) and "error" in reply:
            raise RuntimeError(f"{self.name}: {reply['error']}")
        return reply

    def request(self, obj: Any, timeout: float = 30.0) -> Any:
        self.send(obj)
        return self.read(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                self.send({"op": "quit"})
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()  # by pid, through our own Popen
                self.proc.wait(timeout=5)
        with contextlib.suppress(OSError):
            self._in.close()
        assert self.proc.stdout is not None
        self.proc.stdout.close()


# ---- in the child ------------------------------------------------------------------------------


def reply(obj: Any) -> None:
    """Answer the orchestrator: one JSON line on stdout (``{"error": …}`` makes
    :meth:`Child.read` raise)."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def commands() -> Iterator[dict[str, Any]]:
    """The orchestrator's commands, read from stdin one line at a time, until ``quit`` or the
    end of input (the orchestrator is gone)."""
    for line in sys.stdin:
        cmd: dict[str, Any] = json.loads(line)
        if cmd["op"] == "quit":
            return
        yield cmd


async def serve_commands(handle: Callable[[dict[str, Any]], None]) -> None:
    """Hand each command on stdin to ``handle`` from the running loop, until ``quit`` or the end
    of input. A command that raises is answered with ``{"error": …}`` and serving goes on: the
    orchestrator decides what a failure means."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    pending = b""

    def on_stdin() -> None:
        nonlocal pending
        data = os.read(0, 1 << 20)
        if not data:  # the orchestrator is gone
            if not done.done():
                done.set_result(None)
            return
        pending += data
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            cmd = json.loads(line)
            if cmd["op"] == "quit":
                if not done.done():
                    done.set_result(None)
                continue
            try:
                handle(cmd)
            except Exception as exc:
                reply({"error": f"{type(exc).__name__}: {exc}"})

    loop.add_reader(0, on_stdin)
    try:
        await done
    finally:
        loop.remove_reader(0)
