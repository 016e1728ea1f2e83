"""A browser's calls live no longer than its WebSocket (docs/sip.md, "WebRTC"): Baton opens no
WebSocket, so once the browser's connection is gone (the tab closed, the network lost) nothing
can reach the browser for a call made over it — no BYE, no CANCEL, no re-INVITE — and its
media went with the page. Such a call is ended at once, not left to the RTP timeout (off here)
while the other party hears nothing, and a call ringing at the browser fails as unreachable at
once, not after the ring timeout: a queued caller's offer passes on (docs/service.md,
"Positions")."""

from __future__ import annotations

from pathlib import Path

import pytest

from _rigs.audio import write_tone
from _rigs.sip import Baresip, U, rig, wait_until
from _rigs.ws_phone import WsPhone
from baton.core.events import LegStateChanged
from baton.core.port import Cause
from baton.flows import call

pytestmark = [pytest.mark.realtime, pytest.mark.e2e]

ALICE = U("alice", ("1001",), password="alice-pw")  # in the "browser"
BOB = U("bob", ("1002",), password="bob-pw")  # a baresip phone
LISTEN = ("udp:127.0.0.1:0", "ws:127.0.0.1:0")


async def test_a_call_of_a_browser_whose_connection_closes_ends_at_once(tmp_path: Path) -> None:
    async with rig([ALICE, BOB], listen=LISTEN) as r:
        bob = Baresip(tmp_path / "bob", "bob", BOB.password, r.udp_port,
                      tone=write_tone(tmp_path / "bob.wav", 780.0))  # fmt: skip
        alice = WsPhone(f"ws://127.0.0.1:{r.port('ws')}", "alice", ALICE.password, "127.0.0.1", 500)
        try:
            await bob.start()
            await alice.start()
            await alice.register()
            await wait_until(lambda: bool(r.switch.registered("alice") and
                                          r.switch.registered("bob")), 15)  # fmt: skip
            assert (await alice.call("1002")).status == 200
            await wait_until(lambda: bob.saw("CALL_ESTABLISHED"), 10)
            await alice.close()  # the tab is closed: no BYE, the connection just goes
            await wait_until(lambda: r.switch.leg_of("alice") is None, 5)
            await wait_until(lambda: bob.saw("CALL_CLOSED"), 5)
            await wait_until(lambda: not r.switch.legs, 5)
        finally:
            await alice.close()
            await bob.aclose()


async def test_a_call_ringing_at_a_browser_whose_connection_closes_fails_at_once(
    tmp_path: Path,
) -> None:
    async with rig([ALICE, BOB], listen=LISTEN) as r:
        bob = Baresip(tmp_path / "bob", "bob", BOB.password, r.udp_port,
                      tone=write_tone(tmp_path / "bob.wav", 780.0))  # fmt: skip
        alice = WsPhone(f"ws://127.0.0.1:{r.port('ws')}", "alice", ALICE.password, "127.0.0.1", 500)
        try:
            await bob.start()
            await alice.start()
            await alice.register()
            await wait_until(lambda: bool(r.switch.registered("alice") and
                                          r.switch.registered("bob")), 15)  # fmt: skip
            # Bob's line calls alice's browser; it rings there (this browser never answers).
            flow = r.manager.start(call, r.user("bob"), r.user("alice"), ring=60)
            await wait_until(lambda: any(q.method == "INVITE" for q in alice.requests), 10)
            await alice.close()
            await wait_until(lambda: flow.ended, 5)
            failed = [e for e in r.events if isinstance(e, LegStateChanged)
                      and e.user == "alice" and e.state == "ended"]  # fmt: skip
            assert failed and failed[-1].cause == Cause.UNREACHABLE.value, failed
        finally:
            await alice.close()
            await bob.aclose()
