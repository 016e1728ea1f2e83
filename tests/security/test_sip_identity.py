"""SIP identity spoofing (issue 14, finding 3): a static contact is trusted by the address the
bytes really came from. Over TCP that is the connection's remote end, never the Via, which the
sender writes itself: a TCP INVITE whose Via names a static contact's port used to be taken for
that contact's call (answered 180 and recorded as started by that user) without a password.
"""

from __future__ import annotations

import asyncio

import pytest
from sip_probe import UdpProbe, User, free_port, invite, read_responses, switch_rig

from baton.core.port import InboundCall

pytestmark = pytest.mark.realtime


async def _tcp_invite(port: int, data: bytes, *, local_port: int = 0) -> list[int]:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, local_addr=("127.0.0.1", local_port)
    )
    try:
        writer.write(data)
        await writer.drain()
        return await read_responses(reader, lambda s: any(x >= 180 for x in s))
    finally:
        writer.close()


async def test_a_tcp_invite_with_a_forged_via_is_challenged_not_trusted() -> None:
    gw_port = free_port()
    users = [User("gw", ("5000",), contact=f"sip:gw@127.0.0.1:{gw_port};transport=tcp"),
             User("bob", ("2000",), password="bob-secret")]  # fmt: skip
    async with switch_rig(users, tcp=True) as rig:
        forged = invite("2000", from_user="gw", via=f"127.0.0.1:{gw_port}", transport="TCP",
                        target_port=rig.port("tcp"))  # fmt: skip
        statuses = await _tcp_invite(rig.port("tcp"), forged)  # from an ephemeral port
        assert statuses[-1] == 401
        assert not any(isinstance(e, InboundCall) for e in rig.events)
        assert rig.switch.legs == {}


async def test_a_tcp_connection_from_the_static_contact_s_own_address_is_trusted() -> None:
    gw_port = free_port()
    users = [User("gw", ("5000",), contact=f"sip:gw@127.0.0.1:{gw_port};transport=tcp"),
             User("bob", ("2000",))]  # fmt: skip
    async with switch_rig(users, tcp=True) as rig:
        honest = invite("2000", from_user="gw", via=f"127.0.0.1:{gw_port}", transport="TCP",
                        target_port=rig.port("tcp"))  # fmt: skip
        statuses = await _tcp_invite(rig.port("tcp"), honest, local_port=gw_port)
        assert statuses[-1] == 180
        (call,) = [e for e in rig.events if isinstance(e, InboundCall)]
        assert call.user == "gw"


async def test_a_udp_invite_naming_a_static_contact_in_its_via_is_challenged() -> None:
    gw_port = free_port()
    users = [User("gw", ("5000",), contact=f"sip:gw@127.0.0.1:{gw_port}"), User("bob", ("2000",))]
    async with switch_rig(users) as rig:
        attacker = await UdpProbe.open()
        try:
            attacker.send(invite("2000", from_user="gw", via=f"127.0.0.1:{gw_port}",
                                 target_port=rig.port()), rig.port())  # fmt: skip
            await attacker.wait_for(lambda: any(s >= 200 for s in attacker.statuses()))
            assert attacker.statuses()[-1] == 401
            assert not any(isinstance(e, InboundCall) for e in rig.events)
        finally:
            attacker.close()
