"""A browser-like SIP user agent in Python, for tests: SIP over WebSocket (RFC 7118) with the
``websockets`` client, digest by :class:`~baton.switch.sip.digest.DigestClient`, and the media
of a real WebRTC stack (aiortc: full ICE, DTLS-SRTP, Opus) sending a tone and keeping what it
hears. It does what JsSIP does in a page, so the server side can be tested without a browser;
the browser itself is tested in ``tests/webrtc``."""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import secrets
from typing import Any

import numpy as np
import numpy.typing as npt
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from av import AudioFrame
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from baton.switch.sip.digest import DigestClient
from baton.switch.sip.message import Request, Response, parse_message

RATE = 48000


class ToneTrack(MediaStreamTrack):
    """A microphone that says one steady tone (20 ms frames at 48 kHz)."""

    kind = "audio"

    def __init__(self, freq: float, amplitude: float = 6000.0) -> None:
        super().__init__()
        self.freq = freq
        self.amplitude = amplitude
        self._n = 0
        self._start: float | None = None

    async def recv(self) -> AudioFrame:
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        due = self._start + self._n / RATE
        await asyncio.sleep(max(0.0, due - loop.time()))  # real-time pacing, like a microphone
        t = (np.arange(960) + self._n) / RATE
        pcm = (self.amplitude * np.sin(2 * np.pi * self.freq * t)).astype(np.int16)
        frame = AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self._n
        frame.time_base = fractions.Fraction(1, RATE)
        self._n += 960
        return frame


class WsPhone:
    """One registered "browser": ``register``, ``call``, ``bye``; ``heard()`` is what it got."""

    def __init__(self, url: str, user: str, password: str, host: str, tone: float) -> None:
        self.url = url
        self.user = user
        self.host = host  # Baton's address, for URIs
        self.digest = DigestClient(user, password)
        self.tone = tone
        self.ws: ClientConnection | None = None
        self.pc = RTCPeerConnection()
        self.pc.addTrack(ToneTrack(tone))
        self.frames: list[npt.NDArray[np.int16]] = []
        self.responses: asyncio.Queue[Response] = asyncio.Queue()
        self.requests: list[Request] = []
        self.instance = secrets.token_hex(4)
        self.call_id = ""
        self.cseq = 0
        self.from_tag = secrets.token_hex(4)
        self.to_header = ""
        self.remote_target = ""
        self._tasks: list[asyncio.Task[Any]] = []

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self._tasks.append(asyncio.get_running_loop().create_task(self._listen(track)))

    async def _listen(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(Exception):
            while True:
                frame = await track.recv()
                assert isinstance(frame, AudioFrame)
                pcm = frame.to_ndarray().reshape(-1)
                channels = len(frame.layout.channels)
                self.frames.append(pcm[::channels].astype(np.int16))

    def heard(self, seconds: float) -> npt.NDArray[np.int16]:
        """The last ``seconds`` of audio received (48 kHz)."""
        if not self.frames:
            return np.zeros(0, dtype=np.int16)
        pcm = np.concatenate(self.frames)
        return pcm[-int(seconds * RATE) :]

    async def start(self) -> None:
        self.ws = await connect(self.url, subprotocols=[Subprotocol("sip")])
        self._tasks.append(asyncio.get_running_loop().create_task(self._read()))

    async def _read(self) -> None:
        assert self.ws is not None
        with contextlib.suppress(Exception):
            async for data in self.ws:
                message = parse_message(data.encode() if isinstance(data, str) else data)
                if isinstance(message, Response):
                    await self.responses.put(message)
                else:
                    self.requests.append(message)
                    await self._answer_request(message)

    async def _answer_request(self, request: Request) -> None:
        if request.method in ("BYE", "OPTIONS", "INFO", "UPDATE"):
            await self._send(_response(request, 200, "OK"))

    async def _send(self, text: str) -> None:
        assert self.ws is not None
        await self.ws.send(text)

    def _request(self, method: str, uri: str, extra: str = "", body: str = "") -> str:
        self.cseq += 1
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/WSS {self.instance}.invalid;branch=z9hG4bK{secrets.token_hex(6)}",
            "Max-Forwards: 70",
            f"From: <sip:{self.user}@{self.host}>;tag={self.from_tag}",
            f"To: {self.to_header or f'<{uri}>'}",
            f"Call-ID: {self.call_id}",
            f"CSeq: {self.cseq} {method}",
            f"Contact: <sip:{self.instance}@{self.instance}.invalid;transport=ws>",
        ]
        if extra:
            lines.append(extra)
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body.encode())}")
        return "\r\n".join(lines) + "\r\n\r\n" + body

    async def _transaction(self, method: str, uri: str, body: str = "") -> Response:
        text = self._request(method, uri, body=body)
        await self._send(text)
        while True:
            response = await asyncio.wait_for(self.responses.get(), 10)
            if response.status in (401, 407):
                request = parse_message(text.encode())
                assert isinstance(request, Request)
                authorized = self.digest.authorize(request, response)
                auth = authorized.headers.get("Authorization") or ""
                text = self._request(method, uri, f"Authorization: {auth}", body)
                await self._send(text)
                continue
            if response.status >= 200:
                return response

    async def register(self) -> None:
        self.call_id = secrets.token_hex(8)
        self.to_header = f"<sip:{self.user}@{self.host}>"
        response = await self._transaction("REGISTER", f"sip:{self.host}")
        assert response.status == 200, response.status

    async def call(self, number: str) -> Response:
        """INVITE ``number`` with the WebRTC offer; on 200, ACK it and apply the answer."""
        offer = await self.pc.createOffer()
        await self.pc.setLocalDescription(offer)
        self.call_id = secrets.token_hex(8)
        self.from_tag = secrets.token_hex(4)
        self.to_header = ""
        uri = f"sip:{number}@{self.host}"
        response = await self._transaction("INVITE", uri, self.pc.localDescription.sdp)
        if response.status == 200:
            self.to_header = response.headers.get("To") or ""
            contact = response.headers.get("Contact") or ""
            self.remote_target = contact.strip().lstrip("<").split(">")[0]
            self.cseq -= 1  # the ACK has the INVITE's CSeq number
            await self._send(self._request("ACK", self.remote_target))
            answer = response.body.decode()
            await self.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        return response

    async def bye(self) -> None:
        await self._send(self._request("BYE", self.remote_target))

    async def close(self) -> None:
        await self.pc.close()
        if self.ws is not None:
            await self.ws.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _response(request: Request, status: int, reason: str) -> str:
    lines = [f"SIP/2.0 {status} {reason}"]
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        for value in request.headers.get_all(name):
            lines.append(f"{name}: {value}")
    lines.append("Content-Length: 0")
    return "\r\n".join(lines) + "\r\n\r\n"
