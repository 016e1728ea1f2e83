"""Who hears whom, checked in what real phones heard: baresip softphones registered to Baton,
each sending its own tone (:data:`_rigs.audio.TONES`), each recording what it decoded; library
flows run by the core on the ``sip`` switch, audio through Baton's media engine.

Each scenario is cut into phases (a two-party call, then a monitor, then the call restored…);
each phase's window of every phone's recording is checked with an FFT: exactly the expected
tones, at the level they were sent, every other tone 30 dB down, silence where nothing should
be heard. See ``_rigs.audio`` for how moments map to samples.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from _rigs.audio import (
    ALICE,
    BOB,
    BOSS,
    DISP,
    TONES,
    Heard,
    Phones,
    Timeline,
    assert_hears,
    baresip_phones,
)
from _rigs.sip import Rig, rig, wait_until
from baton.core.events import Event, LegStateChanged, MediaChanged
from baton.flows import barge_in, call, conference, emergency_call, monitor, whisper
from baton.switch.media.tones import tone_spec

pytestmark = [pytest.mark.realtime, pytest.mark.e2e]


A, B, D, X = TONES["alice"], TONES["bob"], TONES["disp"], TONES["boss"]
PHASE = 1.5  # seconds of audio per checked phase


async def end_calls(r: Rig, phones: Phones) -> None:
    """Stop every flow and the switch (BYE to every phone), and wait until every phone that had
    a call saw it closed — its recording is then complete on disk."""
    await r.manager.close()
    await r.switch.close()
    called = [p for p in phones.by_user.values() if p.saw("CALL_ESTABLISHED")]
    await wait_until(lambda: all(p.saw("CALL_CLOSED") for p in called), 15)


def heard(phones: Phones, *users: str) -> dict[str, Heard]:
    return {u: Heard.of(phones[u]) for u in users}


async def test_two_party_call_carries_each_tone_to_the_other(tmp_path: Path) -> None:
    users = [ALICE, BOB]
    async with rig(users) as r, baresip_phones(r, users, tmp_path) as phones:
        tl = Timeline(r)
        await r.manager.start(call, r.user("alice"), r.user("bob")).result()
        tl.mark("talk")
        await tl.run_for("alice", PHASE)
        tl.mark("end")
        await end_calls(r, phones)
    h = heard(phones, "alice", "bob")
    talk, end = tl.moments["talk"], tl.moments["end"]
    assert_hears("alice", h["alice"].between(talk, end), {B})
    assert_hears("bob", h["bob"].between(talk, end), {A})


async def test_three_party_meeting_each_hears_exactly_the_other_two(tmp_path: Path) -> None:
    users = [DISP, ALICE, BOB]
    async with rig(users) as r, baresip_phones(r, users, tmp_path) as phones:
        tl = Timeline(r)
        r.manager.start(conference, r.user("disp"), [r.user("alice"), r.user("bob")])
        await wait_until(lambda: in_one_meeting(r, "disp", "alice", "bob"), 15)
        tl.mark("meet")
        await tl.run_for("disp", PHASE)
        tl.mark("end")
        await end_calls(r, phones)
    h = heard(phones, "disp", "alice", "bob")
    meet, end = tl.moments["meet"], tl.moments["end"]
    assert_hears("disp", h["disp"].between(meet, end), {A, B})
    assert_hears("alice", h["alice"].between(meet, end), {D, B})
    assert_hears("bob", h["bob"].between(meet, end), {D, A})


def in_one_meeting(r: Rig, *users: str) -> bool:
    legs = [r.switch.leg_of(u) for u in users]
    if None in legs:
        return False
    meetings = {r.switch.meeting_of(leg) for leg in legs if leg is not None}
    return len(meetings) == 1 and None not in meetings


def bridged(r: Rig, a: str, b: str) -> bool:
    la, lb = r.switch.leg_of(a), r.switch.leg_of(b)
    return la is not None and lb is not None and r.switch.bridged_to(la) == lb


@pytest.mark.parametrize(
    ("flow_name", "during"),
    [
        # monitor: the dispatcher hears both parties; the parties do not hear the dispatcher
        ("monitor", {"disp": {A, B}, "alice": {B}, "bob": {A}}),
        # whisper: only the whispered-to party (alice) hears the dispatcher
        ("whisper", {"disp": {A, B}, "alice": {B, D}, "bob": {A}}),
        # barge-in: a three-way
        ("barge_in", {"disp": {A, B}, "alice": {B, D}, "bob": {A, D}}),
    ],
)
async def test_dispatcher_joins_a_two_party_call_then_leaves(
    tmp_path: Path, flow_name: str, during: dict[str, set[float]]
) -> None:
    """alice and bob talk (``call``); the dispatcher monitors, whispers to alice, or barges in;
    then leaves, and alice and bob are back to a two-way call."""
    flows = {"monitor": monitor, "whisper": whisper, "barge_in": barge_in}
    users = [DISP, ALICE, BOB]
    async with rig(users) as r, baresip_phones(r, users, tmp_path) as phones:
        tl = Timeline(r)
        await r.manager.start(call, r.user("alice"), r.user("bob")).result()
        tl.mark("two-way")
        await tl.run_for("alice", PHASE)
        f = r.manager.start(flows[flow_name], r.user("disp"), r.user("alice"))
        await wait_until(lambda: in_one_meeting(r, "disp", "alice", "bob"), 15)
        tl.mark("joined")
        await tl.run_for("disp", PHASE)
        tl.mark("leaving")
        await f.send("leave")
        await f.result()
        await wait_until(lambda: bridged(r, "alice", "bob"))
        tl.mark("restored")
        await tl.run_for("alice", PHASE)
        tl.mark("end")
        await end_calls(r, phones)
    h = heard(phones, "disp", "alice", "bob")
    m = tl.moments
    assert_hears("alice", h["alice"].between(m["two-way"], m["joined"]), {B})
    assert_hears("bob", h["bob"].between(m["two-way"], m["joined"]), {A})
    for user, tones in during.items():
        assert_hears(f"{user} ({flow_name})", h[user].between(m["joined"], m["leaving"]), tones)
    assert_hears("alice (restored)", h["alice"].between(m["restored"], m["end"]), {B})
    assert_hears("bob (restored)", h["bob"].between(m["restored"], m["end"]), {A})


async def test_emergency_preempts_a_call_partner_hears_the_preemption_tone(
    tmp_path: Path,
) -> None:
    """alice and bob talk; an emergency call from boss takes alice. bob, left alone, hears
    Baton's preemption tone (a steady 440+620 Hz, 3 s) and is then released (BYE, cause
    preempted); alice hears boss, and boss hears alice."""
    users = [ALICE, BOB, BOSS]
    ended: list[LegStateChanged] = []
    async with rig(users) as r, baresip_phones(r, users, tmp_path) as phones:
        tl = Timeline(r)
        r.manager.events.subscribe(
            lambda e: (
                ended.append(e) if isinstance(e, LegStateChanged) and e.state == "ended" else None
            )
        )
        await r.manager.start(call, r.user("alice"), r.user("bob")).result()
        tl.mark("two-way")
        await tl.run_for("alice", PHASE)
        tl.mark_on("tone", is_play_to("bob", "preemption"))
        f = r.manager.start(emergency_call, r.user("boss"), r.user("alice"))
        await wait_until(lambda: bridged(r, "alice", "boss"), 15)
        tl.mark("emergency")
        await tl.wait("tone")
        await wait_until(lambda: phones["bob"].saw("CALL_CLOSED"), 15)  # after the tone
        await tl.run_for("alice", PHASE)
        tl.mark("end")
        f.cancel()
        await end_calls(r, phones)
    h = heard(phones, "alice", "bob", "boss")
    m = tl.moments
    assert_hears("alice", h["alice"].between(m["two-way"], m["emergency"]), {B})
    assert_hears("bob", h["bob"].between(m["two-way"], m["tone"], trail=0.3), {A})
    # bob: the preemption tone from its start to his release, and nothing of alice any more.
    preemption = tone_spec("preemption")
    level = 22_680.0 * 10 ** (preemption.level_dbm0 / 20)
    assert_hears("bob (preempted)", h["bob"].between(m["tone"], None, lead=0.3, trail=0.3),
                 {440.0, 620.0}, amplitude=level)  # fmt: skip
    after_tone = (len(h["bob"].pcm) / 160 + h["bob"].lag - m["tone"].sent["bob"]) * 0.020
    assert 2.7 < after_tone < 3.6, f"bob heard {after_tone:.2f} s after the tone started"
    (bob_end,) = [e for e in ended if e.user == "bob"]
    assert bob_end.cause == "preempted"
    # alice, taken, and boss talk.
    assert_hears("alice (taken)", h["alice"].between(m["emergency"], m["end"]), {X})
    assert_hears("boss", h["boss"].between(m["emergency"], m["end"]), {A})


def is_play_to(user: str, tone: str) -> Callable[[Event], bool]:
    def match(e: Event) -> bool:
        return (
            isinstance(e, MediaChanged)
            and e.command == "play"
            and e.users == (user,)
            and tone in (e.detail or "")
        )

    return match
