"""The engine's pool of released RTP/RTCP socket pairs (docs/sip.md, "Media security"): a
pair is re-used only once it has heard nothing for half a second, what waits in it is never
delivered to its next leg, and a pair its old peer still streams at is closed and its port
rests.

Virtual time (the engine's clock and the pool's quiet period jump), real UDP sockets.
"""

from __future__ import annotations

import asyncio

from baton.switch.media.engine import MediaEngine

from .phones import FakePhone, until

RANGE = (46000, 47000)


async def test_a_released_pair_is_reused_once_it_has_been_quiet() -> None:
    async with MediaEngine(port_range=RANGE) as engine:
        port = engine.allocate("old")[1]
        engine.release("old")
        assert engine.allocate("next")[1] != port  # just released: it rests
        await asyncio.sleep(0.6)
        assert engine.allocate("new")[1] == port


async def test_the_old_peer_s_last_packets_delay_the_reuse() -> None:
    phone = await FakePhone.open(400)
    try:
        async with MediaEngine(port_range=RANGE) as engine:
            local = engine.allocate("old")
            engine.set_remote("old", *phone.address, payload_type=0)
            phone.target = local
            phone.send_frame()
            await until(lambda: engine.leg_stats("old").latched == phone.address)
            engine.release("old")
            await asyncio.sleep(0.3)
            invalid = engine.metrics.invalid
            phone.send_frame()  # still in flight when the call ended
            await until(lambda: engine.metrics.invalid > invalid)
            await asyncio.sleep(0.3)  # 0.6 s after the release, 0.3 s after that packet
            assert engine.allocate("early")[1] != local[1]
            await asyncio.sleep(0.3)
            assert engine.allocate("new")[1] == local[1]
    finally:
        await phone.close()


async def test_what_waits_in_a_pooled_pair_never_reaches_its_next_leg() -> None:
    old_peer, new_peer = await FakePhone.open(400), await FakePhone.open(700)
    try:
        async with MediaEngine(port_range=RANGE) as engine:
            local = engine.allocate("old")
            engine.set_remote("old", *old_peer.address, payload_type=0)
            engine.release("old")
            await asyncio.sleep(0.6)
            old_peer.target = local
            old_peer.send_frame()  # queued at the port, not yet read by the loop
            invalid = engine.metrics.invalid
            got = engine.allocate("new")
            engine.set_remote("new", *new_peer.address, payload_type=0)
            assert got != local  # the pair heard someone: closed, not re-used
            assert engine.metrics.invalid == invalid + 1  # the packet was read and dropped
            await asyncio.sleep(0.1)
            assert engine.leg_stats("new").latched is None
            assert engine.leg_stats("new").packets_in == 0
    finally:
        await old_peer.close()
        await new_peer.close()


async def test_a_pair_its_old_peer_still_streams_at_is_closed_and_rests() -> None:
    phone = await FakePhone.open(400)
    try:
        async with MediaEngine(port_range=RANGE) as engine:
            local = engine.allocate("old")
            engine.set_remote("old", *phone.address, payload_type=0)
            engine.release("old")
            phone.start_sending(local)  # a phone that missed its BYE
            await asyncio.sleep(1.0)
            ports = {engine.allocate(f"new{i}")[1] for i in range(40)}
            assert local[1] not in ports  # neither re-used nor free: it rests
            assert all(engine.leg_stats(f"new{i}").packets_in == 0 for i in range(40))
    finally:
        await phone.close()


async def test_without_a_pool_a_released_pair_is_closed() -> None:
    async with MediaEngine(port_range=RANGE, socket_pool=0) as engine:
        port = engine.allocate("old")[1]
        engine.release("old")
        await asyncio.sleep(0.6)
        ports = {engine.allocate(f"new{i}")[1] for i in range(20)}
        assert port not in ports  # closed and resting, as before pairs were re-used
        probe = await FakePhone.open(0, port=port)  # and really closed: it can be bound
        await probe.close()


async def test_close_closes_the_pooled_pairs() -> None:
    engine = MediaEngine(port_range=RANGE)
    port = engine.allocate("old")[1]
    engine.release("old")
    await engine.close()
    probe = await FakePhone.open(0, port=port)
    await probe.close()
