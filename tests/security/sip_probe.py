"""The attacker's kit for the SIP probes of this folder: a ``sip`` switch on 127.0.0.1 with the
events it emits, and raw UDP/TCP senders that write SIP by hand (so that a probe can forge what
a phone would not: a Via naming someone else, a huge message, a non-UTF-8 header).

Every socket is bound to 127.0.0.1 and closed by the probe; waits are bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from _rigs.sip import U as User  # the probes' users and ports are the rigs' own
from _rigs.sip import free_port as free_port
from baton.core.port import SwitchEvent
from baton.switch.sip import SipSwitch, create_switch


@dataclass
class Rig:
    switch: SipSwitch
    events: list[SwitchEvent] = field(default_factory=list)

    def port(self, transport: str = "udp") -> int:
        return self.switch.transport.address(transport).port


@contextlib.asynccontextmanager
async def switch_rig(
    users: Sequence[User], *, sip: dict[str, Any] | None = None, tcp: bool = False
) -> AsyncIterator[Rig]:
    base = 46000 + random.randrange(40) * 100
    listen = ["udp:127.0.0.1:0"] + (["tcp:127.0.0.1:0"] if tcp else [])
    table: dict[str, Any] = {"listen": listen, "rtp_ports": f"{base}-{base + 99}",
                             "rtp_timeout": 0}  # fmt: skip
    table.update(sip or {})
    switch = create_switch(table, users)
    rig = Rig(switch)
    switch.set_listener(rig.events.append)
    await switch.start()
    try:
        yield rig
    finally:
        await switch.close()


def invite(
    to_user: str,
    *,
    from_user: str,
    via: str,
    transport: str = "UDP",
    target_port: int = 5060,
    call_id: str | None = None,
    extra: str = "",
    body: bytes | None = None,
) -> bytes:
    """An INVITE as bytes; ``via`` is the sent-by (``host:port``) the sender claims."""
    sdp = (
        body
        if body is not None
        else (
            b"v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            b"m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
        )
    )
    head = (
        f"INVITE sip:{to_user}@127.0.0.1:{target_port} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {via};branch=z9hG4bK{uuid.uuid4().hex[:16]};rport\r\n"
        f"From: <sip:{from_user}@{via}>;tag={uuid.uuid4().hex[:8]}\r\n"
        f"To: <sip:{to_user}@127.0.0.1:{target_port}>\r\n"
        f"Call-ID: {call_id or uuid.uuid4().hex}\r\n"
        "CSeq: 1 INVITE\r\n"
        f"Contact: <sip:{from_user}@{via};transport={transport.lower()}>\r\n"
        "Max-Forwards: 70\r\n"
        f"{extra}"
        "Content-Type: application/sdp\r\n"
        f"Content-Length: {len(sdp)}\r\n\r\n"
    )
    return head.encode() + sdp


def status_of(data: bytes) -> int:
    """The status code of a response's bytes (0 if not a response)."""
    first = data.split(b"\r\n", 1)[0].split()
    return int(first[1]) if len(first) > 1 and first[0].startswith(b"SIP/") else 0


class UdpProbe(asyncio.DatagramProtocol):
    """A UDP socket on 127.0.0.1 that keeps every datagram it receives."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None
        self.arrived = asyncio.Event()

    @classmethod
    async def open(cls, port: int = 0, host: str = "127.0.0.1") -> UdpProbe:
        probe = cls()
        await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: probe, local_addr=(host, port)
        )
        return probe

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.append(data)
        self.arrived.set()

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def send(self, data: bytes, port: int) -> None:
        assert self.transport is not None
        self.transport.sendto(data, ("127.0.0.1", port))

    def statuses(self) -> list[int]:
        return [status_of(d) for d in self.received]

    async def wait_for(self, predicate: Callable[[], bool], seconds: float = 5.0) -> None:
        async with asyncio.timeout(seconds):
            while not predicate():
                self.arrived.clear()
                await self.arrived.wait()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def read_responses(
    reader: asyncio.StreamReader, until: Callable[[list[int]], bool], seconds: float = 5.0
) -> list[int]:
    """Statuses of the SIP responses read from a TCP stream until ``until`` holds."""
    statuses: list[int] = []
    async with asyncio.timeout(seconds):
        while not until(statuses):
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() in (b"content-length", b"l"):
                    length = int(value.strip())
            if length:
                await reader.readexactly(length)
            statuses.append(status_of(head))
    return statuses
