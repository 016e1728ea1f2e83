"""The whole product path with ``switch = "sip"``: the service builds the switch from the config
(``baton.service.switches`` → :func:`baton.switch.sip.create_switch`), its numbering plan routes a
SIPp phone's call to another user's number into the library's ``inbound_call``, and the call is
carried to a second SIPp phone and torn down; a user provisioned over the API registers at once."""

from __future__ import annotations

from pathlib import Path

import pytest
from argon2 import PasswordHasher

from _rigs.sip import (
    free_port,
    rtp_range,
    sipp,
    sipp_procs,
    wait_until,
)
from baton.service.config import parse_config
from baton.service.runtime import Service
from baton.switch.sip import SipSwitch
from service.helpers import FAST_HASHER, Api

pytestmark = [pytest.mark.realtime, pytest.mark.e2e]

SCENARIOS = Path(__file__).parent / "scenarios"


async def test_service_on_the_sip_switch_routes_a_call(tmp_path: Path) -> None:
    caller_port, callee_port = free_port(), free_port()
    config = parse_config(
        {
            "switch": "sip",
            "database": f"sqlite+aiosqlite:///{tmp_path / 'baton.db'}",
            "recordings": str(tmp_path / "recordings"),
            "sip": {"listen": ["udp:127.0.0.1:0"], "rtp_ports": rtp_range(), "rtp_timeout": 0},
            "users": [
                {"id": "unit1", "number": "1001", "password": "unit1-pw", "role": "field",
                 "contact": f"sip:unit1@127.0.0.1:{caller_port}"},
                {"id": "unit2", "number": "1002", "password": "unit2-pw", "role": "field",
                 "contact": f"sip:unit2@127.0.0.1:{callee_port}"},
                {"id": "disp1", "number": "2001", "password": "disp1-pw", "role": "dispatcher"},
            ],
        },
        "test",
    )  # fmt: skip
    service = Service(config, hasher=PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    switch = service.switch
    assert isinstance(switch, SipSwitch)
    await service.start()
    try:
        await switch.start()
        port = switch.transport.address("udp").port
        async with sipp_procs() as procs:
            uas = await sipp(procs, ["-sf", str(SCENARIOS / "uas_answer.xml"), "-m", "1"],
                             tmp_path, port=callee_port, listening=True)  # fmt: skip
            uac = await sipp(procs, [f"127.0.0.1:{port}", "-sf", str(SCENARIOS / "uac_call.xml"),
                                     "-s", "1002", "-key", "caller", "unit1", "-m", "1",
                                     "-d", "500"], tmp_path, port=caller_port)  # fmt: skip
            assert await uac.wait() == 0, uac.output
            assert await uas.wait() == 0, uas.output
        await wait_until(lambda: not switch.legs)
        assert switch.metrics()["calls_in_total"] == 1
        assert switch.metrics()["calls_out_total"] == 1
    finally:
        await service.stop()


async def test_a_user_provisioned_over_the_api_registers_and_a_removed_one_is_gone(
    tmp_path: Path,
) -> None:
    """docs/service.md, Provisioning: live on the SIP switch, without a restart."""
    config = parse_config(
        {
            "switch": "sip",
            "database": f"sqlite+aiosqlite:///{tmp_path / 'baton.db'}",
            "recordings": str(tmp_path / "recordings"),
            "sip": {"listen": ["udp:127.0.0.1:0"], "rtp_ports": rtp_range(), "rtp_timeout": 0},
            "users": [
                {"id": "adm1", "password": "adm1-pw", "role": "admin"},
                {"id": "disp1", "number": "2001", "password": "disp1-pw", "role": "dispatcher"},
            ],
        },
        "test",
    )
    service = Service(config, hasher=FAST_HASHER)
    switch = service.switch
    assert isinstance(switch, SipSwitch)
    await service.start()
    try:
        await switch.start()
        port = switch.transport.address("udp").port
        a = Api(service)
        async with a.client() as c:
            r = await c.post("/api/login", json={"user": "adm1", "password": "adm1-pw"})
            a.tokens["adm1"] = r.json()["token"]
        async with a.client("adm1") as c, sipp_procs() as procs:
            body = {"id": "unit7", "numbers": ["1007"], "password": "unit7-pw"}
            assert (await c.post("/api/users", json=body)).status_code == 201
            reg = await sipp(procs, [f"127.0.0.1:{port}", "-sf", str(SCENARIOS / "register.xml"),
                                     "-s", "unit7", "-au", "unit7", "-ap", "unit7-pw", "-m", "1"],
                             tmp_path, port=free_port())  # fmt: skip
            assert await reg.wait() == 0, reg.output
            assert len(switch.registered("unit7")) == 1
            view = (await c.get("/api/users/unit7")).json()
            assert view["registration"]["registered"]
            assert (await c.delete("/api/users/unit7")).status_code == 200
            assert switch.registered("unit7") == []
            # Its credentials no longer open the registrar.
            reg = await sipp(procs, [f"127.0.0.1:{port}", "-sf", str(SCENARIOS / "register.xml"),
                                     "-s", "unit7", "-au", "unit7", "-ap", "unit7-pw", "-m", "1"],
                             tmp_path, port=free_port())  # fmt: skip
            assert await reg.wait() != 0
            assert switch.registered("unit7") == []
    finally:
        await service.stop()
