"""Wideband phones through Baton: a G.711 phone, a G.722 phone and an Opus phone (three real
baresip softphones) in one meeting. Each hears the other two (an FFT of what each phone itself
decoded), and the wideband phones hear the other's tone above 4 kHz: the meeting mixed at
16 kHz and converted per leg. Their RFC 4733 key presses still reach the core.

Each phone sends a voice-band tone; the wideband phones add one above 4 kHz. The G.711 phone
must hear the two voice-band tones and nothing where the high tones would fold (8000 − f).
"""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from _rigs.audio import Timeline
from _rigs.sip import Baresip, Rig, U, rig, wait_until
from baton.core import Priority, Session, User, flow
from baton.core.events import DtmfDigit
from baton.switch.media import analysis

pytestmark = [pytest.mark.realtime, pytest.mark.e2e]

NARROW = U("narrow", ("2001",), password="narrow-pw")
G722 = U("wideg", ("2002",), password="wideg-pw")
OPUS = U("wideo", ("2003",), password="wideo-pw")
#: user → (codecs, sample rate, voice-band tone, high tone)
PHONES = {
    "narrow": ("pcmu", 8000, 500.0, None),
    "wideg": ("g722/16000/1", 16000, 780.0, 5200.0),
    "wideo": ("opus/48000/2", 16000, 1170.0, 6100.0),
}
FOLDED = [8000 - 5200.0, 8000 - 6100.0]  # where the high tones would alias at 8 kHz
CANDIDATES = [500.0, 780.0, 1170.0, 5200.0, 6100.0]
AMPLITUDE = 6000.0


def write_tones(
    path: Path, rate: int, *freqs: float, channels: int = 1, seconds: float = 30.0
) -> Path:
    t = np.arange(int(rate * seconds)) / rate
    wave_ = sum(np.sin(2 * np.pi * f * t) for f in freqs) / len(freqs)
    pcm = np.repeat((AMPLITUDE * wave_).astype("<i2"), channels)  # interleaved
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


def read(path: Path) -> tuple[npt.NDArray[np.int16], int]:
    """The first channel of a WAV, and its rate."""
    with wave.open(str(path), "rb") as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        return pcm[:: w.getnchannels()], w.getframerate()


@flow(priority=Priority.ROUTINE, commands={"stop": "end the meeting"})
async def meeting_of(s: Session, members: list[User]) -> None:
    await s.claim(*members)
    for m in members:
        await s.dial(m)
    await s.meeting(*members)
    while (cmd := await s.command()) is None or cmd.name != "stop":
        pass
    cmd.reply("stopped")
    for m in members:
        await s.hangup(m)


async def test_g711_g722_and_opus_phones_in_one_meeting(tmp_path: Path) -> None:
    users = [NARROW, G722, OPUS]
    phones: dict[str, Baresip] = {}
    async with rig(users) as r:
        try:
            for u in users:
                codecs, rate, *tones = PHONES[u.id]
                # baresip's Opus runs in stereo (opus/48000/2): its source file must be too.
                channels = 2 if codecs.startswith("opus") else 1
                tone = write_tones(
                    tmp_path / f"{u.id}.wav", rate, *(f for f in tones if f), channels=channels
                )
                phones[u.id] = Baresip(
                    tmp_path / u.id, u.id, u.password, r.udp_port, tone=tone, codecs=codecs,
                    rate=rate,
                )  # fmt: skip
            await asyncio.gather(*(p.start() for p in phones.values()))
            await wait_until(lambda: all(r.switch.registered(u.id) for u in users), 15)
            f = r.manager.start(meeting_of, [r.user(u.id) for u in users])
            await wait_until(lambda: all(p.saw("CALL_ESTABLISHED") for p in phones.values()), 15)
            await wait_until(lambda: all(in_meeting(r, u.id) for u in users), 15)
            await Timeline(r).run_for("narrow", 2.5)  # 2.5 s of audio to analyse
            # RFC 4733 keeps working on wideband legs (an Opus leg's audio clock is 48 kHz).
            phones["wideo"].command("sndcode", "5")
            phones["wideg"].command("sndcode", "7")
            await wait_until(lambda: {("wideo", "5"), ("wideg", "7")} <= digits(r), 10)
            assert await f.send("stop") == "stopped"
            await f.result()
            await wait_until(lambda: all(p.saw("CALL_CLOSED") for p in phones.values()), 15)
        finally:
            for p in phones.values():
                await p.aclose()
    heard = {}
    for user, phone in phones.items():
        (path,) = phone.heard()
        pcm, rate = read(path)
        # What the phone decoded, at its codec's rate (baresip's Opus decodes at 48 kHz).
        assert rate >= PHONES[user][1], f"{user} recorded at {rate} Hz"
        heard[user] = (pcm[int(0.8 * rate) : len(pcm) - int(0.3 * rate)], rate)

    def tones(user: str) -> set[float]:
        pcm, rate = heard[user]
        amps = analysis.sine_amplitudes(pcm, CANDIDATES + FOLDED, rate=rate, tolerance=8.0)
        print(user, {f: round(a) for f, a in amps.items()})
        return {f for f, a in amps.items() if a > 0.15 * AMPLITUDE}

    assert tones("narrow") == {780.0, 1170.0}  # and nothing folded down from 5.2 / 6.1 kHz
    assert tones("wideg") == {500.0, 1170.0, 6100.0}
    assert tones("wideo") == {500.0, 780.0, 5200.0}


def digits(r: Rig) -> set[tuple[str, str]]:
    return {(e.user, e.digit) for e in r.events if isinstance(e, DtmfDigit)}


def in_meeting(r: Rig, user: str) -> bool:
    leg = r.switch.leg_of(user)
    return leg is not None and r.switch.meeting_of(leg) is not None
