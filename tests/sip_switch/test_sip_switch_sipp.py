"""The core driving the ``sip`` switch against real SIPp phones on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest

from sipswitch_helpers import U, free_port, rig, sipp, sipp_procs, wait_listening, wait_until

pytestmark = [pytest.mark.realtime, pytest.mark.e2e]


async def test_sipp_calls_a_sipp_through_the_core(tmp_path: Path) -> None:
    carol_port, bob_port = free_port(), free_port()
    users = [
        U("carol", ("1000",), contact=f"sip:carol@127.0.0.1:{carol_port}"),
        U("bob", ("2000",), contact=f"sip:bob@127.0.0.1:{bob_port}"),
    ]
    async with rig(users) as r, sipp_procs() as procs:
        uas = await sipp(procs, ["-sn", "uas", "-m", "1"], tmp_path, port=bob_port)
        await wait_listening(bob_port)
        uac = await sipp(procs, [r.target(), "-sn", "uac", "-s", "2000", "-m", "1", "-d", "1000"],
                         tmp_path, port=carol_port)  # fmt: skip
        await wait_until(lambda: len(r.switch.legs) == 2 and all(
            leg.state.value == "connected" for leg in r.switch.legs.values()))
        carol_leg = r.switch.leg_of("carol")
        bob_leg = r.switch.leg_of("bob")
        assert carol_leg is not None and bob_leg is not None
        await wait_until(lambda: r.switch.bridged_to(carol_leg) == bob_leg)
        assert await uac.wait() == 0, uac.output
        assert await uas.wait() == 0, uas.output
        await wait_until(lambda: not r.switch.legs)
