"""Fake phones for the engine tests: plain asyncio UDP endpoints that send a G.711 tone every
20 ms and keep every packet they receive."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from typing import cast

import numpy as np

from baton.switch.media import analysis, g711, rtp


class FakePhone(asyncio.DatagramProtocol):
    """Sends ``freq`` Hz as ``codec`` RTP to ``target`` once :meth:`start_sending` is called."""

    def __init__(self, freq: float, *, codec: str = "PCMU", amp: float = 6000.0) -> None:
        self.freq = freq
        self.codec = codec
        self.pt = 0 if codec == "PCMU" else 8
        self.amp = amp
        self.received: list[tuple[tuple[str, int], rtp.RtpPacket]] = []
        self.sent: list[bytes] = []  # audio payloads, in send order
        self.raw: list[bytes] = []  # every datagram received, as it came
        self.transport: asyncio.DatagramTransport | None = None
        self.ssrc = random.getrandbits(32)
        self.seq = random.getrandbits(16)
        self.ts = random.getrandbits(32)
        self._n = 0
        self._task: asyncio.Task[None] | None = None
        self.target: tuple[str, int] | None = None

    # ---- asyncio protocol
    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.raw.append(data)
        if rtp.is_rtcp(data):
            return
        with contextlib.suppress(rtp.RtpError):
            self.received.append((addr, rtp.parse(data)))

    @classmethod
    async def open(cls, freq: float, *, port: int = 0, **kw: object) -> FakePhone:
        loop = asyncio.get_running_loop()
        phone = cls(freq, **kw)  # type: ignore[arg-type]
        await loop.create_datagram_endpoint(lambda: phone, local_addr=("127.0.0.1", port))
        return phone

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    @property
    def address(self) -> tuple[str, int]:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return host, port

    # ---- sending
    def frame(self) -> bytes:
        t = (np.arange(160) + self._n) / 8000
        self._n += 160
        pcm = (self.amp * np.sin(2 * np.pi * self.freq * t)).astype(np.int16)
        return g711.ulaw_encode(pcm) if self.codec == "PCMU" else g711.alaw_encode(pcm)

    def send(
        self, payload: bytes, *, pt: int | None = None, marker: bool = False, ts: int | None = None
    ) -> None:
        assert self.transport is not None and self.target is not None
        self.seq = (self.seq + 1) & 0xFFFF
        packet = rtp.RtpPacket(
            self.pt if pt is None else pt,
            self.seq,
            self.ts if ts is None else ts,
            self.ssrc,
            payload,
            marker=marker,
        )
        self.transport.sendto(packet.to_bytes(), self.target)

    def send_frame(self) -> None:
        payload = self.frame()
        self.sent.append(payload)
        self.send(payload)
        self.ts = (self.ts + 160) & 0xFFFFFFFF

    def start_sending(self, target: tuple[str, int], *, count: int | None = None) -> None:
        self.target = target
        self._task = asyncio.get_running_loop().create_task(self._run(count))

    async def _run(self, count: int | None) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        n = 0
        while count is None or n < count:
            self.send_frame()
            n += 1
            await asyncio.sleep(max(0.0, start + n * 0.02 - loop.time()))

    async def stop_sending(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def close(self) -> None:
        await self.stop_sending()
        if self.transport is not None:
            self.transport.close()

    # ---- what it heard
    def audio(self, pt: int | None = None) -> list[rtp.RtpPacket]:
        want = self.pt if pt is None else pt
        return [p for _, p in self.received if p.payload_type == want]

    def heard(self, last: int | None = None) -> np.ndarray:
        """Decoded audio received (in arrival order), the last ``last`` packets."""
        packets = self.audio()[-last:] if last else self.audio()
        return analysis.decode(b"".join(p.payload for p in packets), self.codec)

    def tones(self, candidates: list[float], last: int = 25) -> set[float]:
        return analysis.tones_heard(self.heard(last), candidates)


async def until(predicate: Callable[[], bool], within: float = 5.0, what: str = "") -> None:
    """Wait (polling every 10 ms) until ``predicate()`` holds; fail after ``within`` seconds."""
    try:
        async with asyncio.timeout(within):
            # Polling on purpose: the conditions are about packets that arrived, which no
            # asyncio.Event announces; the timeout bounds the wait.
            while not predicate():  # noqa: ASYNC110
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what or predicate}") from None
