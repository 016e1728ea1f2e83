"""The dispatcher queue on real phones: baresip callers dial the dispatcher number of a service
on the ``sip`` switch, baresip positions are offered the calls (docs/service.md, "Positions";
docs/flows.md, "queued_call / take_call"). A caller is never dropped by the queue: a caller
hanging up while a position rings stops the ringing; a position whose phone vanishes while it
rings (the dispatcher's browser or softphone closed) passes the call on; an emergency call
takes a busy position, its other party told."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from _rigs.audio import TONES, write_tone
from _rigs.sip import Baresip, rtp_range, wait_until
from baton.core import Priority
from baton.flows import call
from baton.flows.queue import DispatcherQueue
from baton.service.config import parse_config
from baton.service.runtime import Service
from baton.switch.sip import SipSwitch
from service.helpers import FAST_HASHER

pytestmark = [pytest.mark.realtime, pytest.mark.e2e]

USERS = {"disp1": "dispatcher", "disp2": "dispatcher", "unit1": "field", "unit2": "field"}
NUMBERS = {"disp1": "2001", "disp2": "2002", "unit1": "1001", "unit2": "1002"}


def queue(svc: Service) -> DispatcherQueue:
    q = svc.queue()
    assert q is not None
    return q


@contextlib.asynccontextmanager
async def centre(tmp_path: Path, **dispatch: Any) -> AsyncIterator[tuple[Service, SipSwitch]]:
    config = parse_config(
        {
            "switch": "sip",
            "database": f"sqlite+aiosqlite:///{tmp_path / 'baton.db'}",
            "recordings": str(tmp_path / "recordings"),
            "recording": {"positions": False, "ptt": False, "emergencies": False},
            "sip": {"listen": ["udp:127.0.0.1:0"], "rtp_ports": rtp_range(), "rtp_timeout": 0},
            "dispatch": {"number": "100", "emergency_number": "112", **dispatch},
            "users": [
                {"id": u, "number": NUMBERS[u], "password": f"{u}-pw", "role": role}
                for u, role in USERS.items()
            ],
        },
        "test",
    )
    service = Service(config, hasher=FAST_HASHER, grace=1.0)
    switch = service.switch
    assert isinstance(switch, SipSwitch)
    await service.start()
    try:
        await switch.start()
        yield service, switch
    finally:
        await service.stop()


@contextlib.asynccontextmanager
async def phones(
    switch: SipSwitch, home: Path, *users: str, auto: bool = False
) -> AsyncIterator[dict[str, Baresip]]:
    """One registered baresip per user; the positions' phones ring (no auto-answer) unless
    ``auto``."""
    port = switch.transport.address("udp").port
    out: dict[str, Baresip] = {}
    try:
        for u in users:
            tone = write_tone(home / f"{u}-tone.wav", TONES[list(TONES)[len(out)]])
            out[u] = Baresip(
                home / u, u, f"{u}-pw", port, tone=tone, auto_answer=auto or USERS[u] == "field"
            )
        for p in out.values():
            await p.start()
        await wait_until(lambda: all(switch.registered(u) for u in users), 15)
        yield out
    finally:
        for p in out.values():
            await p.aclose()


async def test_a_caller_hanging_up_while_a_position_rings_stops_the_ringing(
    tmp_path: Path,
) -> None:
    async with centre(tmp_path) as (svc, switch), phones(switch, tmp_path, "disp1", "unit1") as ph:
        port = switch.transport.address("udp").port
        ph["unit1"].command("dial", f"sip:100@127.0.0.1:{port}")
        await wait_until(lambda: ph["disp1"].saw("CALL_INCOMING"), 15)
        assert [e.caller.id for e in queue(svc).callers()] == ["unit1"]
        ph["unit1"].command("hangup")
        await wait_until(lambda: ph["disp1"].saw("CALL_CLOSED"), 15)
        await wait_until(lambda: not switch.legs, 15)
        figures = queue(svc).snapshot()
        assert (figures.waiting, figures.abandoned, figures.answered) == (0, 1, 0)


async def test_a_position_whose_phone_vanishes_while_it_rings_passes_the_call_on(
    tmp_path: Path,
) -> None:
    async with (
        centre(tmp_path, ring_timeout=3, retry_after=30) as (svc, switch),
        phones(switch, tmp_path, "disp1", "disp2", "unit1") as ph,
    ):
        port = switch.transport.address("udp").port
        svc.positions.set("disp2", "not_ready", reason="break")  # the offer goes to disp1
        ph["unit1"].command("dial", f"sip:100@127.0.0.1:{port}")
        await wait_until(lambda: ph["disp1"].saw("CALL_INCOMING"), 15)
        await ph["disp1"].aclose()  # the dispatcher's softphone is gone, mid-ring
        svc.positions.set("disp2", "ready")
        await wait_until(lambda: ph["disp2"].saw("CALL_INCOMING"), 30)
        ph["disp2"].command("accept")
        await wait_until(lambda: ph["disp2"].saw("CALL_ESTABLISHED"), 15)
        unit1, disp2 = svc.manager.user("unit1"), svc.manager.user("disp2")
        await wait_until(lambda: svc.manager.callinfo_of(unit1) is not None, 15)
        assert svc.manager.callinfo_of(unit1) is svc.manager.callinfo_of(disp2)
        assert not ph["unit1"].saw("CALL_CLOSED")  # the caller was never dropped
        assert queue(svc).snapshot().answered == 1


async def test_an_emergency_call_takes_a_busy_position_and_the_other_party_is_told(
    tmp_path: Path,
) -> None:
    # docs/service.md, numbering plan: the emergency number preempts whatever a dispatcher is
    # doing. disp1 talks with unit2 (a routine call); unit1 dials 112: unit2's call ends with
    # a BYE, unit1 talks to disp1 and is never dropped.
    async with (
        centre(tmp_path) as (svc, switch),
        phones(switch, tmp_path, "disp1", "unit1", "unit2", auto=True) as ph,
    ):
        port = switch.transport.address("udp").port
        m = svc.manager
        flow = m.start(call, m.user("disp1"), m.user("unit2"))
        await flow.result()
        await wait_until(lambda: ph["unit2"].saw("CALL_ESTABLISHED"), 15)
        ph["unit1"].command("dial", f"sip:112@127.0.0.1:{port}")
        await wait_until(lambda: ph["unit2"].saw("CALL_CLOSED"), 15)
        unit1, disp1 = m.user("unit1"), m.user("disp1")
        await wait_until(lambda: m.owner_of(unit1) is not None
                         and m.owner_of(unit1) is m.owner_of(disp1)
                         and m.state_of(unit1) == "talking", 15)  # fmt: skip
        owner = m.owner_of(unit1)
        assert owner is not None and owner.priority == Priority.EMERGENCY
        assert m.owner_of(disp1) is owner
        assert not ph["unit1"].saw("CALL_CLOSED")
