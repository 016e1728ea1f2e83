"""A browser's registration lives as long as its WebSocket: Baton opens no WebSocket
(docs/sip.md, "WebRTC"), so once the connection is gone nothing can reach the browser over the
contacts it registered — they are dropped at once, not shown as registered (nor offered queued
calls) until they expire. The registration names the transport it really came over."""

from __future__ import annotations

import pytest

from _rigs.sip import U, rig, wait_until
from _rigs.ws_phone import WsPhone

pytestmark = [pytest.mark.realtime]

ALICE = U("alice", ("1001",), password="alice-pw")
BOB = U("bob", ("1002",), password="bob-pw")


async def test_a_browsers_registration_ends_with_its_connection() -> None:
    async with rig([ALICE, BOB], listen=("udp:127.0.0.1:0", "ws:127.0.0.1:0")) as r:
        url = f"ws://127.0.0.1:{r.port('ws')}"
        first = WsPhone(url, "alice", ALICE.password, "127.0.0.1", 500.0)
        second = WsPhone(url, "alice", ALICE.password, "127.0.0.1", 500.0)
        try:
            await first.start()
            await first.register()
            await second.start()  # the page reloaded: a new connection registers too
            await second.register()
            await wait_until(lambda: len(r.switch.registered("alice")) == 2, 10)
            # Its Via says WSS (browsers always write it); the connection is plain ws:.
            assert {b.transport for b in r.switch.registered("alice")} == {"WS"}
            await first.close()
            await wait_until(lambda: len(r.switch.registered("alice")) == 1, 10)
            await second.close()
            await wait_until(lambda: not r.switch.registered("alice"), 10)
        finally:
            await first.close()
            await second.close()
