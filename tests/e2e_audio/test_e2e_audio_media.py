"""Playback, recording and DTMF through the whole stack, checked in what came out.

* Playback: the library's ``broadcast`` plays a WAV prompt (16 kHz, resampled by the engine) to
  members who listen only: each baresip phone hears the prompt, and nothing of the others.
* Recording: a flow records its meeting (Baton's own WAV); the file holds every speaker's tone,
  and, once a member is muted, no longer that member's.
* DTMF: SIPp keys ``1 5 9 * #`` from its RFC 4733 pcaps; a flow's ``collect`` gets ``159*``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from _rigs.audio import (
    ALICE,
    BOB,
    DISP,
    RATE,
    TONES,
    Heard,
    Moment,
    Phones,
    Timeline,
    assert_hears,
    baresip_phones,
    read_wav,
    write_tone,
)
from _rigs.sip import (
    Rig,
    U,
    free_port,
    rig,
    sipp,
    sipp_procs,
    wait_until,
)
from baton.core import Priority, Session, User, flow
from baton.core.events import Event, MediaChanged
from baton.core.port import MeetingMode, Prompt
from baton.flows import broadcast

pytestmark = [pytest.mark.realtime, pytest.mark.e2e]

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
A, B, D = TONES["alice"], TONES["bob"], TONES["disp"]
PROMPT = 1450.0  # the broadcast message's tone
CANDIDATES = (*sorted(TONES.values()), PROMPT, 440.0, 620.0, 660.0, 880.0, 1320.0)


async def end_calls(r: Rig, phones: Phones) -> None:
    await r.manager.close()
    await r.switch.close()
    called = [p for p in phones.by_user.values() if p.saw("CALL_ESTABLISHED")]
    await wait_until(lambda: all(p.saw("CALL_CLOSED") for p in called), 15)


def media_event(command: str, meeting: bool = True) -> Callable[[Event], bool]:
    def match(e: Event) -> bool:
        return (
            isinstance(e, MediaChanged)
            and e.command == command
            and (e.meeting is not None or not meeting)
        )

    return match


async def test_broadcast_plays_a_prompt_that_listeners_hear(tmp_path: Path) -> None:
    """A 16 kHz WAV prompt broadcast to alice and bob: while they wait, in listen mode, they
    hear silence (not each other, though both phones send their tones); then exactly the
    prompt's tone, at its level."""
    prompt = write_tone(tmp_path / "message.wav", PROMPT, seconds=2.0, rate=16000)
    users = [ALICE, BOB]
    async with rig(users) as r, baresip_phones(r, users, tmp_path) as phones:
        tl = Timeline(r)
        tl.mark_on("play", media_event("play"))
        tl.mark_on("done", media_event("play.done"))
        members = [r.user("alice"), r.user("bob")]
        f = r.manager.start(broadcast, members, message=Prompt(str(prompt)), gather=1.5)
        await wait_until(lambda: all(r.switch.leg_of(u) and r.switch.meeting_of(
            r.switch.leg_of(u) or "") for u in ("alice", "bob")), 15)  # fmt: skip
        tl.mark("joined")
        await tl.wait("done", 15)
        assert await f.result() == {"alice": "joined", "bob": "joined"}
        await end_calls(r, phones)
    m = tl.moments
    for user in ("alice", "bob"):
        h = Heard.of(phones[user])
        assert_hears(f"{user} (waiting)", h.between(m["joined"], m["play"]), set(),
                     candidates=CANDIDATES)  # fmt: skip
        assert_hears(f"{user} (message)", h.between(m["play"], m["done"], lead=0.2),
                     {PROMPT}, candidates=CANDIDATES)  # fmt: skip


@flow(
    priority=Priority.PRIORITY,
    commands={"mute": "a member is no longer heard (user)", "stop": "stop recording, end"},
)
async def recorded_meeting(s: Session, members: list[User], path: str) -> float:
    """A meeting of ``members`` recorded to ``path`` until ``stop``; returns the seconds
    recorded. (A test flow on the core's API: what a "record this meeting" feature is.)"""
    await s.claim(*members)
    for m in members:
        await s.dial(m)
    room = await s.meeting(*members)
    recording = await s.record(room, path)
    while True:
        cmd = await s.command()
        if cmd is None:
            continue
        if cmd.name == "mute":
            await s.join(room, s.user(str(cmd.args["user"])), MeetingMode.MUTED)
            cmd.reply("muted")
        elif cmd.name == "stop":
            await s.stop_recording(recording)
            cmd.reply(recording.seconds)
            for m in members:
                await s.hangup(m)
            return recording.seconds


async def test_meeting_recording_holds_the_speakers_tones(tmp_path: Path) -> None:
    """Baton records a three-party meeting: the WAV holds the three tones; after bob is muted,
    only disp's and alice's. The phones agree: nobody hears bob any more."""
    users = [DISP, ALICE, BOB]
    path = tmp_path / "meeting.wav"
    async with rig(users) as r, baresip_phones(r, users, tmp_path) as phones:
        tl = Timeline(r)
        tl.mark_on("recording", media_event("record"))
        members = [r.user(u.id) for u in users]
        f = r.manager.start(recorded_meeting, members, str(path))
        await tl.wait("recording", 15)
        await tl.run_for("disp", 1.5)
        await f.send("mute", user="bob")
        tl.mark("muted")
        await tl.run_for("disp", 1.5)
        tl.mark("stop")
        seconds = await f.send("stop")
        await f.result()
        await end_calls(r, phones)
    m = tl.moments
    pcm = read_wav(path)
    assert abs(len(pcm) / RATE - seconds) < 0.05
    assert abs(seconds - (m["stop"].t - m["recording"].t)) < 0.2

    def window(start: Moment, end: Moment) -> npt.NDArray[np.int16]:
        # The recording is written once per 20 ms tick from its start: time maps to samples.
        first = round((start.t - m["recording"].t + 0.3) * RATE)
        last = round((end.t - m["recording"].t - 0.2) * RATE)
        return pcm[first:last]

    everyone = window(m["recording"], m["muted"])
    without_bob = window(m["muted"], m["stop"])
    assert_hears("the recording", everyone, {D, A, B}, candidates=CANDIDATES)
    assert_hears("the recording (bob muted)", without_bob, {D, A}, candidates=CANDIDATES)
    h = {u: Heard.of(phones[u]) for u in ("disp", "alice", "bob")}
    assert_hears("alice (bob muted)", h["alice"].between(m["muted"], m["stop"]), {D})
    assert_hears("bob (muted)", h["bob"].between(m["muted"], m["stop"]), {D, A})


@flow(priority=Priority.ROUTINE)
async def dial_and_collect(s: Session, user: User) -> str:
    """Call ``user`` and collect DTMF up to ``#``; hang up."""
    await s.claim(user)
    await s.dial(user)
    digits = await s.collect(user, max_digits=10, timeout=15, terminators="#")
    await s.hangup(user)
    return digits


async def test_rfc4733_keys_from_sipp_pcaps_are_collected(tmp_path: Path) -> None:
    """Baton calls carol (SIPp); she keys 1 5 9 * # — SIPp plays its dtmf_2833 pcaps as RTP
    telephone-events; the engine detects each, the flow's ``collect`` returns ``159*`` (``#``
    ends it), and carol gets the BYE."""
    port = free_port()
    users = [U("carol", ("1005",), contact=f"sip:carol@127.0.0.1:{port}")]
    async with rig(users) as r, sipp_procs() as procs:
        phone = await sipp(
            procs,
            ["-sf", str(SCENARIOS / "uas_dtmf_keys.xml"), "-m", "1", "-mp", str(free_port())],
            tmp_path,
            port=port,
            listening=True,
        )
        f = r.manager.start(dial_and_collect, r.user("carol"))
        assert await f.result() == "159*"
        assert await phone.wait() == 0, phone.output
        assert r.switch.media.metrics.dtmf_in == 5
