"""Push-to-talk with real phones: the floor is requested by RFC 4733 DTMF from the phones, and
what every phone heard is checked by FFT (see ``tests/_rigs/audio.py`` for the phones,
the moments and the checks).

* baresip phones (each always sending its own tone — a plain SIP phone does not stop sending
  when it is not talking, so this also proves listeners are not heard): alice presses ``*`` and
  talks, the others hear exactly her tone; the dispatcher presses ``*`` on his phone — at
  dispatcher priority — and revokes her: she hears the revoke tone, and everyone now hears him;
  he presses ``#``, everyone hears the floor-idle tone, then silence.
* a SIPp phone plays SIPp's own pcaps: ``dtmf_2833_star.pcap`` to take the floor, a pcap of its
  tone to talk, ``dtmf_2833_pound.pcap`` to release; the baresip members hear exactly its tone.
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
    BOSS,
    DISP,
    TONES,
    Heard,
    Phones,
    Timeline,
    assert_hears,
    baresip_phones,
    sine,
    tone_burst,
    write_rtp_pcap,
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
from baton.core.events import Event
from baton.flows.ptt import FloorGranted, FloorIdle, FloorReleased, FloorRevoked, ptt_group
from baton.switch.media.tones import tone_spec

pytestmark = [pytest.mark.realtime, pytest.mark.e2e]

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
A, D = TONES["alice"], TONES["disp"]
PHASE = 1.5

PTT_LEVEL = 22_680.0 * 10 ** (tone_spec("talk_permit").level_dbm0 / 20)  # the PTT tones' level


def floor(kind: type[Event], user: str | None = None) -> Callable[[Event], bool]:
    return lambda e: isinstance(e, kind) and (user is None or getattr(e, "user", None) == user)


def in_meeting(r: Rig, *users: str) -> bool:
    legs = [r.switch.leg_of(u) for u in users]
    meetings = {r.switch.meeting_of(leg) if leg else None for leg in legs}
    return len(meetings) == 1 and None not in meetings


async def end_group(r: Rig, phones: Phones) -> None:
    await r.manager.close()
    await r.switch.close()
    called = [p for p in phones.by_user.values() if p.saw("CALL_ESTABLISHED")]
    await wait_until(lambda: all(p.saw("CALL_CLOSED") for p in called), 15)


def bursts(pcm: npt.NDArray[np.int16], *freqs: float) -> dict[float, float]:
    """The strongest 60 ms burst of each frequency in ``pcm`` (a PTT tone is 100–160 ms)."""
    found = {f: round(tone_burst(pcm, f, span=0.06, hop=0.01), 1) for f in freqs}
    print("bursts", found)
    return found


async def test_dtmf_request_talk_and_dispatcher_revoke(tmp_path: Path) -> None:
    users = [ALICE, BOB, BOSS, DISP]
    revoked: list[FloorRevoked] = []
    async with rig(users) as r, baresip_phones(r, users, tmp_path) as phones:
        tl = Timeline(r)
        r.manager.events.subscribe(lambda e: revoked.append(e) if isinstance(e, FloorRevoked)
                                   else None)  # fmt: skip
        members = [r.user(u) for u in ("alice", "bob", "boss")]
        r.manager.start(ptt_group, members, dispatchers=[r.user("disp")], persistent=True)
        await wait_until(lambda: in_meeting(r, "alice", "bob", "boss", "disp"), 15)
        tl.mark("idle")
        await tl.run_for("bob", PHASE)

        tl.mark_on("alice", floor(FloorGranted, "alice"))
        phones.press("alice", "*")  # RFC 4733 from alice's phone
        await tl.wait("alice")
        await tl.run_for("bob", PHASE)

        tl.mark_on("revoked", floor(FloorRevoked, "alice"))
        tl.mark_on("disp", floor(FloorGranted, "disp"))
        phones.press("disp", "*")  # the dispatcher's request outranks a member's talk burst
        await tl.wait("disp")
        await tl.run_for("bob", PHASE)

        tl.mark_on("released", floor(FloorIdle))
        phones.press("disp", "#")
        await tl.wait("released")
        await tl.run_for("bob", 1.2)
        tl.mark("end")
        await end_group(r, phones)

    m = tl.moments
    h = {u.id: Heard.of(phones[u.id]) for u in users}
    assert [(e.user, e.by) for e in revoked] == [("alice", "disp")]
    # Floor idle: everyone's phone sends its tone, nobody is heard.
    for user in h:
        assert_hears(f"{user} (floor idle)", h[user].between(m["idle"], m["alice"]), set())
    # alice talks: the others hear exactly her; she hears the talk-permit tone, then nothing.
    for user in ("bob", "boss", "disp"):
        assert_hears(f"{user} (alice talks)", h[user].between(m["alice"], m["revoked"]), {A})
    permit = bursts(h["alice"].around(m["alice"], 0.15, 0.6), 880, 1320, 660)
    assert permit[880] > 0.5 * PTT_LEVEL and permit[1320] > 0.5 * PTT_LEVEL, permit
    assert permit[660] < 0.05 * PTT_LEVEL, permit  # not the revoke or idle tone
    assert_hears("alice (talking)", h["alice"].between(m["alice"], m["revoked"], lead=0.6), set())
    # The dispatcher takes the floor: alice hears the revoke tone (falling 1320, 880, 660 Hz),
    # then, like everyone, the dispatcher.
    revoke = bursts(h["alice"].around(m["revoked"], 0.15, 0.8), 1320, 880, 660)
    assert min(revoke.values()) > 0.5 * PTT_LEVEL, revoke
    for user in ("alice", "bob", "boss"):
        assert_hears(f"{user} (disp talks)", h[user].between(m["disp"], m["released"],
                                                             lead=0.7), {D})  # fmt: skip
    assert_hears("disp (talking)", h["disp"].between(m["disp"], m["released"], lead=0.6), set())
    # Released: the floor-idle tone (660 Hz, 120 ms) to all, then silence.
    for user in h:
        idle = bursts(h[user].around(m["released"], 0.15, 0.6), 660)
        assert idle[660] > 0.5 * PTT_LEVEL, (user, idle)
        assert_hears(f"{user} (idle again)", h[user].between(m["released"], m["end"], lead=0.5),
                     set())  # fmt: skip


async def test_sipp_phone_takes_talks_and_releases_by_its_dtmf_pcaps(tmp_path: Path) -> None:
    """carol is SIPp: added to a running group, she keys ``*`` (SIPp's dtmf_2833_star.pcap),
    talks (a pcap of her tone) and keys ``#`` (dtmf_2833_pound.pcap). alice and bob, on
    baresip, hear exactly her tone while she holds the floor."""
    talk_ms = 2500
    carol_tone = TONES["carol"]
    port = free_port()
    pcap = write_rtp_pcap(tmp_path / "carol-talk.pcap", sine(carol_tone, talk_ms / 1000))
    scenario = tmp_path / "uas_ptt_talk.xml"
    scenario.write_text((SCENARIOS / "uas_ptt_talk.xml").read_text()
                        .replace("TALK_PCAP", str(pcap)).replace("TALK_MS", str(talk_ms)))  # fmt: skip
    carol = U("carol", ("1005",), contact=f"sip:carol@127.0.0.1:{port}")
    phones_users = [ALICE, BOB]
    async with (
        rig([*phones_users, carol]) as r,
        baresip_phones(r, phones_users, tmp_path) as phones,
        sipp_procs() as procs,
    ):
        tl = Timeline(r)
        sipp_phone = await sipp(
            procs,
            ["-sf", str(scenario), "-m", "1", "-mp", str(free_port())],
            tmp_path,
            port=port,
            listening=True,
        )
        g = r.manager.start(ptt_group, [r.user("alice"), r.user("bob")], persistent=True)
        await wait_until(lambda: in_meeting(r, "alice", "bob"), 15)
        tl.mark("idle")
        await tl.run_for("bob", 1.0)
        tl.mark_on("carol", floor(FloorGranted, "carol"))
        tl.mark_on("released", floor(FloorReleased, "carol"))
        await g.send("add", user="carol")
        await tl.wait("carol", 15)
        await tl.wait("released", 15)
        await tl.run_for("bob", 1.0)
        tl.mark("end")
        await end_group(r, phones)
        assert await sipp_phone.wait() == 0, sipp_phone.output
    m = tl.moments
    for user in ("alice", "bob"):
        h = Heard.of(phones[user])
        assert_hears(f"{user} (idle)", h.between(m["idle"], m["carol"]), set())
        # carol's tone starts 200 ms after her * (the scenario's pause): lead past it
        assert_hears(f"{user} (carol talks)", h.between(m["carol"], m["released"], lead=0.5),
                     {carol_tone})  # fmt: skip
        idle = bursts(h.around(m["released"], 0.15, 0.6), 660)
        assert idle[660] > 0.5 * PTT_LEVEL, (user, idle)
        assert_hears(f"{user} (after)", h.between(m["released"], m["end"], lead=0.5), set())
