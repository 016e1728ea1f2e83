"""After ``kill -9`` (issue 14, finding 10): the run's heartbeat dates the crash, so the next
start closes the dead run's records at that time with ``crash`` — not at each record's last
event — and hands the switch the calls the dead run left, to end them."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from _rigs.sip import free_port, rtp_range
from baton.flows import call
from baton.service.config import parse_config
from baton.service.runtime import Service
from baton.service.store.records import LegFilter, list_flows, list_legs
from baton.service.store.tables import runs
from baton.service.switches import DialogKeeper
from baton.switch.sim import SimSwitch, answers
from baton.switch.sip import Request, SipSwitch, make_response, parse_message

from .helpers import FAST_HASHER, config_data, crash, eventually, make_config

pytestmark = pytest.mark.realtime


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class KeepingSwitch(SimSwitch):
    """A sim switch that keeps its calls like a SIP switch keeps dialogs."""

    ended: list[Any]

    def dialogs(self) -> list[Any]:
        return [{"call_id": f"{u}@sim"} for u in sorted(self.phones) if u == "unit1"]

    async def end_dialogs(self, dialogs: list[Any]) -> int:
        type(self).ended = [*getattr(type(self), "ended", []), *dialogs]
        return len(dialogs)


def _service(tmp_path: Path, clock: Clock) -> Service:
    config = make_config(tmp_path)
    switch = KeepingSwitch(default=answers(0.05))
    for u in config.users:
        switch.add_phone(u.id)
    return Service(config, switch=switch, hasher=FAST_HASHER, wallclock=clock, heartbeat=0.02)


async def _heartbeat(svc: Service) -> float | None:
    async with svc.store.read() as conn:
        value = await conn.scalar(sa.select(runs.c.heartbeat_at).where(runs.c.id == svc.run_id))
    return None if value is None else float(value)


async def test_records_of_a_crashed_run_end_at_its_last_heartbeat(tmp_path: Path) -> None:
    assert isinstance(KeepingSwitch(), DialogKeeper)
    clock = Clock()
    svc = _service(tmp_path, clock)
    await svc.start()
    m = svc.manager
    flow = m.start(call, m.user("disp1"), m.user("unit1"))
    await flow.wait()
    await eventually(lambda: m.state_of(m.user("unit1")) == "talking")
    await svc.journal.sync()
    talking_since = clock.now
    # 19 s of quiet talk: no event, only heartbeats.
    clock.now += 19
    await eventually(lambda: _is(svc, clock.now), what="a heartbeat at the new time")
    crashed_at = clock.now
    await crash(svc)

    clock.now += 60  # the restart comes a minute later
    again = _service(tmp_path, clock)
    await again.start()
    try:
        async with again.store.read() as conn:
            legs = await list_legs(conn, LegFilter(user="unit1"))
            flows = await list_flows(conn, name="call")
            states = [
                (r.end_reason, r.ended_at)
                for r in await conn.execute(sa.select(runs).order_by(runs.c.id))
            ]
        (leg,) = [r for r in legs if r["run_id"] == svc.run_id]
        # Before: the record ended at its last event (talking_since), 19 s early.
        assert leg["end_reason"] == "crash" and leg["ended_at"] == crashed_at
        assert leg["ended_at"] - talking_since == 19
        assert states[0] == ("crashed", crashed_at) and states[1] == (None, None)
        assert all(f["ended_at"] is not None for f in flows)
        # The calls the dead run left were handed to the switch to end, once.
        assert KeepingSwitch.ended == [{"call_id": "unit1@sim"}]
    finally:
        await again.stop()
    third = _service(tmp_path, clock)
    await third.start()
    await third.stop()
    assert KeepingSwitch.ended == [{"call_id": "unit1@sim"}]


async def _is(svc: Service, at: float) -> bool:
    return await _heartbeat(svc) == at


class Phone(asyncio.DatagramProtocol):
    """A raw UDP phone at a static contact: answers an INVITE 200 (with SDP), ACKs nothing
    (Baton does), answers a BYE 200, and keeps what it received."""

    def __init__(self) -> None:
        self.received: list[Request] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        message = parse_message(data)
        if not isinstance(message, Request) or self.transport is None:
            return
        self.received.append(message)
        if message.method in ("INVITE", "BYE"):
            sdp = (
                b"v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                b"m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
            )
            port = self.transport.get_extra_info("sockname")[1]
            headers = [("Contact", f"<sip:phone@127.0.0.1:{port}>"),
                       ("Content-Type", "application/sdp")]  # fmt: skip
            ok = (
                make_response(message, 200, to_tag="ph", body=sdp, headers=headers)
                if message.method == "INVITE"
                else make_response(message, 200)
            )
            self.transport.sendto(ok.to_bytes(), addr)

    def requests(self, method: str) -> list[Request]:
        return [m for m in self.received if m.method == method]


async def test_the_phones_of_a_crashed_runs_sip_call_get_a_bye(tmp_path: Path) -> None:
    """The whole path on the SIP switch: the heartbeat journals the dialogs, the next start
    BYEs them (docs/sip.md, "After a crash")."""
    loop = asyncio.get_running_loop()
    sip_port = free_port()
    phones: dict[str, Phone] = {}
    data = config_data(tmp_path)
    data.update(switch="sip", sip={"listen": [f"udp:127.0.0.1:{sip_port}"],
                                   "rtp_ports": rtp_range(), "rtp_timeout": 0})  # fmt: skip
    data.pop("sim", None)
    for user in data["users"]:
        if user["id"] in ("disp1", "unit1"):
            phone = Phone()
            await loop.create_datagram_endpoint(lambda p=phone: p, local_addr=("127.0.0.1", 0))
            assert phone.transport is not None
            port = phone.transport.get_extra_info("sockname")[1]
            user["contact"] = f"sip:{user['id']}@127.0.0.1:{port}"
            user.pop("sim", None)
            phones[user["id"]] = phone
    config = parse_config(data, "test")
    try:
        svc = Service(config, hasher=FAST_HASHER, heartbeat=0.02)
        await svc.start()
        switch = svc.switch
        assert isinstance(switch, SipSwitch)
        m = svc.manager
        m.start(call, m.user("unit1"), m.user("disp1"))
        await eventually(lambda: m.state_of(m.user("disp1")) == "talking", what="talking")
        # Both calls' dialogs (not the first one alone, on a loaded machine) in a heartbeat.
        await eventually(lambda: _has_dialogs(svc, len(phones)), what="both dialogs in a heartbeat")
        invites = {u: p.requests("INVITE")[0] for u, p in phones.items()}
        await switch.transport.close()  # the process dies: nothing more goes on the wire
        await crash(svc)
        await switch.close()
        assert all(p.requests("BYE") == [] for p in phones.values())

        again = Service(config, hasher=FAST_HASHER, heartbeat=0.02)
        await again.start()
        try:
            await eventually(lambda: all(p.requests("BYE") for p in phones.values()),
                             what="a BYE at each phone")  # fmt: skip
        finally:
            await again.stop()
        for user, phone in phones.items():
            (bye,) = phone.requests("BYE")
            invite = invites[user]
            assert bye.call_id == invite.call_id
            assert bye.from_.tag == invite.from_.tag and bye.to.tag == "ph"
    finally:
        for phone in phones.values():
            if phone.transport is not None:
                phone.transport.close()


async def _has_dialogs(svc: Service, n: int) -> bool:
    return await _journaled_dialogs(svc) >= n


async def _journaled_dialogs(svc: Service) -> int:
    async with svc.store.read() as conn:
        value = await conn.scalar(sa.select(runs.c.dialogs).where(runs.c.id == svc.run_id))
    return len(value or [])
