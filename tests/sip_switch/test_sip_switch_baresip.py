"""Real softphones: baresip registers to Baton with digest and makes and takes calls through it,
with the dispatch core owning every leg (the library's ``inbound_call`` and ``call`` flows).

Each baresip sends its own tone (``_rigs.audio.TONES``) and plays what it hears nowhere
(aubridge); it is driven over ctrl_tcp. Media is checked in Baton's engine (each leg's RTP
arrives, the two legs are bridged to each other) and in what each phone recorded.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from _rigs.audio import TONES, baresip_phones, tones_heard_late
from _rigs.sip import U, rig, wait_until
from baton.flows import call
from baton.service.positions.presence import registrations

pytestmark = [pytest.mark.realtime, pytest.mark.e2e]

USERS = [
    U("alice", ("1001",), password="alice-secret"),
    U("bob", ("1002",), password="bob-secret"),
]
A, B = TONES["alice"], TONES["bob"]


async def test_baresip_registers_and_calls_baresip_through_the_core(tmp_path: Path) -> None:
    async with rig(USERS) as r, baresip_phones(r, USERS, tmp_path) as phones:
        alice, bob = phones["alice"], phones["bob"]
        # baresip's Contact user is not the AOR: it is stored, and used, as sent.
        (binding,) = r.switch.registered("alice")
        assert binding.uri.user != "alice"  # type: ignore[union-attr]
        # Presence, as the API and the console show it: which phone, over what, since when.
        (reg,) = registrations(r.switch, "alice", wallclock=1e9, loop_now=r.manager.now())
        assert reg.user_agent is not None and "baresip" in reg.user_agent.lower()
        assert reg.transport == "UDP" and reg.contact == binding.contact_text
        assert reg.registered_at is not None and 1e9 - 30 < reg.registered_at <= 1e9
        alice.command("dial", f"sip:1002@127.0.0.1:{r.udp_port}")
        await wait_until(lambda: alice.saw("CALL_ESTABLISHED") and bob.saw("CALL_ESTABLISHED"),
                         15)  # fmt: skip
        a, b = r.switch.leg_of("alice"), r.switch.leg_of("bob")
        assert a is not None and b is not None
        await wait_until(lambda: r.switch.bridged_to(a) == b)
        assert r.manager.callinfo_of(r.user("alice")) is not None  # the core owns both
        # Audio flows both ways through the engine.
        await wait_until(lambda: r.switch.media.leg_stats(a).packets_in > 25
                         and r.switch.media.leg_stats(b).packets_in > 25)  # fmt: skip
        await wait_until(lambda: r.switch.media.leg_stats(a).packets_out > 25
                         and r.switch.media.leg_stats(b).packets_out > 25)  # fmt: skip
        # Two more seconds of conversation, then check what each phone heard.
        start = r.switch.media.leg_stats(a).packets_in
        await wait_until(lambda: r.switch.media.leg_stats(a).packets_in > start + 100)
        alice.command("hangup")
        await wait_until(lambda: bob.saw("CALL_CLOSED"), 15)
        await wait_until(lambda: not r.switch.legs)
    assert tones_heard_late(alice, [A, B]) == {B}  # alice hears bob's tone, and only it
    assert tones_heard_late(bob, [A, B]) == {A}


async def test_dispatcher_calls_two_baresip_phones(tmp_path: Path) -> None:
    """Baton calls out: the library's ``call`` rings alice (the dispatcher's line) then bob, and
    bridges them; bob holds and resumes; bob hangs up and Baton ends alice's call."""
    async with rig(USERS) as r, baresip_phones(r, USERS, tmp_path) as phones:
        alice, bob = phones["alice"], phones["bob"]
        flow = r.manager.start(call, r.user("alice"), r.user("bob"))
        await flow.result()
        a, b = r.switch.leg_of("alice"), r.switch.leg_of("bob")
        assert a is not None and b is not None
        assert r.switch.bridged_to(a) == b
        await wait_until(lambda: r.switch.media.leg_stats(b).packets_in > 25)
        # bob holds and resumes (re-INVITEs): Baton answers each and stops, then restarts,
        # sending him audio; the call and the bridge stay.
        engine_leg = r.switch.media._legs[b]
        bob.command("hold")
        await wait_until(lambda: not engine_leg.sending, 15)
        bob.command("resume")
        await wait_until(lambda: engine_leg.sending, 15)
        assert r.switch.bridged_to(a) == b
        bob.command("hangup")
        await wait_until(lambda: alice.saw("CALL_CLOSED"), 15)
        await wait_until(lambda: not r.switch.legs)
