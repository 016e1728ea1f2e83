"""The engine on real loopback UDP: relay, mixing, latching, timeouts, DTMF, playback, recording."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from baton.core.port import (
    DtmfReceived,
    MeetingMode,
    Member,
    PlaybackFinished,
    RecordingFinished,
    Target,
    Tone,
)
from baton.switch.media import analysis, g711, rtp
from baton.switch.media.dtmf import decode_event, encode_event
from baton.switch.media.engine import MediaEngine, MediaEvent, MediaTimeout
from baton.switch.media.mixer import MediaError
from baton.switch.media.wav import read_wav

from .phones import FakePhone, until

CANDIDATES = [400.0, 700.0, 1000.0, 1300.0]
pytestmark = pytest.mark.realtime


class Rig:
    """An engine, its events, and the phones attached to it."""

    def __init__(self, engine: MediaEngine) -> None:
        self.engine = engine
        self.events: list[MediaEvent] = []
        engine.set_listener(self.events.append)
        self.phones: dict[str, FakePhone] = {}

    async def phone(
        self,
        leg: str,
        freq: float,
        *,
        codec: str = "PCMU",
        send: bool = True,
        te: int | None = 101,
        high: float | None = None,
    ) -> FakePhone:
        phone = await FakePhone.open(freq, codec=codec, high=high)
        self.phones[leg] = phone
        local = self.engine.allocate(leg)
        host, port = phone.address
        self.engine.set_remote(
            leg, host, port, payload_type=phone.pt, codec=phone.codec, telephone_event=te
        )
        if send:
            phone.start_sending(local)
        return phone

    async def close(self) -> None:
        for phone in self.phones.values():
            await phone.close()
        await self.engine.close()


async def with_rig(body: Callable[[Rig], Coroutine[Any, Any, None]], **kw: Any) -> None:
    engine = MediaEngine(port_range=(41000, 42000), **kw)
    rig = Rig(engine)
    try:
        await asyncio.wait_for(body(rig), timeout=20)
    finally:
        await rig.close()


async def fresh_audio(*phones: FakePhone, packets: int = 30) -> None:
    """Wait for ``packets`` more audio packets to reach each phone (all at once)."""
    have = [len(phone.audio()) for phone in phones]
    await until(
        lambda: all(len(p.audio()) >= n + packets for p, n in zip(phones, have, strict=True)),
        what="audio",
    )


async def test_two_phones_bridged_hear_each_other_through_the_direct_relay() -> None:
    async def body(rig: Rig) -> None:
        a = await rig.phone("a", 400)
        b = await rig.phone("b", 700)
        rig.engine.bridge("a", "b")
        await fresh_audio(a, b)
        assert a.tones(CANDIDATES) == {700}
        assert b.tones(CANDIDATES) == {400}
        assert rig.engine.metrics.relayed >= 60
        stats = rig.engine.leg_stats("a")
        assert stats.direct_peer == "b"
        # What b hears comes from a's port, as b's SDP said (symmetric RTP).
        assert {addr for addr, _ in b.received} == {rig.engine.local_address("b")}
        # Pass-through is bit-exact, in order, on one rewritten stream.
        got = [p.payload for p in b.audio()]
        start = a.sent.index(got[0])
        assert got == a.sent[start : start + len(got)]
        assert len({(p.ssrc, p.payload_type) for p in b.audio()}) == 1
        assert b.audio()[0].ssrc != a.ssrc

    await with_rig(body)


async def test_relay_transcodes_pcmu_to_pcma() -> None:
    async def body(rig: Rig) -> None:
        a = await rig.phone("a", 400, codec="PCMU")
        b = await rig.phone("b", 1000, codec="PCMA")
        rig.engine.bridge("a", "b")
        await fresh_audio(a, b)
        assert a.tones(CANDIDATES) == {1000}
        assert b.tones(CANDIDATES) == {400}
        assert {p.payload_type for p in b.audio()} == {8}

    await with_rig(body)


async def test_a_codec_change_of_one_side_retranslates_the_relay_into_it() -> None:
    async def body(rig: Rig) -> None:
        a = await rig.phone("a", 400, codec="PCMU")
        b = await rig.phone("b", 1000, codec="PCMU")
        rig.engine.bridge("a", "b")
        await fresh_audio(a, b)
        # A re-INVITE moves b's phone to PCMA: what a says (PCMU) now reaches b translated.
        b.codec, b.pt = "PCMA", 8
        rig.engine.set_remote("b", *b.address, payload_type=8, telephone_event=101)
        await fresh_audio(a, b)
        assert rig.engine.leg_stats("a").direct_peer == "b"
        as_alaw = {payload.translate(g711.ULAW_TO_ALAW) for payload in a.sent}
        assert all(p.payload in as_alaw for p in b.audio()[-20:])  # bit-exact translation
        assert b.tones(CANDIDATES) == {400}
        assert a.tones(CANDIDATES) == {1000}

    await with_rig(body)


async def test_three_phone_meeting_each_hears_the_other_two() -> None:
    async def body(rig: Rig) -> None:
        phones = {
            leg: await rig.phone(leg, f) for leg, f in zip("abc", (400, 700, 1000), strict=True)
        }
        rig.engine.create_meeting("m")
        for leg in "abc":
            rig.engine.join("m", Member(leg))
        await fresh_audio(*phones.values(), packets=40)
        assert phones["a"].tones(CANDIDATES) == {700, 1000}
        assert phones["b"].tones(CANDIDATES) == {400, 1000}
        assert phones["c"].tones(CANDIDATES) == {400, 700}

    await with_rig(body)


async def test_monitor_and_whisper_on_real_sockets() -> None:
    async def body(rig: Rig) -> None:
        a = await rig.phone("a", 400)
        b = await rig.phone("b", 700)
        d = await rig.phone("d", 1300)
        rig.engine.create_meeting("m")
        rig.engine.join("m", Member("a"))
        rig.engine.join("m", Member("b"))
        rig.engine.join("m", Member("d", MeetingMode.WHISPER, whisper_to="a"))
        await fresh_audio(a, b, d, packets=40)
        assert a.tones(CANDIDATES) == {700, 1300}
        assert b.tones(CANDIDATES) == {400}
        assert d.tones(CANDIDATES) == {400, 700}
        rig.engine.join("m", Member("d", MeetingMode.LISTEN))
        await fresh_audio(a, packets=40)
        assert a.tones(CANDIDATES) == {700}

    await with_rig(body)


async def test_switching_between_relay_and_mixing_keeps_one_continuous_stream() -> None:
    async def body(rig: Rig) -> None:
        a = await rig.phone("a", 400)
        await rig.phone("b", 700)
        rig.engine.bridge("a", "b")
        await fresh_audio(a, packets=10)
        pid = await rig.engine.play(Target(leg="a"), Tone("busy"), loop=True)  # now mixed
        await fresh_audio(a, packets=25)
        rig.engine.stop_play(pid)  # direct again
        await fresh_audio(a, packets=10)
        packets = a.audio()
        assert len({p.ssrc for p in packets}) == 1
        seqs = [p.sequence for p in packets]
        steps = {(n - p) & 0xFFFF for p, n in itertools.pairwise(seqs)}
        assert steps <= {1, 2}, steps  # loopback may reorder nothing; a step of 2 is one loss
        assert PlaybackFinished(pid, completed=False) in rig.events

    await with_rig(body)


async def test_no_rtp_goes_to_a_phone_that_does_not_receive() -> None:
    async def body(rig: Rig) -> None:
        a = await rig.phone("a", 400)
        b = await rig.phone("b", 700)
        rig.engine.bridge("a", "b")
        await fresh_audio(a, b, packets=5)
        rig.engine.set_sending("a", False)  # a put us on hold (a=sendonly)
        await until(lambda: rig.engine.leg_stats("b").packets_in > 0)
        held = len(a.audio())
        await fresh_audio(b, packets=20)  # b still hears a
        assert len(a.audio()) <= held + 1  # at most one already in flight
        before = len(a.audio())
        rig.engine.set_sending("a", True)
        await fresh_audio(a, packets=10)
        resumed = a.audio()[before:]
        assert resumed[0].marker  # the stream resumes with a marker

    await with_rig(body)


async def test_inactivity_timeout_reports_a_dead_leg_once() -> None:
    async def body(rig: Rig) -> None:
        a = await rig.phone("a", 400, send=False)
        a.start_sending(rig.engine.local_address("a"), count=5)
        await until(lambda: any(isinstance(e, MediaTimeout) for e in rig.events), within=5)
        timeouts = [e for e in rig.events if isinstance(e, MediaTimeout)]
        assert [t.leg for t in timeouts] == ["a"]
        assert timeouts[0].idle >= 0.4
        assert rig.engine.metrics.timeouts == 1

    await with_rig(body, rtp_timeout=0.4)


async def test_latching_to_the_port_the_phone_really_sends_from() -> None:
    async def body(rig: Rig) -> None:
        advertised = await FakePhone.open(0)  # the port in the SDP: never sends
        actual = await FakePhone.open(400)  # sends from another port
        other = await rig.phone("b", 700)
        rig.phones["advertised"] = advertised
        rig.phones["actual"] = actual
        local = rig.engine.allocate("a")
        rig.engine.set_remote("a", *advertised.address, payload_type=0)
        rig.engine.bridge("a", "b")
        actual.start_sending(local)
        await fresh_audio(actual, packets=20)
        assert actual.tones(CANDIDATES) == {700}
        assert rig.engine.leg_stats("a").latched == actual.address
        assert other.tones(CANDIDATES) == {400} or await _heard(other, {400})

    await with_rig(body)


async def _heard(phone: FakePhone, tones: set[float]) -> bool:
    await fresh_audio(phone, packets=25)
    return phone.tones(CANDIDATES) == tones


async def test_packets_from_a_stranger_are_dropped_but_a_silent_stream_may_move() -> None:
    async def body(rig: Rig) -> None:
        a = await rig.phone("a", 400)
        b = await rig.phone("b", 700)
        rig.engine.bridge("a", "b")
        await fresh_audio(a, packets=10)
        stranger = await FakePhone.open(1300)
        rig.phones["stranger"] = stranger
        stranger.ssrc = a.ssrc  # spoofs a's stream from elsewhere while a still sends
        stranger.start_sending(rig.engine.local_address("a"), count=20)
        await fresh_audio(b, packets=30)
        assert b.tones(CANDIDATES) == {400}
        assert rig.engine.leg_stats("a").latched == a.address
        # The phone's NAT binding changes: the same stream (SSRC) goes on from a new port
        # after the latched source fell silent for relatch_after: re-latch.
        await a.stop_sending()
        moved = await FakePhone.open(1000)
        rig.phones["moved"] = moved
        moved.ssrc, moved.seq, moved.ts = a.ssrc, a.seq, a.ts
        moved.start_sending(rig.engine.local_address("a"))
        await until(lambda: rig.engine.leg_stats("a").latched == moved.address, what="re-latch")
        await fresh_audio(b, packets=30)
        assert b.tones(CANDIDATES) == {1000}

    await with_rig(body, relatch_after=0.3)


async def test_rfc4733_digits_in_are_reported_once_and_out_are_sent() -> None:
    async def body(rig: Rig) -> None:
        a = await rig.phone("a", 400)
        await until(lambda: rig.engine.leg_stats("a").packets_in > 3)
        ts = 123456
        for duration, end in ((160, False), (320, False), (480, True), (480, True), (480, True)):
            a.send(
                encode_event(5, end=end, volume=10, duration=duration),
                pt=101,
                marker=duration == 160,
                ts=ts,
            )
        await until(lambda: any(isinstance(e, DtmfReceived) for e in rig.events))
        # Once later audio has been received, every retransmitted end has been processed too.
        seen = rig.engine.leg_stats("a").packets_in
        await until(lambda: rig.engine.leg_stats("a").packets_in >= seen + 3)
        assert [e for e in rig.events if isinstance(e, DtmfReceived)] == [DtmfReceived("a", "5")]
        rig.engine.send_dtmf("a", "9#")

        def ends() -> int:
            return sum(1 for p in a.audio(101) if (ev := decode_event(p.payload)) and ev.end)

        await until(lambda: ends() >= 6)
        events = [(p.timestamp, decode_event(p.payload)) for p in a.audio(101)]
        assert [e.digit for _, e in events if e and e.end] == ["9"] * 3 + ["#"] * 3
        assert len({ts for ts, _ in events}) == 2
        assert [p.marker for p in a.audio(101)].count(True) == 2

    await with_rig(body)


async def test_rfc4733_is_relayed_across_a_direct_bridge_and_detected() -> None:
    async def body(rig: Rig) -> None:
        a = await rig.phone("a", 400)
        b = await rig.phone("b", 700, te=96)
        rig.engine.bridge("a", "b")
        await fresh_audio(b, packets=5)
        for duration, end in ((160, False), (800, True), (800, True)):
            a.send(
                encode_event(1, end=end, volume=10, duration=duration),
                pt=101,
                marker=duration == 160,
                ts=99,
            )
        await until(lambda: len(b.audio(96)) >= 3)
        assert DtmfReceived("a", "1") in rig.events

    await with_rig(body)


async def test_rfc4733_reaches_the_other_party_of_a_mixed_bridge_once() -> None:
    async def body(rig: Rig) -> None:
        a = await rig.phone("a", 400, codec="opus")  # a browser: Opus, so the call is mixed
        b = await rig.phone("b", 700, te=96)  # a desk phone, G.711
        c = await rig.phone("c", 900, te=None)  # a phone without telephone-events
        rig.engine.bridge("a", "b")
        await fresh_audio(b, packets=5)
        assert rig.engine.leg_stats("a").direct_peer is None
        for duration, end in ((160, False), (800, True), (800, True), (800, True)):
            a.send(
                encode_event(7, end=end, volume=10, duration=duration),
                pt=101,
                marker=duration == 160,
                ts=99,
            )

        def ends(phone: FakePhone, pt: int) -> list[str]:
            return [ev.digit for p in phone.audio(pt) if (ev := decode_event(p.payload)) and ev.end]

        await until(lambda: len(ends(b, 96)) >= 3)
        assert set(ends(b, 96)) == {"7"}  # one press, with its three end packets
        assert len({p.timestamp for p in b.audio(96)}) == 1
        assert [e for e in rig.events if isinstance(e, DtmfReceived)] == [DtmfReceived("a", "7")]
        # A peer that did not negotiate telephone-events gets none, and none waits for it.
        rig.engine.bridge("a", "c")
        a.send(encode_event(8, end=True, volume=10, duration=800), pt=101, marker=True, ts=999)
        await until(lambda: DtmfReceived("a", "8") in rig.events)
        await fresh_audio(c, packets=3)
        assert {p.payload_type for _, p in c.received} == {c.pt}
        assert not rig.engine._dtmf_legs

    await with_rig(body)


async def test_tone_playback_to_a_leg_and_to_a_meeting() -> None:
    async def body(rig: Rig) -> None:
        a = await rig.phone("a", 400)
        b = await rig.phone("b", 700)
        pid = await rig.engine.play(Target(leg="a"), Tone("confirm"))
        await until(lambda: PlaybackFinished(pid, True) in rig.events, what="confirm to end")
        heard = a.heard()
        assert analysis.tones_heard(heard, [350, 440, 620]) == {350, 440}
        rig.engine.create_meeting("m")
        rig.engine.join("m", Member("a"))
        rig.engine.join("m", Member("b", MeetingMode.LISTEN))
        pid2 = await rig.engine.play(Target(meeting="m"), Tone("preemption"), loop=True)
        await fresh_audio(a, b, packets=30)
        assert analysis.tones_heard(a.heard(25), [440, 620, 700]) == {440, 620}
        assert analysis.tones_heard(b.heard(25), [440, 620, 400]) == {440, 620, 400}
        rig.engine.destroy_meeting("m")
        assert PlaybackFinished(pid2, False) in rig.events
        with pytest.raises(MediaError, match="unknown tone"):
            await rig.engine.play(Target(leg="a"), Tone("nope"))

    await with_rig(body)


async def test_recording_a_bridge_holds_both_sides(tmp_path: Path) -> None:
    path = tmp_path / "rec.wav"

    async def body(rig: Rig) -> None:
        await rig.phone("a", 400)
        b = await rig.phone("b", 1300)
        rig.engine.bridge("a", "b")
        rid = rig.engine.record(Target(leg="a"), str(path))
        await fresh_audio(b, packets=40)
        rig.engine.stop_record(rid)
        done = [e for e in rig.events if isinstance(e, RecordingFinished)]
        assert [(e.recording, e.path) for e in done] == [(rid, str(path))]
        assert done[0].seconds >= 0.5

    await with_rig(body)
    pcm = read_wav(path)
    assert analysis.tones_heard(pcm[-4000:], CANDIDATES) == {400, 1300}


async def test_rtcp_reports_on_the_phone_stream_go_to_the_negotiated_rtcp_port() -> None:
    async def body(rig: Rig) -> None:
        a, rtcp_port = await _phone_with_rtcp_port(400)  # the phone's RTCP socket: SDP port + 1
        rig.phones["a"], rig.phones["rtcp"] = a, rtcp_port
        rig.engine.allocate("a")
        rig.engine.set_remote("a", *a.address, payload_type=0)
        a.start_sending(rig.engine.local_address("a"))
        await until(lambda: rig.engine.leg_stats("a").packets_in > 10)
        ntp = rtp.ntp_timestamp(1_000_000.0)
        sr = rtp.build_sr(a.ssrc, ntp=ntp, rtp_timestamp=0, packet_count=10, octet_count=1600)
        assert rtcp_port.transport is not None
        host, port = rig.engine.local_address("a")
        rtcp_port.transport.sendto(sr, (host, port + 1))
        await until(lambda: bool(rtcp_port.raw), within=3, what="an RTCP report")
        (report, *_) = rtp.parse_rtcp(rtcp_port.raw[0])
        assert isinstance(report, rtp.SenderReport)  # we send (silence), so an SR
        (block,) = report.reports
        assert block.ssrc == a.ssrc
        assert block.lsr == (ntp >> 16) & 0xFFFFFFFF
        assert (a.seq - block.highest_seq) & 0xFFFF < 100  # about where the phone is

    await with_rig(body, rtcp_interval=0.5)


async def _phone_with_rtcp_port(freq: float) -> tuple[FakePhone, FakePhone]:
    """A phone on an even port P and a second socket on P + 1 (its RTCP port)."""
    for _ in range(50):
        phone = await FakePhone.open(freq)
        if phone.address[1] % 2 == 0:
            try:
                rtcp_socket = await FakePhone.open(0, port=phone.address[1] + 1)
            except OSError:
                pass
            else:
                return phone, rtcp_socket
        await phone.close()
    raise AssertionError("no free even/odd port pair")


async def test_clear_returns_a_leg_to_connected_idle(tmp_path: Path) -> None:
    async def body(rig: Rig) -> None:
        a = await rig.phone("a", 400)
        b = await rig.phone("b", 700)
        c = await rig.phone("c", 1000)
        rig.engine.bridge("a", "b")
        rig.engine.create_meeting("m")
        rig.engine.join("m", Member("a"))
        rig.engine.join("m", Member("c"))
        pid = await rig.engine.play(Target(leg="a"), Tone("ringback"), loop=True)
        rid = rig.engine.record(Target(leg="a"), str(tmp_path / "a.wav"))
        await fresh_audio(a, b, c, packets=20)
        assert a.tones(CANDIDATES, last=15) == {700, 1000}
        rig.engine.clear("a")
        assert PlaybackFinished(pid, completed=False) in rig.events
        assert any(isinstance(e, RecordingFinished) and e.recording == rid for e in rig.events)
        await fresh_audio(a, b, c, packets=15)
        assert analysis.rms(a.heard(10)) == 0  # silence, but the stream goes on
        assert b.tones(CANDIDATES, last=10) == set()
        assert c.tones(CANDIDATES, last=10) == set()
        assert rig.engine.mixer.meeting_members("m").keys() == {"c"}
        rig.engine.clear("a")  # idempotent
        rig.engine.clear("nobody")

    await with_rig(body)


async def test_release_and_close_are_clean_and_idempotent() -> None:
    engine = MediaEngine(port_range=(42000, 42100))
    events: list[MediaEvent] = []
    engine.set_listener(events.append)
    engine.allocate("a")
    engine.allocate("b")
    engine.bridge("a", "b")
    rid = engine.record(Target(leg="a"), "/dev/null")
    engine.release("a")
    engine.release("a")
    assert any(isinstance(e, RecordingFinished) and e.recording == rid for e in events)
    with pytest.raises(MediaError, match="no media"):
        engine.bridge("a", "b")
    await engine.close()
    await engine.close()
    with pytest.raises(MediaError, match="closed"):
        engine.allocate("c")


async def test_port_range_exhaustion_is_an_error() -> None:
    engine = MediaEngine(port_range=(42200, 42204))
    try:
        engine.allocate("a")
        engine.allocate("b")
        with pytest.raises(MediaError, match="no free RTP port"):
            engine.allocate("c")
    finally:
        await engine.close()


async def test_the_clock_does_not_drift() -> None:
    async def body(rig: Rig) -> None:
        await rig.phone("a", 400, send=False)
        loop = asyncio.get_running_loop()
        start_ticks, start = rig.engine.metrics.ticks, loop.time()
        await asyncio.sleep(1.0)
        ticks = rig.engine.metrics.ticks - start_ticks
        assert abs(ticks - (loop.time() - start) / 0.02) <= 3
        assert rig.engine.metrics.skipped_ticks == 0

    await with_rig(body)


@pytest.mark.parametrize(
    ("kwargs", "codec", "pt"),
    [
        ({"payload_type": 0}, "PCMU", 0),
        ({"payload_type": 8}, "PCMA", 8),
        ({"codec": "pcma"}, "PCMA", 8),
        ({"codec": "PCMU", "payload_type": 96}, "PCMU", 96),
        ({"payload_type": 9}, "G722", 9),
        ({"codec": "opus", "payload_type": 107}, "opus", 107),
    ],
)
async def test_set_remote_derives_the_codec(kwargs: dict[str, Any], codec: str, pt: int) -> None:
    engine = MediaEngine(port_range=(42300, 42400))
    try:
        engine.allocate("a")
        engine.set_remote("a", "127.0.0.1", 9, **kwargs)
        assert engine.leg_stats("a").codec == codec
        assert engine._legs["a"].pt == pt
        with pytest.raises(MediaError, match="unsupported codec"):
            engine.set_remote("a", "127.0.0.1", 9, codec="G729")
        with pytest.raises(MediaError, match="unsupported codec"):
            engine.set_remote("a", "127.0.0.1", 9, payload_type=18)
        with pytest.raises(MediaError, match="payload type or a codec"):
            engine.set_remote("a", "127.0.0.1", 9)
    finally:
        await engine.close()
