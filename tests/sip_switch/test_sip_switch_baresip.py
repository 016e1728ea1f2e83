"""Real softphones: baresip registers to Baton with digest and makes and takes calls through it,
with the dispatch core owning every leg (the library's ``inbound_call`` and ``call`` flows).

Each baresip sends a tone from a WAV file (aufile) and plays what it hears nowhere (aubridge);
it is driven over ctrl_tcp. Media is checked in Baton's engine: each leg's RTP arrives, and the
two legs are bridged to each other.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest
from sipswitch_helpers import Baresip, U, rig, wait_until

from baton.flows import call
from baton.switch.media import analysis

pytestmark = [pytest.mark.realtime, pytest.mark.e2e]


def tone(path: Path, freq: float, seconds: float = 5.0) -> Path:
    t = np.arange(int(8000 * seconds)) / 8000
    pcm = (8000 * np.sin(2 * np.pi * freq * t)).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(pcm.tobytes())
    return path


USERS = [
    U("alice", ("1001",), password="alice-secret"),
    U("bob", ("1002",), password="bob-secret"),
]


async def phones(tmp_path: Path, port: int) -> tuple[Baresip, Baresip]:
    alice = Baresip(tmp_path / "alice", "alice", "alice-secret", port,
                    tone=tone(tmp_path / "a.wav", 440))  # fmt: skip
    bob = Baresip(tmp_path / "bob", "bob", "bob-secret", port, tone=tone(tmp_path / "b.wav", 1000))
    return alice, bob


async def test_baresip_registers_and_calls_baresip_through_the_core(tmp_path: Path) -> None:
    async with rig(USERS) as r:
        alice, bob = await phones(tmp_path, r.udp_port)
        try:
            await alice.start()
            await bob.start()
            await wait_until(lambda: bool(r.switch.registered("alice"))
                             and bool(r.switch.registered("bob")), 15)  # fmt: skip
            # baresip's Contact user is not the AOR: it is stored, and used, as sent.
            (binding,) = r.switch.registered("alice")
            assert binding.uri.user != "alice"  # type: ignore[union-attr]
            alice.command("dial", f"sip:1002@127.0.0.1:{r.udp_port}")
            await wait_until(lambda: alice.saw("CALL_ESTABLISHED") and bob.saw("CALL_ESTABLISHED"),
                             15)  # fmt: skip
            a, b = r.switch.leg_of("alice"), r.switch.leg_of("bob")
            assert a is not None and b is not None
            await wait_until(lambda: r.switch.bridged_to(a) == b)
            assert r.manager.callinfo_of(r.user("alice")) is not None  # the core owns both
            # Audio flows both ways through the engine.
            await wait_until(lambda: r.switch.media.leg_stats(a).packets_in > 25
                             and r.switch.media.leg_stats(b).packets_in > 25)  # fmt: skip
            await wait_until(lambda: r.switch.media.leg_stats(a).packets_out > 25
                             and r.switch.media.leg_stats(b).packets_out > 25)  # fmt: skip
            # Two more seconds of conversation, then check what each phone heard.
            start = r.switch.media.leg_stats(a).packets_in
            await wait_until(lambda: r.switch.media.leg_stats(a).packets_in > start + 100)
            alice.command("hangup")
            await wait_until(lambda: bob.saw("CALL_CLOSED"), 15)
            await wait_until(lambda: not r.switch.legs)
        finally:
            await alice.aclose()
            await bob.aclose()
        assert heard(alice) == {1000.0}  # alice hears bob's tone, and only it
        assert heard(bob) == {440.0}


def heard(phone: Baresip) -> set[float]:
    """The tones in the last 1.5 s that ``phone`` decoded (its sndfile recording)."""
    (path,) = phone.heard()
    with wave.open(str(path)) as w:
        rate = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    if rate != 8000:  # resample by decimation (baresip records at the codec's rate: 8 kHz)
        pcm = pcm[:: rate // 8000]
    window = pcm[-12000:-2000]  # well inside the call, away from the hang-up
    assert analysis.rms(window) > 300, f"{phone.user} heard silence"
    return analysis.tones_heard(window, [440.0, 1000.0])


async def test_dispatcher_calls_two_baresip_phones(tmp_path: Path) -> None:
    """Baton calls out: the library's ``call`` rings alice (the dispatcher's line) then bob, and
    bridges them; bob holds and resumes; bob hangs up and Baton ends alice's call."""
    async with rig(USERS) as r:
        alice, bob = await phones(tmp_path, r.udp_port)
        try:
            await alice.start()
            await bob.start()
            await wait_until(lambda: bool(r.switch.registered("alice"))
                             and bool(r.switch.registered("bob")), 15)  # fmt: skip
            flow = r.manager.start(call, r.user("alice"), r.user("bob"))
            await flow.result()
            a, b = r.switch.leg_of("alice"), r.switch.leg_of("bob")
            assert a is not None and b is not None
            assert r.switch.bridged_to(a) == b
            await wait_until(lambda: r.switch.media.leg_stats(b).packets_in > 25)
            # bob holds and resumes (re-INVITEs): Baton answers each and stops, then restarts,
            # sending him audio; the call and the bridge stay.
            engine_leg = r.switch.media._legs[b]
            bob.command("hold")
            await wait_until(lambda: not engine_leg.sending, 15)
            bob.command("resume")
            await wait_until(lambda: engine_leg.sending, 15)
            assert r.switch.bridged_to(a) == b
            bob.command("hangup")
            await wait_until(lambda: alice.saw("CALL_CLOSED"), 15)
            await wait_until(lambda: not r.switch.legs)
        finally:
            await alice.aclose()
            await bob.aclose()
