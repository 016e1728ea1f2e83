"""After ``kill -9`` (issue 14, finding 10): the phones of the dead run's calls stayed in them
(20 dialogs still open 60 s later) because nothing told them.

Now the SIP switch gives its confirmed dialogs as JSON-ready data (the service journals them
with each heartbeat), and a new switch on the same address sends each a BYE from them
(docs/sip.md, "After a crash"). The phone is a raw UDP socket at a static contact's address;
the crash closes the first switch's sockets before anything else, so it sends no BYE.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from sip_probe import UdpProbe, User, free_port, invite, switch_rig

from baton.core.port import InboundCall, LegAnswered
from baton.switch.sip import Request, Response, SipSwitch, make_response, parse_message

pytestmark = pytest.mark.realtime

SDP = (
    b"v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


def users(gw_port: int) -> list[User]:
    return [User("gw", ("5000",), password="gw-secret", contact=f"sip:gw@127.0.0.1:{gw_port}"),
            User("bob", ("2000",))]  # fmt: skip


def messages(probe: UdpProbe) -> list[Request | Response]:
    return [parse_message(d) for d in probe.received]


def byes(probe: UdpProbe) -> list[Request]:
    return [m for m in messages(probe) if isinstance(m, Request) and m.method == "BYE"]


async def crash(switch: SipSwitch) -> None:
    """The process dies: its sockets close first, so nothing more reaches the phone."""
    await switch.transport.close()
    await switch.close()


async def call_in(rig: Any, phone: UdpProbe) -> str:
    """The phone calls bob through Baton, Baton answers, the phone ACKs; returns the Call-ID."""
    call_id = uuid.uuid4().hex
    phone.send(invite("2000", from_user="gw", via=f"127.0.0.1:{phone.port}",
                      target_port=rig.port(), call_id=call_id), rig.port())  # fmt: skip
    await phone.wait_for(lambda: 180 in phone.statuses())
    (call,) = [e for e in rig.events if isinstance(e, InboundCall)]
    await rig.switch.answer(call.leg)
    await phone.wait_for(lambda: 200 in phone.statuses())
    ok = next(m for m in messages(phone) if isinstance(m, Response) and m.status == 200)
    ack = (
        f"ACK sip:baton@127.0.0.1:{rig.port()} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{phone.port};branch=z9hG4bK{uuid.uuid4().hex};rport\r\n"
        f"From: {ok.headers.get('From')}\r\nTo: {ok.headers.get('To')}\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    phone.send(ack.encode(), rig.port())
    return call_id


async def call_out(rig: Any, phone: UdpProbe) -> Request:
    """Baton calls the phone, which answers; returns Baton's INVITE and waits for the ACK."""
    await rig.switch.originate("out1", "gw")
    await phone.wait_for(lambda: any(isinstance(m, Request) for m in messages(phone)))
    inv = next(m for m in messages(phone) if isinstance(m, Request) and m.method == "INVITE")
    ok = make_response(inv, 200, to_tag="phone-tag", body=SDP,
                       headers=[("Contact", f"<sip:gw@127.0.0.1:{phone.port}>"),
                                ("Content-Type", "application/sdp")])  # fmt: skip
    phone.send(ok.to_bytes(), rig.port())
    await phone.wait_for(lambda: any(isinstance(m, Request) and m.method == "ACK"
                                     for m in messages(phone)))  # fmt: skip
    assert LegAnswered("out1") in rig.events
    return inv


async def bye_after_restart(port: int, gw_port: int, saved: list[Any], phone: UdpProbe) -> Request:
    """A new switch on the same address ends the saved dialogs; returns the BYE the phone got."""
    async with switch_rig(users(gw_port), sip={"listen": [f"udp:127.0.0.1:{port}"]}) as again:
        assert await again.switch.end_dialogs(saved) == 1
        await phone.wait_for(lambda: len(byes(phone)) == 1)
        bye = byes(phone)[0]
        phone.send(make_response(bye, 200).to_bytes(), port)
    return bye


async def test_a_call_in_is_ended_with_bye_after_a_crash() -> None:
    gw_port, port = free_port(), free_port()
    phone = await UdpProbe.open(gw_port)
    try:
        async with switch_rig(users(gw_port), sip={"listen": [f"udp:127.0.0.1:{port}"]}) as rig:
            call_id = await call_in(rig, phone)
            saved = json.loads(json.dumps(rig.switch.dialogs()))  # as the journal keeps it
            (dialog,) = saved
            await crash(rig.switch)
        assert byes(phone) == []
        ok = next(m for m in messages(phone) if isinstance(m, Response) and m.status == 200)

        bye = await bye_after_restart(port, gw_port, saved, phone)
        assert bye.call_id == call_id
        # Baton was the callee: its tag is the To tag of its 200, the phone's the From tag.
        assert bye.from_.tag == ok.to.tag == dialog["local_tag"]
        assert bye.to.tag == ok.from_.tag == dialog["remote_tag"]
        assert str(bye.uri) == f"sip:gw@127.0.0.1:{gw_port};transport=udp"
        assert bye.cseq.number > dialog["local_cseq"]
    finally:
        phone.close()


async def test_a_call_out_is_ended_with_bye_after_a_crash() -> None:
    gw_port, port = free_port(), free_port()
    phone = await UdpProbe.open(gw_port)
    try:
        async with switch_rig(users(gw_port), sip={"listen": [f"udp:127.0.0.1:{port}"]}) as rig:
            inv = await call_out(rig, phone)
            saved = json.loads(json.dumps(rig.switch.dialogs()))
            await crash(rig.switch)
        assert byes(phone) == []

        bye = await bye_after_restart(port, gw_port, saved, phone)
        assert bye.call_id == inv.call_id
        assert bye.from_.tag == inv.from_.tag  # Baton was the caller: its tag is the From tag
        assert bye.to.tag == "phone-tag"
        assert str(bye.uri) == f"sip:gw@127.0.0.1:{gw_port}"  # the phone's Contact
        assert bye.cseq.number > inv.cseq.number
    finally:
        phone.close()


async def test_dialogs_that_cannot_be_rebuilt_are_skipped() -> None:
    gw_port = free_port()
    async with switch_rig(users(gw_port)) as rig:
        assert rig.switch.dialogs() == []
        garbage: list[Any] = [None, {"call_id": "x"}, {"local_cseq": "1"}]
        assert await rig.switch.end_dialogs(garbage) == 0
