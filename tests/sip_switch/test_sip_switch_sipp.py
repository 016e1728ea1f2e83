"""The core driving the ``sip`` switch against real SIPp phones on loopback.

Each SIPp is a phone: a UAC calling in (identified by its static contact, or by digest), or a
UAS that Baton calls (its static contact). Inbound calls go through the core's
``inbound_call`` flow (:func:`_rigs.sip.number_router`), so the dispatch core owns
every leg; dispatcher calls use the library's ``call`` flow.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from _rigs.sip import (
    U,
    free_port,
    rig,
    sipp,
    sipp_procs,
    wait_until,
)
from baton.core import Flow, Priority, Session, User, UserManager, flow
from baton.core.events import LegStateChanged
from baton.core.port import Cause, InboundCall
from baton.flows import call, force_release

pytestmark = [pytest.mark.realtime, pytest.mark.e2e]

SCENARIOS = Path(__file__).parent / "scenarios"


def scenario(name: str) -> str:
    return str(SCENARIOS / name)


def connected(r: object, *users: str) -> bool:
    switch = r.switch  # type: ignore[attr-defined]
    legs = [switch.leg_of(u) for u in users]
    return all(leg is not None and switch.leg_state(leg) == "connected" for leg in legs)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_sipp_calls_in_and_baton_calls_out(tmp_path: Path, transport: str) -> None:
    """carol (SIPp UAC) dials bob's number; the core's inbound_call rings bob (SIPp UAS),
    answers carol and bridges them in the engine; carol hangs up; Baton sends bob BYE."""
    carol_port, bob_port = free_port(), free_port()
    users = [
        U("carol", ("1000",), contact=f"sip:carol@127.0.0.1:{carol_port};transport={transport}"),
        U("bob", ("2000",), contact=f"sip:bob@127.0.0.1:{bob_port};transport={transport}"),
    ]
    async with rig(users, listen=[f"{transport}:127.0.0.1:0"]) as r, sipp_procs() as procs:
        uas = await sipp(procs, ["-sf", scenario("uas_answer.xml"), "-m", "1"], tmp_path,
                         port=bob_port, transport=transport, listening=True)  # fmt: skip
        uac = await sipp(procs, [r.target(transport), "-sf", scenario("uac_call.xml"), "-s", "2000",
                                 "-key", "caller", "carol", "-m", "1", "-d", "1000"],
                         tmp_path, port=carol_port, transport=transport)  # fmt: skip
        await wait_until(lambda: connected(r, "carol", "bob"))
        carol, bob = r.switch.leg_of("carol"), r.switch.leg_of("bob")
        assert carol is not None and bob is not None
        await wait_until(lambda: r.switch.bridged_to(carol) == bob)
        assert r.manager.callinfo_of(r.user("carol")) is not None  # a P2P owns both
        assert await uac.wait() == 0, uac.output
        assert await uas.wait() == 0, uas.output
        await wait_until(lambda: not r.switch.legs)
        (inbound,) = r.inbound
        assert (inbound.user, inbound.to) == ("carol", "2000")


async def test_sipp_registers_with_digest(tmp_path: Path) -> None:
    async with rig([U("alice", ("1001",), password="alice-secret")]) as r, sipp_procs() as procs:
        port = free_port()
        reg = await sipp(procs, [r.target(), "-sf", scenario("register.xml"), "-s", "alice",
                                 "-au", "alice", "-ap", "alice-secret", "-m", "1"],
                         tmp_path, port=port)  # fmt: skip
        assert await reg.wait() == 0, reg.output
        (binding,) = r.switch.registered("alice")
        assert binding.contact_text == f"<sip:alice-sipp@127.0.0.1:{port};transport=UDP>"
        assert r.switch.metrics()["registrations"] == 1


async def test_sipp_wrong_password_is_refused_and_throttled(tmp_path: Path) -> None:
    users = [U("alice", ("1001",), password="alice-secret")]
    async with rig(users, sip={"auth_failures": {"max_failures": 2, "block": 60}}) as r, \
            sipp_procs() as procs:  # fmt: skip
        for attempt in range(2):
            reg = await sipp(procs, [r.target(), "-sf", scenario("register_wrong_password.xml"),
                                     "-s", "alice", "-au", "alice", "-ap", "guess", "-m", "1"],
                             tmp_path, port=free_port())  # fmt: skip
            assert await reg.wait() == 0, f"attempt {attempt}: {reg.output}"
        assert r.switch.registered("alice") == []
        # Now blocked: even the right password gets 403 without a challenge.
        reg = await sipp(procs, [r.target(), "-sf", scenario("register.xml"), "-s", "alice",
                                 "-au", "alice", "-ap", "alice-secret", "-m", "1"],
                         tmp_path, port=free_port())  # fmt: skip
        assert await reg.wait() != 0
        assert "403" in reg.output
        assert r.switch.metrics()["auth_failures_total"] >= 2


async def test_sipp_calls_in_with_digest(tmp_path: Path) -> None:
    """An INVITE from a registered-style user is challenged; the right password gets through,
    a wrong one is refused with 403 and no call reaches the core."""
    bob_port = free_port()
    users = [
        U("alice", ("1001",), password="alice-secret"),
        U("bob", ("2000",), contact=f"sip:bob@127.0.0.1:{bob_port}"),
    ]
    async with rig(users) as r, sipp_procs() as procs:
        bad = await sipp(procs, [r.target(), "-sf", scenario("uac_wrong_auth.xml"), "-s", "2000",
                                 "-key", "caller", "alice", "-au", "alice", "-ap", "guess",
                                 "-m", "1"], tmp_path, port=free_port())  # fmt: skip
        assert await bad.wait() == 0, bad.output
        assert r.inbound == []
        uas = await sipp(procs, ["-sf", scenario("uas_answer.xml"), "-m", "1"], tmp_path,
                         port=bob_port, listening=True)  # fmt: skip
        uac = await sipp(procs, [r.target(), "-sf", scenario("uac_auth_call.xml"), "-s", "2000",
                                 "-key", "caller", "alice", "-au", "alice", "-ap", "alice-secret",
                                 "-m", "1", "-d", "500"], tmp_path, port=free_port())  # fmt: skip
        assert await uac.wait() == 0, uac.output + "\n".join(map(repr, r.events))
        assert await uas.wait() == 0, uas.output
        assert [(ev.user, ev.to) for ev in r.inbound] == [("alice", "2000")]
        await wait_until(lambda: not r.switch.legs)


async def test_caller_cancels_before_answer(tmp_path: Path) -> None:
    """carol cancels while bob rings: carol gets 487, and the core cancels bob's leg."""
    carol_port, bob_port = free_port(), free_port()
    users = [
        U("carol", ("1000",), contact=f"sip:carol@127.0.0.1:{carol_port}"),
        U("bob", ("2000",), contact=f"sip:bob@127.0.0.1:{bob_port}"),
    ]
    async with rig(users) as r, sipp_procs() as procs:
        uas = await sipp(procs, ["-sf", scenario("uas_ring.xml"), "-m", "1"], tmp_path,
                         port=bob_port, listening=True)  # fmt: skip
        uac = await sipp(procs, [r.target(), "-sf", scenario("uac_cancel.xml"), "-s", "2000",
                                 "-key", "caller", "carol", "-m", "1"],
                         tmp_path, port=carol_port)  # fmt: skip
        assert await uac.wait() == 0, uac.output
        assert await uas.wait() == 0, uas.output  # bob's INVITE was cancelled by Baton
        await wait_until(lambda: not r.switch.legs)
        ended = [e for e in r.events if isinstance(e, LegStateChanged) and e.state == "ended"]
        assert {e.user for e in ended} == {"carol", "bob"}


async def test_callee_hangs_up_and_baton_sends_bye_to_the_caller(tmp_path: Path) -> None:
    carol_port, bob_port = free_port(), free_port()
    users = [
        U("carol", ("1000",), contact=f"sip:carol@127.0.0.1:{carol_port}"),
        U("bob", ("2000",), contact=f"sip:bob@127.0.0.1:{bob_port}"),
    ]
    async with rig(users) as r, sipp_procs() as procs:
        uas = await sipp(procs, ["-sf", scenario("uas_answer_then_bye.xml"), "-m", "1",
                                 "-d", "500"], tmp_path, port=bob_port, listening=True)  # fmt: skip
        uac = await sipp(procs, [r.target(), "-sf", scenario("uac_wait_bye.xml"), "-s", "2000",
                                 "-key", "caller", "carol", "-m", "1"],
                         tmp_path, port=carol_port)  # fmt: skip
        assert await uas.wait() == 0, uas.output
        assert await uac.wait() == 0, uac.output  # carol got Baton's BYE
        await wait_until(lambda: not r.switch.legs)


async def test_udp_loss_is_recovered_by_retransmission(tmp_path: Path) -> None:
    """10 % of SIP messages dropped at random by both phones: every call still completes."""
    carol_port, bob_port = free_port(), free_port()
    calls = 6
    users = [
        U("carol", ("1000",), contact=f"sip:carol@127.0.0.1:{carol_port}"),
        U("bob", ("2000",), contact=f"sip:bob@127.0.0.1:{bob_port}"),
    ]
    async with rig(users) as r, sipp_procs() as procs:
        # losses cost retransmission timers (0.5 s, 1 s, 2 s, …): give SIPp time, not 35 s
        lossy = ["-lost", "10", "-timeout", "80s"]
        uas = await sipp(procs, ["-sf", scenario("uas_answer.xml"), "-m", str(calls), *lossy],
                         tmp_path, port=bob_port, listening=True)  # fmt: skip
        uac = await sipp(procs, [r.target(), "-sf", scenario("uac_call.xml"), "-s", "2000",
                                 "-key", "caller", "carol", "-m", str(calls), "-l", "1",
                                 "-d", "200", *lossy],
                         tmp_path, port=carol_port)  # fmt: skip
        assert await uac.wait(90) == 0, uac.output
        assert await uas.wait(90) == 0, uas.output
        await wait_until(lambda: not r.switch.legs, 40)
        assert len(r.inbound) == calls  # retransmitted INVITEs never became new calls


async def test_dispatcher_call_to_two_sipp_phones_then_force_release(tmp_path: Path) -> None:
    """The library's ``call`` rings the dispatcher's line and the field unit (both SIPp UAS),
    bridges them; ``force_release`` then ends the field unit with an RFC 4411 Reason."""
    disp_port, field_port = free_port(), free_port()
    users = [
        U("disp", ("100",), contact=f"sip:disp@127.0.0.1:{disp_port}"),
        U("field", ("200",), contact=f"sip:field@127.0.0.1:{field_port}"),
    ]
    async with rig(users, grace=60) as r, sipp_procs() as procs:
        d = await sipp(procs, ["-sf", scenario("uas_answer.xml"), "-m", "1"], tmp_path,
                       port=disp_port, listening=True)  # fmt: skip
        f = await sipp(procs, ["-sf", scenario("uas_answer_preempted.xml"), "-m", "1"], tmp_path,
                       port=field_port, listening=True)  # fmt: skip
        flow = r.manager.start(call, r.user("disp"), r.user("field"))
        await flow.result()
        disp, field = r.switch.leg_of("disp"), r.switch.leg_of("field")
        assert disp is not None and field is not None
        assert r.switch.bridged_to(disp) == field
        release = r.manager.start(force_release, r.user("field"))
        assert await release.result() == ["disp"]
        assert await f.wait() == 0, f.output  # the BYE carried Reason: preemption ;cause=1
        assert await d.wait() == 0, d.output
        await wait_until(lambda: not r.switch.legs)


async def test_resource_priority_reaches_the_core(tmp_path: Path) -> None:
    carol_port, bob_port, dave_port = free_port(), free_port(), free_port()
    users = [
        U("carol", ("1000",), contact=f"sip:carol@127.0.0.1:{carol_port}"),
        U("dave", ("1001",), contact=f"sip:dave@127.0.0.1:{dave_port}", max_priority=10),
        U("bob", ("2000",), contact=f"sip:bob@127.0.0.1:{bob_port}"),
    ]
    seen: list[InboundCall] = []

    def refuse(manager: object, caller: object, leg: object, ev: InboundCall) -> None:
        seen.append(ev)
        r.manager.spawn(r.switch.hangup(ev.leg, Cause.BUSY), "refuse")

    async with rig(users, router=refuse) as r, sipp_procs() as procs:  # type: ignore[arg-type]
        for who, port in (("carol", carol_port), ("dave", dave_port)):
            uac = await sipp(procs, [r.target(), "-sf", scenario("uac_precedence.xml"), "-s",
                                     "2000", "-key", "caller", who, "-m", "1",
                                     "-recv_timeout", "5000"], tmp_path, port=port)  # fmt: skip
            assert await uac.wait() != 0  # refused busy: the scenario expected an answer
            assert "486" in uac.output
        await wait_until(lambda: len(seen) == 2)
    carol, dave = seen
    assert carol.priority == Priority.FLASH
    assert carol.headers["Resource-Priority"] == "dsn.flash"
    assert dave.priority is None  # above dave's max_priority: ignored, and said so
    assert "max_priority" in dave.headers["Resource-Priority-Ignored"]


@flow(priority=Priority.ROUTINE)
async def answer_and_collect(s: Session, caller: User) -> str:
    """Answer the caller and collect one DTMF digit."""
    await s.claim(caller)
    await s.answer(caller)
    return await s.collect(caller, max_digits=1, timeout=15)


async def test_rfc4733_dtmf_from_sipp_reaches_the_flow(tmp_path: Path) -> None:
    """SIPp plays its RFC 4733 pcap of the digit 1 into the call; the engine detects it and the
    flow that answered collects it (telephone-event negotiated in Baton's SDP answer)."""
    carol_port = free_port()
    flows: list[Flow] = []

    def router(manager: UserManager, caller: User, leg: object, ev: InboundCall) -> None:
        flows.append(manager.start(answer_and_collect, caller))

    users = [U("carol", ("1000",), contact=f"sip:carol@127.0.0.1:{carol_port}")]
    async with rig(users, router=router) as r, sipp_procs() as procs:
        uac = await sipp(procs, [r.target(), "-sf", scenario("uac_dtmf.xml"), "-s", "3000",
                                 "-key", "caller", "carol", "-m", "1", "-d", "3000",
                                 "-mp", str(free_port())], tmp_path, port=carol_port)  # fmt: skip
        await wait_until(lambda: bool(flows))
        assert await flows[0].result() == "1"
        assert await uac.wait() == 0, uac.output
