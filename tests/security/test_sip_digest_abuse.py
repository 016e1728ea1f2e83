"""SIP digest abuse (issue 14, findings 6 and 11, on the wire).

As found: a non-UTF-8 digest ``uri`` was never answered and logged a 2.3 KB traceback per
packet; a digest ``uri`` differing from the Request-URI was accepted; and the failure block was
per source IP, so forged UDP packets carrying a phone's address could lock that phone out.
Now: 400 for credentials that cannot be for this request; failures counted per (source IP,
user) and only on a nonce that was sent to that address (docs/sip.md, "Digest failures").
"""

from __future__ import annotations

import logging
import uuid

import pytest
from sip_probe import UdpProbe, User, invite, switch_rig

from baton.core.port import InboundCall
from baton.switch.sip import DigestClient, Peer, Response, parse_message

pytestmark = pytest.mark.realtime

USERS = [User("alice", ("1001",), password="alice-secret"), User("bob", ("2000",))]


def with_header(data: bytes, header: bytes) -> bytes:
    return data.replace(b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\r\n" + header, 1)


async def challenge_for(probe: UdpProbe, port: int) -> tuple[bytes, Response]:
    """An INVITE from alice and the 401 that answers it."""
    data = invite("2000", from_user="alice", via=f"127.0.0.1:{probe.port}", target_port=port)
    probe.received.clear()
    probe.send(data, port)
    await probe.wait_for(lambda: 401 in probe.statuses())
    response = parse_message(probe.received[-1])
    assert isinstance(response, Response)
    return data, response


def answered(data: bytes, challenge: Response, password: str, *, uri: str | None = None) -> bytes:
    """``data`` again (a new branch and CSeq) with credentials for ``challenge``."""
    request = parse_message(data.replace(b"CSeq: 1 INVITE", b"CSeq: 2 INVITE").replace(
        b"branch=z9hG4bK", b"branch=z9hG4bK" + uuid.uuid4().hex[:6].encode()))  # fmt: skip
    signed = DigestClient("alice", password).authorize(request, challenge)  # type: ignore[arg-type]
    out = signed.to_bytes()
    if uri is not None:
        out = out.replace(f'uri="{signed.uri}"'.encode(), f'uri="{uri}"'.encode())
    return out


async def test_a_non_utf8_digest_uri_is_answered_400_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with switch_rig(USERS) as rig:
        probe = await UdpProbe.open()
        try:
            with caplog.at_level(logging.WARNING):
                for _ in range(20):
                    auth = (b'Authorization: Digest username="alice", realm="baton", nonce="n", '
                            b'uri="sip:\xff\xfe@127.0.0.1", response="00112233445566778899aabbccddeeff"\r\n')  # fmt: skip
                    probe.send(with_header(invite("2000", from_user="alice", via=f"127.0.0.1:{probe.port}",
                                                  target_port=rig.port()), auth), rig.port())  # fmt: skip
                await probe.wait_for(lambda: probe.statuses().count(400) == 20)
            assert [r for r in caplog.records if r.exc_info] == []
            assert not any(isinstance(e, InboundCall) for e in rig.events)
        finally:
            probe.close()


async def test_a_digest_uri_that_is_not_the_request_uri_is_refused() -> None:
    async with switch_rig(USERS) as rig:
        probe = await UdpProbe.open()
        try:
            data, challenge = await challenge_for(probe, rig.port())
            probe.received.clear()
            # The right password, computed for another URI (a replayed or relayed digest).
            probe.send(answered(data, challenge, "alice-secret", uri="sip:9999@127.0.0.1"),
                       rig.port())  # fmt: skip
            await probe.wait_for(lambda: any(s >= 300 for s in probe.statuses()))
            assert probe.statuses()[-1] == 400
            assert not any(isinstance(e, InboundCall) for e in rig.events)
            # The same with the right uri goes through.
            data, challenge = await challenge_for(probe, rig.port())
            probe.received.clear()
            probe.send(answered(data, challenge, "alice-secret"), rig.port())
            await probe.wait_for(lambda: 180 in probe.statuses())
        finally:
            probe.close()


async def test_forged_failures_from_a_phone_s_address_do_not_lock_the_phone_out() -> None:
    limits = {"auth_failures": {"max_failures": 3, "window": 60, "block": 60}}
    async with switch_rig(USERS, sip=limits) as rig:
        phone = await UdpProbe.open()
        attacker = await UdpProbe.open(host="127.0.0.2")  # another address
        try:
            # The attacker, on its own address, collects a nonce ...
            data, challenge = await challenge_for(attacker, rig.port())
            # ... and sends wrong passwords forged as coming from the phone's address.
            forged_source = Peer("udp", "127.0.0.1", phone.port)
            for _ in range(10):
                forged = parse_message(answered(data, challenge, "guess"))
                rig.switch.transport._received(forged, forged_source)
            await phone.wait_for(lambda: len(phone.received) >= 10)
            assert set(phone.statuses()) == {401}  # re-challenged: nothing counted
            assert rig.switch.metrics()["auth_failures_total"] == 0
            # The phone itself still gets in.
            data, challenge = await challenge_for(phone, rig.port())
            phone.received.clear()
            phone.send(answered(data, challenge, "alice-secret"), rig.port())
            await phone.wait_for(lambda: 180 in phone.statuses())
        finally:
            phone.close()
            attacker.close()
