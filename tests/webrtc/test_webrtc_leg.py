"""A browser's leg through Baton, with a real WebRTC stack in Python (aiortc: full ICE,
DTLS-SRTP, rtcp-mux, Opus) behind SIP over WebSocket: it registers, calls a baresip phone, and
each side hears exactly the other (an FFT of what aiortc decoded, and of baresip's recording).
To the core the browser's leg is a leg like any other: the number plan bridges it as usual."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from _rigs.audio import write_tone
from _rigs.sip import Baresip, U, rig, wait_until
from _rigs.ws_phone import RATE, WsPhone
from baton.switch.media import analysis

pytestmark = [pytest.mark.realtime, pytest.mark.e2e]

ALICE = U("alice", ("1001",), password="alice-pw")  # in the "browser"
BOB = U("bob", ("1002",), password="bob-pw")  # a baresip phone
A, B = 500.0, 780.0
CANDIDATES = [A, B, 1170.0]


async def test_a_webrtc_leg_calls_a_phone_and_each_hears_the_other(tmp_path: Path) -> None:
    listen = ("udp:127.0.0.1:0", "ws:127.0.0.1:0")
    async with rig([ALICE, BOB], listen=listen) as r:
        bob = Baresip(tmp_path / "bob", "bob", BOB.password, r.udp_port,
                      tone=write_tone(tmp_path / "bob.wav", B))  # fmt: skip
        alice = WsPhone(f"ws://127.0.0.1:{r.port('ws')}", "alice", ALICE.password, "127.0.0.1", A)
        try:
            await bob.start()
            await alice.start()
            await alice.register()
            await wait_until(lambda: bool(r.switch.registered("alice") and
                                          r.switch.registered("bob")), 15)  # fmt: skip
            response = await alice.call("1002")
            assert response.status == 200
            answer = response.body.decode()
            assert "a=ice-lite" in answer and "UDP/TLS/RTP/SAVPF" in answer
            assert "a=setup:passive" in answer and "opus/48000/2" in answer
            leg = r.switch.leg_of("alice")
            assert leg is not None
            await wait_until(lambda: r.switch.media.secure(leg), 10)  # DTLS-SRTP is up
            await wait_until(lambda: len(alice.frames) >= 150, 15)  # 3 s heard
            heard = alice.heard(1.5)
            print("alice", analysis.sine_amplitudes(heard, CANDIDATES, rate=RATE))
            assert analysis.tones_heard(heard, CANDIDATES, rate=RATE) == {B}
            await alice.bye()
            await wait_until(lambda: bob.saw("CALL_CLOSED"), 10)
        finally:
            await alice.close()
            await bob.aclose()
    (path,) = bob.heard()
    with wave.open(str(path), "rb") as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    tail = pcm[len(pcm) // 2 : len(pcm) - 2000]
    print("bob", analysis.sine_amplitudes(tail, CANDIDATES))
    assert analysis.tones_heard(tail, CANDIDATES) == {A}
