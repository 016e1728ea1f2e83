"""The ``sip`` switch on loopback: users, a rig (the core driving a :class:`SipSwitch`), and
SIPp / baresip processes bound to 127.0.0.1 on free ports.

Every subprocess is bounded in calls (``-m``) and in time, and stopped by its pid in a
``finally``; tests wait for conditions with a timeout, never for a fixed time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import shutil
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from baton.core import Leg, User, UserManager
from baton.core.events import Event
from baton.core.port import Cause, InboundCall
from baton.flows import inbound_call
from baton.switch.sip import SipSwitch, create_switch

SIPP_TIMEOUT = 40.0


@dataclass(frozen=True)
class U:
    """A configured user, shaped like the service's ``UserConfig``."""

    id: str
    numbers: tuple[str, ...] = ()
    password: str = "secret"
    contact: str | None = None
    max_priority: int | None = None
    keep: bool = False
    srtp: str | None = None  # the user's own [sip] srtp


_handed_out: set[int] = set()
# The block baresip phones take their RTP ports from (see Baresip); free_port() stays out of it.
BARESIP_RTP = (41000, 51200)


def _bindable(port: int) -> bool:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 right now, and so is the one above it:
    baresip opens SIP/TLS on its ``sip_listen`` port + 1, and RTP pairs use +1 for RTCP. A port
    (or its +1) handed out earlier in this process is never handed out again, so two phones of one
    test, started together, cannot pick each other's ports before either has bound them."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
        if (
            port > 65000
            or BARESIP_RTP[0] <= port < BARESIP_RTP[1]
            or {port, port + 1} & _handed_out
        ):
            continue
        if _bindable(port) and _bindable(port + 1):
            _handed_out.update((port, port + 1))
            return port
    raise RuntimeError("no free port found")


def rtp_range() -> str:
    """A block of 200 RTP ports for one test's engine, above the ephemeral range and away from
    the media benchmark's (the engine skips ports it cannot bind)."""
    base = 61000 + random.randrange(20) * 200
    return f"{base}-{base + 199}"


def need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.fail(f"{binary} not found: run scripts/install-system-deps.sh (as root)")
    return path


async def wait_until(predicate: Callable[[], bool], seconds: float = 30.0) -> None:
    """Poll ``predicate`` every 10 ms until it holds, failing after ``seconds``. Polling, because
    what we wait for is in other processes (SIPp, baresip) or spread over the switch's state.
    Generous by default: it returns as soon as the predicate holds; on a loaded 2-core box
    another process's step takes seconds."""
    async with asyncio.timeout(seconds):
        while not predicate():  # noqa: ASYNC110 - see the docstring
            await asyncio.sleep(0.01)


async def wait_listening(port: int, transport: str = "udp") -> None:
    """Wait until a subprocess has bound ``port`` (up to 10 s)."""
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    async with asyncio.timeout(10):
        while True:
            with socket.socket(socket.AF_INET, kind) as probe:
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError:
                    return
            await asyncio.sleep(0.02)


# ---- the rig: the core driving a SipSwitch ----------------------------------------------


def number_router(manager: UserManager, caller: User, leg: Leg, ev: InboundCall) -> None:
    """The minimal numbering plan: a user's number starts ``inbound_call``; anything else is
    refused as unreachable."""
    callee = manager.by_number(ev.to)
    if callee is None or callee is caller:
        manager.spawn(manager.switch.hangup(leg.id, Cause.UNREACHABLE), f"refuse:{leg.id}")
        return
    manager.start(inbound_call, caller, callee, priority=ev.priority)


@dataclass
class Rig:
    switch: SipSwitch
    manager: UserManager
    users: Sequence[U]
    events: list[Event] = field(default_factory=list)
    inbound: list[InboundCall] = field(default_factory=list)

    @property
    def udp_port(self) -> int:
        return self.switch.transport.address("udp").port

    def port(self, transport: str) -> int:
        return self.switch.transport.address(transport).port

    def user(self, user_id: str) -> User:
        return self.manager.user(user_id)

    def target(self, transport: str = "udp") -> str:
        return f"127.0.0.1:{self.port(transport)}"


@contextlib.asynccontextmanager
async def rig(
    users: Sequence[U],
    *,
    listen: Sequence[str] = ("udp:127.0.0.1:0",),
    sip: dict[str, Any] | None = None,
    router: Callable[[UserManager, User, Leg, InboundCall], None] | None = number_router,
    grace: float = 5.0,
) -> AsyncIterator[Rig]:
    table: dict[str, Any] = {"listen": list(listen), "rtp_ports": rtp_range(), "rtp_timeout": 0}
    table.update(sip or {})
    switch = create_switch(table, users)
    manager = UserManager(switch, grace=grace)
    r = Rig(switch, manager, users)
    manager.events.subscribe(r.events.append)
    listener = manager.switch_events.on_event

    def tap(ev: Any) -> None:
        if isinstance(ev, InboundCall):
            r.inbound.append(ev)
        listener(ev)

    switch.set_listener(tap)
    for u in users:
        manager.add_user(User(u.id, numbers=u.numbers, keep=u.keep))
    manager.router = router  # type: ignore[assignment]
    await switch.start()
    try:
        yield r
    finally:
        await manager.close()
        await switch.close()


# ---- SIPp ---------------------------------------------------------------------------------


class Sipp:
    """One SIPp process. Start with :meth:`start`; :meth:`wait` for its exit (it must stop by
    itself: give ``-m``); always :meth:`stop` in a ``finally``."""

    def __init__(self, args: Sequence[str], cwd: Path, name: str = "sipp") -> None:
        self.args = list(args)
        self.cwd = cwd
        self.name = name
        self.process: asyncio.subprocess.Process | None = None
        self.output = ""

    async def start(self) -> Sipp:
        # a test may give its own -timeout (a lossy run needs longer than the default)
        timeout = [] if "-timeout" in self.args else ["-timeout", f"{int(SIPP_TIMEOUT - 5)}s"]
        self.process = await asyncio.create_subprocess_exec(
            need("sipp"), *self.args, "-nostdin", "-trace_err", *timeout, "-timeout_error",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=self.cwd,
        )  # fmt: skip
        return self

    async def wait(self, seconds: float = SIPP_TIMEOUT) -> int:
        """Wait for the exit; return the status (the output is in :attr:`output`)."""
        assert self.process is not None
        try:
            async with asyncio.timeout(seconds):
                out, _ = await self.process.communicate()
        except TimeoutError:
            self.stop()
            pytest.fail(f"{self.name}: sipp {' '.join(self.args)} did not finish in {seconds} s")
        self.output = out.decode(errors="replace") + "".join(
            p.read_text(errors="replace") for p in self.cwd.glob("*_errors.log")
        )
        assert self.process.returncode is not None
        return self.process.returncode

    def stop(self) -> None:
        """Kill the process this test started (by its pid), if it still runs."""
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()

    async def aclose(self) -> None:
        self.stop()
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await self.process.wait()


@contextlib.asynccontextmanager
async def sipp_procs() -> AsyncIterator[list[Sipp]]:
    """A list to put started SIPp processes in; each is stopped on the way out."""
    procs: list[Sipp] = []
    try:
        yield procs
    finally:
        for p in procs:
            await p.aclose()


async def sipp(
    procs: list[Sipp],
    args: Sequence[str],
    cwd: Path,
    *,
    port: int,
    transport: str = "udp",
    listening: bool = False,
) -> Sipp:
    """Start SIPp with ``-i 127.0.0.1 -p port``. With ``listening`` (a phone Baton will call),
    return once it listens on ``port``."""
    sub = cwd / f"sipp-{port}"
    sub.mkdir(exist_ok=True)
    full = [*args, "-i", "127.0.0.1", "-p", str(port)]
    if transport == "tcp":
        full += ["-t", "t1"]
    proc = await Sipp(full, sub, name=f"sipp:{port}").start()
    procs.append(proc)
    if listening:
        await wait_listening(port, transport)
    return proc


# ---- baresip -------------------------------------------------------------------------------


BARESIP_MODULES = (
    "g711.so", "g722.so", "opus.so", "aufile.so", "aubridge.so", "sndfile.so", "menu.so",
    "ctrl_tcp.so", "account.so",
)  # fmt: skip


class Baresip:
    """A headless baresip registered to Baton, driven over ``ctrl_tcp`` (netstring JSON)."""

    def __init__(
        self, home: Path, user: str, password: str, baton_port: int, *, tone: Path,
        auto_answer: bool = True, codecs: str = "pcmu,pcma", rate: int = 8000,
    ) -> None:  # fmt: skip
        self.home = home
        self.user = user
        self.sip_port = free_port()
        self.ctrl_port = free_port()
        rtp = BARESIP_RTP[0] + (self.sip_port % 50) * 200
        home.mkdir(parents=True, exist_ok=True)
        (home / "heard").mkdir(exist_ok=True)  # sndfile: what the phone decodes, per call
        modules = "\n".join(f"module\t\t\t{m}" for m in BARESIP_MODULES)
        (home / "config").write_text(
            f"""poll_method\t\tepoll
sip_listen\t\t127.0.0.1:{self.sip_port}
net_interface\t\t127.0.0.1
rtp_ports\t\t{rtp}-{rtp + 100}
audio_player\t\taubridge,null
audio_alert\t\taubridge,null
audio_source\t\taufile,{tone}
ausrc_srate\t\t{rate}
auplay_srate\t\t{rate}
module_path\t\t/usr/lib/baresip/modules
{modules}
ctrl_tcp_listen\t\t127.0.0.1:{self.ctrl_port}
snd_path\t\t{home / "heard"}
"""
        )
        answer = ";answermode=auto" if auto_answer else ""
        (home / "accounts").write_text(
            f"<sip:{user}@127.0.0.1:{baton_port};transport=udp>;auth_pass={password}{answer};regint=60;"
            f"audio_codecs={codecs}\n"
        )
        (home / "contacts").write_text("")
        self.process: asyncio.subprocess.Process | None = None
        self.events: list[dict[str, Any]] = []
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pump: asyncio.Task[None] | None = None
        self._token = 0

    async def start(self) -> Baresip:
        with (self.home / "baresip.log").open("wb") as log:  # read it when a test fails
            self.process = await asyncio.create_subprocess_exec(
                need("baresip"), "-f", str(self.home),
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
        try:
            await wait_listening(self.ctrl_port, "tcp")
        except TimeoutError:
            status = self.process.returncode
            pytest.fail(f"baresip {self.user} (exit status {status}) did not open its control "
                        f"port {self.ctrl_port} in 10 s; its log ends:\n{self.log()[-800:]}")  # fmt: skip
        self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self.ctrl_port)
        self._pump = asyncio.get_running_loop().create_task(self._read_events())
        return self

    async def _read_events(self) -> None:
        assert self._reader is not None
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError, ValueError):
            while True:
                length = await self._reader.readuntil(b":")
                data = await self._reader.readexactly(int(length[:-1]))
                await self._reader.readexactly(1)  # the trailing comma
                self.events.append(json.loads(data))

    def command(self, command: str, params: str = "") -> None:
        assert self._writer is not None
        self._token += 1
        body = json.dumps({"command": command, "params": params, "token": str(self._token)})
        self._writer.write(f"{len(body)}:{body},".encode())

    def heard(self) -> list[Path]:
        """The WAV files of what this phone decoded (heard), one per call (module sndfile)."""
        return sorted((self.home / "heard").glob("*dec.wav"))

    def log(self) -> str:
        path = self.home / "baresip.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def saw(self, event_type: str) -> bool:
        return any(e.get("type") == event_type for e in self.events)

    def count(self, event_type: str) -> int:
        return sum(1 for e in self.events if e.get("type") == event_type)

    def keys(self) -> str:
        """The key presses this phone received in its calls (RFC 4733 events), in order."""
        return "".join(str(e.get("param", "")) for e in self.events
                       if e.get("type") == "CALL_DTMF_START")  # fmt: skip

    async def aclose(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()  # only the process this test started
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await self.process.wait()
