"""Fake phones for the engine tests: plain asyncio UDP endpoints that send a tone every 20 ms
(G.711, or G.722/Opus through :mod:`baton.switch.media.wideband`) and keep every packet they
receive."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from typing import cast

import numpy as np

from baton.switch.media import analysis, g711, rtp
from baton.switch.media.wideband import WidebandCodec

_PT = {"PCMU": 0, "PCMA": 8, "G722": 9, "opus": 111}


class FakePhone(asyncio.DatagramProtocol):
    """Sends ``freq`` Hz as ``codec`` RTP to ``target`` once :meth:`start_sending` is called."""

    def __init__(
        self, freq: float, *, codec: str = "PCMU", amp: float = 6000.0, high: float | None = None
    ) -> None:
        self.freq = freq
        self.high = high  # a second tone (above 4 kHz for a wideband phone)
        self.codec = codec
        self.pt = _PT[codec]
        self.amp = amp
        self.wide = codec in ("G722", "opus")
        self.rate = 16000 if self.wide else 8000
        self.step = 960 if codec == "opus" else 160  # RTP timestamp units per 20 ms
        self._enc = WidebandCodec(codec) if self.wide else None
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
        n = self.rate // 50
        t = (np.arange(n) + self._n) / self.rate
        self._n += n
        wave = np.sin(2 * np.pi * self.freq * t)
        if self.high is not None:
            wave = (wave + np.sin(2 * np.pi * self.high * t)) / 2
        pcm = (self.amp * wave).astype(np.int16)
        if self._enc is not None:
            return self._enc.encode(pcm)
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
        self.ts = (self.ts + self.step) & 0xFFFFFFFF

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
        if self.wide:
            dec = WidebandCodec(self.codec)  # a fresh decoder: the packets are in order
            return np.concatenate([dec.decode(p.payload) for p in packets])
        return analysis.decode(b"".join(p.payload for p in packets), self.codec)

    def tones(self, candidates: list[float], last: int = 25) -> set[float]:
        return analysis.tones_heard(self.heard(last), candidates, rate=self.rate)


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
