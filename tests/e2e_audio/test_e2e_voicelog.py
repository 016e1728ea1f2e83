"""Voice logging on the real ``sip`` switch with baresip phones: what the logger wrote is what
was said (docs/service.md, "Voice logging").

* A call to a dispatcher position: the position's recording holds both phones' tones — the
  position's own (what it says) and the caller's (what it hears) — and nothing else; its
  SHA-256 is the file's.
* A PTT group: each talk burst is its own recording, stored with its talker, and holds that
  talker's tone only.

The service runs whole (store, journal, numbering plan, voice logger) over a ``SipSwitch`` on
loopback; the phones dial and press keys themselves.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import sqlalchemy as sa
from argon2 import PasswordHasher

from _rigs.audio import (
    ALICE,
    AMPLITUDE,
    BOB,
    CANDIDATES,
    DISP,
    FRAME,
    RATE,
    TONES,
    Phones,
    Timeline,
    baresip_phones,
    read_wav,
)
from _rigs.sip import Rig, U, rtp_range, wait_until
from baton.core.events import Event
from baton.flows.ptt.events import FloorGranted, FloorIdle
from baton.service.config import parse_config
from baton.service.runtime import Service
from baton.service.store.tables import recordings
from baton.service.voicelog.service import RecordingStarted
from baton.switch.media import analysis
from baton.switch.sip import create_switch

pytestmark = [pytest.mark.realtime, pytest.mark.e2e]

A, B, D = TONES["alice"], TONES["bob"], TONES["disp"]
#: Cheap argon2 parameters: the service hashes every user's password at start.
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
USERS = [ALICE, BOB, DISP]


def _user(u: U, role: str) -> dict[str, Any]:
    return {"id": u.id, "numbers": list(u.numbers), "password": u.password, "role": role}


@contextlib.asynccontextmanager
async def centre(tmp_path: Path, **recording: Any) -> AsyncIterator[tuple[Service, Rig]]:
    """The service on a SIP switch: alice and bob field units, disp a dispatcher position,
    the PTT group ``north`` (all three) on 802."""
    config = parse_config(
        {
            "database": f"sqlite+aiosqlite:///{tmp_path / 'baton.db'}",
            "recordings": str(tmp_path / "recordings"),
            "recording": recording,
            "users": [_user(ALICE, "field"), _user(BOB, "field"), _user(DISP, "dispatcher")],
            "groups": [
                {"id": "north", "members": ["alice", "bob", "disp"], "number": "802", "mode": "ptt"}
            ],
        },
        "e2e",
    )
    table = {"listen": ["udp:127.0.0.1:0"], "rtp_ports": rtp_range(), "rtp_timeout": 0}
    switch = create_switch(table, USERS)
    svc = Service(config, switch=switch, hasher=FAST_HASHER)
    await svc.start()
    try:
        yield svc, Rig(switch, svc.manager, USERS)
    finally:
        await svc.stop()


async def recorded(svc: Service, n: int) -> list[dict[str, Any]]:
    """The voice log's rows once ``n`` recordings were closed."""
    await wait_until(lambda: svc.voicelog.counts.completed >= n, 15)
    await svc.journal.sync()
    async with svc.store.read() as conn:
        result = await conn.execute(sa.select(recordings).order_by(recordings.c.id))
        return [dict(r._mapping) for r in result]


def middle(path: str, lead: float, tail: float) -> npt.NDArray[np.int16]:
    """The recording without its first ``lead`` and last ``tail`` seconds (set-up, tones)."""
    pcm = read_wav(Path(path))
    return pcm[round(lead * RATE) : len(pcm) - round(tail * RATE)]


def sha256(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def packets_in(r: Rig, user: str) -> int:
    """RTP packets the engine has received from ``user``'s phone on its call (0: no call)."""
    leg = r.switch.leg_of(user)
    return 0 if leg is None else r.switch.media.leg_stats(leg).packets_in


def floor(kind: type[Event], user: str | None = None) -> Callable[[Event], bool]:
    return lambda e: isinstance(e, kind) and (user is None or getattr(e, "user", None) == user)


async def hang_up_all(r: Rig, phones: Phones) -> None:
    for p in phones.by_user.values():
        if p.saw("CALL_ESTABLISHED"):
            p.command("hangup")
    await wait_until(lambda: all(r.switch.leg_of(u.id) is None for u in USERS), 15)


async def test_a_positions_recorded_call_holds_both_parties(tmp_path: Path) -> None:
    async with centre(tmp_path) as (svc, r), baresip_phones(r, USERS, tmp_path) as phones:
        tl = Timeline(r)
        tl.mark_on("recording", lambda e: isinstance(e, RecordingStarted) and e.user == "disp")
        phones["alice"].command("dial", f"sip:{DISP.numbers[0]}@127.0.0.1:{r.udp_port}")
        await wait_until(lambda: svc.manager.state_of(r.user("alice")) == "talking", 15)
        await tl.wait("recording", 15)
        # Measured from when alice's audio reaches the engine, not a fixed time after the
        # answer: on a loaded machine her phone starts sending later than that.
        await wait_until(lambda: packets_in(r, "alice") >= 10, 15)
        heard = tl.mark("alice heard")
        await tl.run_for("disp", 3.0)
        phones["alice"].command("hangup")
        (rec,) = await recorded(svc, 1)
    assert (rec["kind"], rec["user_id"], rec["status"]) == ("call", "disp", "ok")
    assert rec["reasons"] == ["position"]
    assert rec["sha256"] == sha256(rec["path"])
    assert rec["seconds"] >= 3.0
    # The position's leg: what disp says (its tone) and what it hears (alice's), from a
    # little after alice's audio arrived (the recording's frames go with disp's packets):
    # both at their level overall, both tones in every half second and no other (checked
    # piecewise, as the talk bursts are: on a busy machine a phone's late packet breaks its
    # tone's phase, which smears one long spectrum, and a starved phone sends a gap now and
    # then — neither is what the recording is checked for; an absent party is under 5 %).
    lead = (heard.sent["disp"] - tl.moments["recording"].sent.get("disp", 0)) * FRAME / RATE
    pcm = middle(rec["path"], lead + 0.3, 0.3)
    assert len(pcm) >= 2 * RATE
    assert analysis.rms(pcm) > 0.8 * AMPLITUDE, analysis.rms(pcm)  # two tones' worth
    for i in range(0, len(pcm) - RATE // 2 + 1, RATE // 2):
        found = analysis.sine_amplitudes(pcm[i : i + RATE // 2], CANDIDATES, tolerance=8.0)
        assert found[D] > 0.3 * AMPLITUDE and found[A] > 0.3 * AMPLITUDE, (i / RATE, found)
        others = {f: a for f, a in found.items() if f not in (A, D)}
        assert max(others.values()) < 0.05 * AMPLITUDE, (i / RATE, found)


async def test_each_talk_burst_is_recorded_with_its_talker(tmp_path: Path) -> None:
    async with (
        centre(tmp_path, positions=False) as (svc, r),
        baresip_phones(r, USERS, tmp_path) as phones,
    ):
        tl = Timeline(r)
        phones["alice"].command("dial", f"sip:802@127.0.0.1:{r.udp_port}")
        m = svc.manager
        await wait_until(lambda: all(m.rec(r.user(u.id)).meeting for u in USERS), 15)
        for talker in ("alice", "bob"):
            tl.mark_on(talker, floor(FloorGranted, talker))
            phones.press(talker, "*")
            await tl.wait(talker)
            await tl.run_for("disp", 2.5)
            tl.mark_on(f"{talker} done", floor(FloorIdle))
            phones.press(talker, "#")
            await tl.wait(f"{talker} done")
        recs = await recorded(svc, 2)
        await hang_up_all(r, phones)
    assert [(x["kind"], x["talker"], x["ptt_group"]) for x in recs] == [
        ("ptt", "alice", "north"),
        ("ptt", "bob", "north"),
    ]
    for rec, tone in zip(recs, (A, B), strict=True):
        assert rec["status"] == "ok" and rec["sha256"] == sha256(rec["path"])
        assert 2.0 <= rec["seconds"] < 6.0
        # After the talk-permit tone, only the talker is in the burst's recording: the whole
        # window at the talker's level, and the talker's tone alone in every half second of it
        # (checked piecewise, so one late packet on a busy machine is not read as a mix).
        pcm = middle(rec["path"], 0.6, 0.3)
        assert analysis.rms(pcm) > 0.8 * AMPLITUDE / np.sqrt(2)
        for i in range(0, len(pcm) - RATE // 2 + 1, RATE // 2):
            window = pcm[i : i + RATE // 2]
            found = analysis.sine_amplitudes(window, CANDIDATES, tolerance=8.0)
            assert found[tone] > 0.5 * AMPLITUDE, (rec["talker"], i / RATE, found)
            others = {f: a for f, a in found.items() if f != tone}
            assert max(others.values()) < 0.05 * AMPLITUDE, (rec["talker"], i / RATE, found)
