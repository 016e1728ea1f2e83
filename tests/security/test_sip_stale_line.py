"""Stale lines (issue 14, finding 9): a user whose phone died mid-call was refused (486) for
``rtp_timeout`` (30.8 s measured; with ``rtp_timeout = 0``, the session timer's 1,800 s), and a
new REGISTER or INVITE from the user did not free the line.

Now a new INVITE or REGISTER from a user whose call has gone quiet probes the old dialog with
an in-dialog OPTIONS; a 481 or no answer frees the line within 2 s (docs/sip.md, "Stale
lines"). The phone here is a raw UDP socket that plays a phone which rebooted.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from sip_probe import UdpProbe, User, free_port, invite, switch_rig

from baton.core.port import Cause, InboundCall, LegEnded
from baton.switch.sip import DigestClient, Request, Response, make_response, parse_message

pytestmark = pytest.mark.realtime


class Phone:
    """A phone at a static contact's address that calls in and answers what Baton sends."""

    def __init__(self, probe: UdpProbe, baton_port: int) -> None:
        self.probe = probe
        self.baton = baton_port
        self.answer_options: int | None = 481  # None: a dead phone, silent
        self.options_seen = 0
        self.served = 0  # messages received and looked at by serve()

    def messages(self) -> list[Request | Response]:
        return [parse_message(d) for d in self.probe.received]

    async def call(self, number: str = "2000") -> str:
        """INVITE ``number``; returns the Call-ID once Baton answered 180 (answering Baton's
        requests meanwhile)."""
        call_id = uuid.uuid4().hex
        self.probe.send(invite(number, from_user="gw", via=f"127.0.0.1:{self.probe.port}",
                               target_port=self.baton, call_id=call_id), self.baton)  # fmt: skip
        await serve_until(self, lambda: self._got(call_id, 180))
        return call_id

    def _got(self, call_id: str, status: int) -> bool:
        return any(isinstance(m, Response) and m.call_id == call_id and m.status == status
                   for m in self.messages())  # fmt: skip

    async def ack_200(self, call_id: str) -> None:
        await self.probe.wait_for(lambda: self._got(call_id, 200))
        ok = next(m for m in self.messages()
                  if isinstance(m, Response) and m.call_id == call_id and m.status == 200)  # fmt: skip
        ack = (
            f"ACK sip:baton@127.0.0.1:{self.baton} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.probe.port};branch=z9hG4bK{uuid.uuid4().hex};rport\r\n"
            f"From: {ok.headers.get('From')}\r\nTo: {ok.headers.get('To')}\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        self.probe.send(ack.encode(), self.baton)

    def serve(self) -> None:
        """Answer Baton's in-dialog requests as configured (called for each arrival)."""
        for data in self.probe.received[self.served :]:
            message = parse_message(data)
            if isinstance(message, Request) and message.method in ("OPTIONS", "BYE"):
                if message.method == "OPTIONS":
                    self.options_seen += 1
                    if self.answer_options is None:
                        continue
                    status = self.answer_options
                else:
                    status = 481
                self.probe.send(make_response(message, status).to_bytes(), self.baton)
        self.served = len(self.probe.received)


async def connected_call(rig: object, phone: Phone) -> str:
    """The phone calls in; Baton answers; returns the leg id."""
    await phone.call()
    (call,) = [e for e in rig.events if isinstance(e, InboundCall)]  # type: ignore[attr-defined]
    await rig.switch.answer(call.leg)  # type: ignore[attr-defined]
    call_id = [m for m in phone.messages() if isinstance(m, Response)][-1].call_id
    await phone.ack_200(call_id)
    return call.leg


async def serve_until(phone: Phone, predicate: object, seconds: float = 5.0) -> None:
    async with asyncio.timeout(seconds):
        while not predicate():  # type: ignore[operator]
            phone.serve()
            phone.probe.arrived.clear()
            try:
                async with asyncio.timeout(0.05):
                    await phone.probe.arrived.wait()
            except TimeoutError:
                pass


def users(gw_port: int) -> list[User]:
    return [User("gw", ("5000",), password="gw-secret", contact=f"sip:gw@127.0.0.1:{gw_port}"),
            User("bob", ("2000",))]  # fmt: skip


@pytest.mark.parametrize("answer", [481, None], ids=["phone-rebooted-481", "phone-silent"])
async def test_a_new_invite_frees_the_line_of_a_phone_that_lost_its_call(
    answer: int | None,
) -> None:
    gw_port = free_port()
    async with switch_rig(users(gw_port)) as rig:
        rig.switch.quiet_before_probe = 0.0  # the phone sends no RTP at all here
        probe = await UdpProbe.open(gw_port)
        try:
            phone = Phone(probe, rig.port())
            old = await connected_call(rig, phone)
            phone.answer_options = answer
            # The phone rebooted (or died and a new one took its address) and calls again.
            t0 = time.monotonic()
            await phone.call()
            await serve_until(phone, lambda: len([e for e in rig.events
                                                  if isinstance(e, InboundCall)]) == 2)  # fmt: skip
            freed_after = time.monotonic() - t0
            assert LegEnded(old, Cause.FAILURE, by_user=False) in rig.events
            assert phone.options_seen >= 1
            assert freed_after < 2.0
            assert rig.switch.metrics()["stale_lines_freed_total"] == 1
        finally:
            probe.close()


async def test_a_phone_that_still_knows_its_call_keeps_it() -> None:
    gw_port = free_port()
    async with switch_rig(users(gw_port)) as rig:
        rig.switch.quiet_before_probe = 0.0
        probe = await UdpProbe.open(gw_port)
        try:
            phone = Phone(probe, rig.port())
            old = await connected_call(rig, phone)
            phone.answer_options = 200  # alive: a second call while on the first one
            await phone.call()
            await serve_until(phone, lambda: len([e for e in rig.events
                                                  if isinstance(e, InboundCall)]) == 2)  # fmt: skip
            assert rig.switch.leg_state(old) == "connected"
            assert not any(isinstance(e, LegEnded) for e in rig.events)
        finally:
            probe.close()


async def test_a_new_register_frees_the_line_too() -> None:
    gw_port = free_port()
    async with switch_rig(users(gw_port)) as rig:
        rig.switch.quiet_before_probe = 0.0
        probe = await UdpProbe.open(gw_port)
        try:
            phone = Phone(probe, rig.port())
            old = await connected_call(rig, phone)
            register = (
                f"REGISTER sip:127.0.0.1:{rig.port()} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{gw_port};branch=z9hG4bK{uuid.uuid4().hex};rport\r\n"
                f"From: <sip:gw@127.0.0.1>;tag=r1\r\nTo: <sip:gw@127.0.0.1>\r\n"
                f"Call-ID: reg-{uuid.uuid4().hex}\r\nCSeq: {{cseq}} REGISTER\r\n"
                f"Contact: <sip:gw@127.0.0.1:{gw_port}>\r\nMax-Forwards: 70\r\n"
                "Content-Length: 0\r\n\r\n"
            )
            probe.send(register.format(cseq=1).encode(), rig.port())
            await probe.wait_for(lambda: any(d.startswith(b"SIP/2.0 401") for d in probe.received))
            challenge = parse_message(next(d for d in probe.received
                                           if d.startswith(b"SIP/2.0 401")))  # fmt: skip
            request = parse_message(register.format(cseq=2).replace("z9hG4bK", "z9hG4bKx").encode())
            signed = DigestClient("gw", "gw-secret").authorize(request, challenge)  # type: ignore[arg-type]
            probe.send(signed.to_bytes(), rig.port())
            await serve_until(phone, lambda: LegEnded(old, Cause.FAILURE, by_user=False)
                              in rig.events)  # fmt: skip
            assert phone.options_seen == 1
        finally:
            probe.close()
