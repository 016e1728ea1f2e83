"""SRTP per user (issue 14, "Encryption"): ``srtp`` in a user's table overrides ``[sip] srtp``
for that user's legs — a site can require SRTP of its radio gateway and leave desk phones plain,
or the other way round (docs/sip.md, "SRTP"). The phones are raw UDP sockets at static
contacts' addresses."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sip_probe import UdpProbe, User, free_port, invite, status_of, switch_rig

from baton.switch.sip import Request, SipConfigError, create_switch, parse_message

pytestmark = pytest.mark.realtime


def users(gw_port: int, desk_port: int, *, gw: str | None, desk: str | None) -> list[User]:
    return [
        User("gw", ("5000",), contact=f"sip:gw@127.0.0.1:{gw_port}", srtp=gw),
        User("desk", ("6000",), contact=f"sip:desk@127.0.0.1:{desk_port}", srtp=desk),
    ]


async def offer_to(rig: Any, leg: str, user: str, phone: UdpProbe) -> bytes:
    """The SDP offer of Baton's INVITE to ``user``'s phone."""
    await rig.switch.originate(leg, user)
    await phone.wait_for(lambda: any(d.startswith(b"INVITE ") for d in phone.received))
    message = parse_message(next(d for d in phone.received if d.startswith(b"INVITE ")))
    assert isinstance(message, Request)
    return message.body


@pytest.mark.parametrize(
    ("site", "gw", "desk"),
    [("off", "required", None), ("required", None, "off")],
    ids=["site-off-gateway-required", "site-required-desk-off"],
)
async def test_offers_follow_the_callees_own_policy(
    site: str, gw: str | None, desk: str | None
) -> None:
    gw_port, desk_port = free_port(), free_port()
    gw_phone, desk_phone = await UdpProbe.open(gw_port), await UdpProbe.open(desk_port)
    try:
        async with switch_rig(users(gw_port, desk_port, gw=gw, desk=desk),
                              sip={"srtp": site}) as rig:  # fmt: skip
            to_gw = await offer_to(rig, "g1", "gw", gw_phone)
            to_desk = await offer_to(rig, "d1", "desk", desk_phone)
    finally:
        gw_phone.close()
        desk_phone.close()
    # The gateway's legs are encrypted either way (its own "required", or the site's).
    assert b"RTP/SAVP" in to_gw and b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" in to_gw
    assert b"RTP/AVP " in to_desk and b"a=crypto" not in to_desk


async def test_a_plain_offer_from_a_user_who_must_encrypt_is_refused() -> None:
    gw_port, desk_port = free_port(), free_port()
    gw_phone, desk_phone = await UdpProbe.open(gw_port), await UdpProbe.open(desk_port)
    try:
        async with switch_rig(users(gw_port, desk_port, gw="required", desk=None)) as rig:
            for phone, user in ((gw_phone, "gw"), (desk_phone, "desk")):
                phone.send(invite("5000" if user == "desk" else "6000", from_user=user,
                                  via=f"127.0.0.1:{phone.port}", target_port=rig.port(),
                                  call_id=uuid.uuid4().hex), rig.port())  # fmt: skip
                await phone.wait_for(lambda p=phone: any(status_of(d) >= 180 for d in p.received))
            gw_final = [status_of(d) for d in gw_phone.received if status_of(d) >= 180]
            desk_final = [status_of(d) for d in desk_phone.received if status_of(d) >= 180]
    finally:
        gw_phone.close()
        desk_phone.close()
    assert gw_final[0] == 488  # RTP/AVP without a key from a user whose legs need SRTP
    assert desk_final[0] == 180  # the same offer from a user under the site's "off"


def test_a_bad_policy_is_named_by_its_key() -> None:
    with pytest.raises(SipConfigError) as bad:
        create_switch({"listen": ["udp:127.0.0.1:0"]}, [User("gw", srtp="yes")])
    assert bad.value.problems == ['users[gw].srtp: expected "off", "optional" or "required", '
                                  "not 'yes'"]  # fmt: skip
