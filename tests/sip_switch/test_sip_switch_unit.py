"""The ``sip`` switch on a socket-less transport, in virtual time: every decision of the B2BUA
(authentication, answers, hang-ups and their codes, forking, CANCEL races, re-INVITE, INFO,
timers) checked message by message. The media engine is the real one, on loopback."""

from __future__ import annotations

import asyncio

import pytest
from sipswitch_fakes import Fx, Phone, make_switch

from _rigs.sip import U
from baton.core.port import (
    Cause,
    DtmfReceived,
    EndReason,
    InboundCall,
    LegAnswered,
    LegEnded,
    LegFailed,
    LegRinging,
    MeetingMode,
    Member,
    SwitchError,
    Target,
    Tone,
)
from baton.switch.sip import Request, Response

ALICE = U("alice", ("1001",), password="alice-secret")
BOB = U("bob", ("2000",), contact="sip:bob@127.0.0.1:5070")
CAROL = U("carol", ("3000",), contact="sip:carol@127.0.0.1:5080", max_priority=10)
USERS = [ALICE, BOB, CAROL]


async def call_in(fx: Fx, phone: Phone, number: str = "2000", **kw: object) -> tuple[str, Request]:
    """``phone`` calls ``number``, answering the digest challenge if there is one; returns the
    inbound leg id and the INVITE."""
    invite = phone.invite(number, **kw)  # type: ignore[arg-type]
    first = phone.last_response(invite.call_id)
    if first.status == 401:
        phone.ack(first)
        invite = phone.invite(number, call_id=invite.call_id, credentials_from=first, **kw)  # type: ignore[arg-type]
    assert phone.last_response(invite.call_id).status == 180
    ev = fx.events[-1]
    assert isinstance(ev, InboundCall)
    return ev.leg, invite


async def answered(fx: Fx, phone: Phone, number: str = "2000") -> tuple[str, Response]:
    """An inbound call, answered by the switch and ACKed by the phone."""
    leg, invite = await call_in(fx, phone, number)
    await fx.switch.answer(leg)
    ok = phone.last_response(invite.call_id)
    assert ok.status == 200
    phone.ack(ok)
    return leg, ok


# ---- inbound ----------------------------------------------------------------------------


async def test_inbound_invite_is_challenged_then_becomes_an_inbound_call() -> None:
    fx = await make_switch(USERS)
    alice = Phone(fx, "alice", 5062, password="alice-secret")
    invite = alice.invite("2000")
    challenge = alice.last_response(invite.call_id)
    assert challenge.status == 401
    assert challenge.headers.get("WWW-Authenticate", "").startswith("Digest ")
    assert fx.events == []
    alice.ack(challenge)
    alice.invite("2000", call_id=invite.call_id, credentials_from=challenge)
    assert fx.statuses(invite.call_id) == [401, 180]
    (ev,) = fx.events
    assert isinstance(ev, InboundCall)
    assert (ev.user, ev.to, ev.priority) == ("alice", "2000", None)
    assert ev.headers["Call-ID"] == invite.call_id
    await fx.switch.close()


async def test_wrong_password_is_refused_and_repeated_failures_are_throttled() -> None:
    fx = await make_switch(USERS, auth_failures={"max_failures": 2, "block": 30})
    mallory = Phone(fx, "alice", 5064, password="guess")
    for _ in range(2):
        invite = mallory.invite("2000")
        challenge = mallory.last_response(invite.call_id)
        mallory.ack(challenge)
        mallory.invite("2000", call_id=invite.call_id, credentials_from=challenge)
        assert mallory.last_response(invite.call_id).status == 403
    # alice from the same host is blocked, even with her password (the pair is blocked) ...
    honest = Phone(fx, "alice", 5066, password="alice-secret")
    invite = honest.invite("2000")
    challenge = honest.last_response(invite.call_id)
    honest.ack(challenge)
    honest.invite("2000", call_id=invite.call_id, credentials_from=challenge)
    refused = honest.last_response(invite.call_id)
    assert (refused.status, refused.headers.get("Retry-After")) == (403, "30")
    assert fx.events == []
    assert fx.switch.metrics()["auth_failures_total"] == 2
    # ... but not bob behind the same address.
    bob = Phone(fx, "bob", 5068, password="secret")
    invite = bob.invite("1001")
    challenge = bob.last_response(invite.call_id)
    bob.ack(challenge)
    bob.invite("1001", call_id=invite.call_id, credentials_from=challenge)
    assert fx.statuses(invite.call_id) == [401, 180]
    await fx.switch.close()


async def test_static_contact_is_trusted_by_address() -> None:
    fx = await make_switch(USERS)
    bob = Phone(fx, "bob", 5070)
    leg, _ = await call_in(fx, bob, "1001")
    ev = fx.events[-1]
    assert isinstance(ev, InboundCall) and ev.user == "bob"
    await fx.switch.hangup(leg)
    await fx.switch.close()


async def test_nothing_acceptable_in_the_offer_is_488() -> None:
    fx = await make_switch(USERS)
    bob = Phone(fx, "bob", 5070)
    g729 = (
        b"v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        b"m=audio 4000 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n"
    )
    invite = bob.invite("1001", sdp=g729)
    assert fx.statuses(invite.call_id) == [488]
    assert fx.events == []
    assert fx.switch.legs == {}
    await fx.switch.close()


async def test_answer_bye_from_the_phone_ends_the_leg_by_the_user() -> None:
    fx = await make_switch(USERS)
    bob = Phone(fx, "bob", 5070)
    leg, ok = await answered(fx, bob, "1001")
    assert ok.content_type == "application/sdp"
    stats = fx.switch.media.leg_stats(leg)
    assert stats.remote == ("127.0.0.1", bob.sdp.local.port)
    assert fx.switch.leg_state(leg) == "connected"
    bye = bob.in_dialog(ok, "BYE")
    assert fx.statuses(bye.call_id, "BYE") == [200]
    assert fx.events[-1] == LegEnded(leg, Cause.NORMAL, by_user=True)
    assert fx.switch.legs == {}
    await fx.switch.close()


@pytest.mark.parametrize(
    ("cause", "status"),
    [
        (Cause.BUSY, 486),
        (Cause.REJECTED, 603),
        (Cause.INCOMPATIBLE, 488),
        (Cause.NO_ANSWER, 480),
        (Cause.UNREACHABLE, 404),
        (Cause.NORMAL, 480),
        (Cause.PREEMPTED, 480),
    ],
)
async def test_hanging_up_an_unanswered_inbound_call_answers_it_with_the_cause(
    cause: Cause, status: int
) -> None:
    fx = await make_switch(USERS)
    bob = Phone(fx, "bob", 5070)
    leg, invite = await call_in(fx, bob, "1001")
    await fx.switch.hangup(leg, cause)
    final = bob.last_response(invite.call_id)
    assert final.status == status
    reason = final.headers.get("Reason")
    if cause is Cause.PREEMPTED:
        assert reason == 'preemption ;cause=1 ;text="UA Preemption"'
    else:
        assert reason is None
    await fx.switch.hangup(leg, cause)  # idempotent
    assert len(fx.events) == 1  # no event for what the core did itself
    await fx.switch.close()


async def test_cancel_from_the_phone() -> None:
    fx = await make_switch(USERS)
    bob = Phone(fx, "bob", 5070)
    leg, invite = await call_in(fx, bob, "1001")
    bob.cancel(invite.call_id)
    assert fx.statuses(invite.call_id, "CANCEL") == [200]
    assert fx.statuses(invite.call_id) == [180, 487]
    assert fx.events[-1] == LegEnded(leg, Cause.CANCELLED, by_user=True)
    await fx.switch.close()


async def test_nobody_answers_an_inbound_call() -> None:
    fx = await make_switch(USERS, inbound_ring_timeout=20)
    bob = Phone(fx, "bob", 5070)
    leg, invite = await call_in(fx, bob, "1001")
    await asyncio.sleep(21)
    assert fx.statuses(invite.call_id)[-1] == 480
    assert fx.events[-1] == LegEnded(leg, Cause.NO_ANSWER, by_user=False)
    await fx.switch.close()


async def test_bye_waits_for_the_ack_and_a_missing_ack_ends_the_leg() -> None:
    fx = await make_switch(USERS)
    bob = Phone(fx, "bob", 5070)
    leg, invite = await call_in(fx, bob, "1001")
    await fx.switch.answer(leg)
    ok = bob.last_response(invite.call_id)
    await fx.switch.hangup(leg)
    assert fx.requests("BYE") == []  # not before the ACK (RFC 3261 §15)
    bob.ack(ok)
    (bye,) = fx.requests("BYE")
    assert bye.call_id == invite.call_id
    # Another call whose 200 is never ACKed: timer L (32 s) ends it with BYE.
    leg2, invite2 = await call_in(fx, bob, "1001")
    await fx.switch.answer(leg2)
    await asyncio.sleep(40)
    byes = list(dict.fromkeys(r.call_id for r in fx.requests("BYE")))  # without retransmissions
    assert byes == [invite.call_id, invite2.call_id]
    assert fx.events[-1] == LegEnded(leg2, Cause.FAILURE, by_user=False)
    await fx.switch.close()


async def test_reinvite_hold_and_resume_from_the_phone() -> None:
    from baton.switch.sip import Direction

    fx = await make_switch(USERS)
    bob = Phone(fx, "bob", 5070)
    leg, ok = await answered(fx, bob, "1001")
    engine_leg = fx.switch.media._legs[leg]
    hold = bob.in_dialog(ok, "INVITE", body=bob.sdp.offer(Direction.SENDONLY).to_bytes(),
                         content_type="application/sdp")  # fmt: skip
    answer = bob.last_response(hold.call_id)
    assert answer.status == 200 and b"a=recvonly" in answer.body
    assert not engine_leg.sending  # the phone holds: we stop sending to it
    bob.ack(answer)
    resume = bob.in_dialog(ok, "INVITE", body=bob.sdp.offer(Direction.SENDRECV).to_bytes(),
                           content_type="application/sdp")  # fmt: skip
    answer = bob.last_response(resume.call_id)
    assert b"a=sendrecv" in answer.body
    assert engine_leg.sending
    assert fx.switch.leg_state(leg) == "connected"
    await fx.switch.close()


async def test_info_dtmf_options_and_unknown_dialogs() -> None:
    fx = await make_switch(USERS)
    bob = Phone(fx, "bob", 5070)
    leg, ok = await answered(fx, bob, "1001")
    info = bob.in_dialog(ok, "INFO", body=b"Signal=5\r\nDuration=160\r\n",
                         content_type="application/dtmf-relay")  # fmt: skip
    assert fx.statuses(info.call_id, "INFO") == [200]
    assert fx.events[-1] == DtmfReceived(leg, "5")
    options = bob.in_dialog(ok, "OPTIONS")
    (pong,) = fx.responses(options.call_id, "OPTIONS")
    assert pong.status == 200 and "INVITE" in pong.headers.get_all("Allow")
    stray = bob.in_dialog(ok, "BYE")
    stray_again = bob.in_dialog(ok, "BYE")  # the dialog is gone now
    assert fx.statuses(stray.call_id, "BYE") == [200, 481]
    del stray_again
    await fx.switch.close()


async def test_resource_priority_is_mapped_if_the_user_may() -> None:
    fx = await make_switch(USERS)
    bob = Phone(fx, "bob", 5070)
    await call_in(fx, bob, "1001", headers=[("Resource-Priority", "ets.3, dsn.flash")])
    ev = fx.events[-1]
    assert isinstance(ev, InboundCall) and ev.priority == 30  # the higher of the two
    carol = Phone(fx, "carol", 5080)  # max_priority 10
    await call_in(fx, carol, "1001", headers=[("Resource-Priority", "dsn.flash")])
    ev = fx.events[-1]
    assert isinstance(ev, InboundCall) and ev.priority is None
    assert "max_priority" in ev.headers["Resource-Priority-Ignored"]
    invite = carol.invite("1001", headers=[("Resource-Priority", "foo.bar"),
                                           ("Require", "resource-priority")])  # fmt: skip
    refused = carol.last_response(invite.call_id)
    assert refused.status == 417
    assert "dsn.flash" in refused.headers.get_all("Accept-Resource-Priority")
    await fx.switch.close()


async def test_late_offer_our_offer_in_the_200_their_answer_in_the_ack() -> None:
    fx = await make_switch(USERS)
    bob = Phone(fx, "bob", 5070)
    leg, invite = await call_in(fx, bob, "1001", sdp=b"")
    await fx.switch.answer(leg)
    ok = bob.last_response(invite.call_id)
    assert b"a=sendrecv" in ok.body
    assert fx.switch.media.leg_stats(leg).remote is None
    answer = bob.sdp.answer(ok.body).answer.to_bytes()  # type: ignore[union-attr]
    bob.ack(ok, body=answer)
    assert fx.switch.media.leg_stats(leg).remote == ("127.0.0.1", bob.sdp.local.port)
    await fx.switch.close()


async def test_session_timer_expiry_ends_a_dead_phone() -> None:
    fx = await make_switch(USERS, session_expires=90)
    bob = Phone(fx, "bob", 5070)
    leg, invite = await call_in(fx, bob, "1001", headers=[("Supported", "timer")])
    await fx.switch.answer(leg)
    ok = bob.last_response(invite.call_id)
    assert ok.headers.get("Session-Expires") == "90;refresher=uac"  # the phone refreshes
    bob.ack(ok)
    await asyncio.sleep(50)
    refresh = [("Supported", "timer"), ("Session-Expires", "90;refresher=uac")]
    bob.in_dialog(ok, "UPDATE", headers=refresh)  # a refresh: the deadline moves
    await asyncio.sleep(50)
    assert fx.switch.leg_state(leg) == "connected"
    await asyncio.sleep(20)  # no refresh for 90 - 30 s: dead
    assert fx.events[-1] == LegEnded(leg, Cause.FAILURE, by_user=False)
    assert fx.requests("BYE")[-1].headers.get("Reason") == 'SIP ;cause=408 ;text="session expired"'
    await fx.switch.close()


async def test_we_refresh_when_the_phone_cannot() -> None:
    fx = await make_switch(USERS, session_expires=100)
    bob = Phone(fx, "bob", 5070)
    leg, ok = await answered(fx, bob, "1001")  # no Supported: timer → we refresh
    assert ok.headers.get("Session-Expires") == "100;refresher=uas"
    await asyncio.sleep(51)
    sent = {r.cseq.number: r for r in fx.requests("INVITE") if r.call_id == ok.call_id}
    (refresh,) = sent.values()  # one re-INVITE (retransmitted until answered)
    bob.respond(refresh, 200)
    assert any(r.method == "ACK" for r in fx.requests("ACK"))
    await asyncio.sleep(51)
    refreshes = {r.cseq.number for r in fx.requests("INVITE") if r.call_id == ok.call_id}
    assert len(refreshes) == 2  # the next one, half an interval after the last
    assert fx.switch.leg_state(leg) == "connected"
    await fx.switch.close()


async def test_media_timeout_ends_the_leg() -> None:
    fx = await make_switch(USERS, rtp_timeout=5)
    bob = Phone(fx, "bob", 5070)
    leg, _ = await answered(fx, bob, "1001")
    await asyncio.sleep(7)
    assert fx.events[-1] == LegEnded(leg, Cause.MEDIA_TIMEOUT, by_user=False)
    assert fx.requests("BYE")[-1].headers.get("Reason") == 'SIP ;cause=408 ;text="RTP timeout"'
    await fx.switch.close()


# ---- outbound ---------------------------------------------------------------------------


async def test_originate_errors_and_unreachable_after_the_command() -> None:
    fx = await make_switch(USERS)
    with pytest.raises(SwitchError, match="unknown user"):
        await fx.switch.originate("L1", "nobody")
    await fx.switch.originate("L1", "alice")  # alice never registered
    assert fx.events == []  # not during the command
    await asyncio.sleep(0)
    assert fx.events == [LegFailed("L1", Cause.UNREACHABLE)]
    await fx.switch.originate("L2", "bob")
    with pytest.raises(SwitchError, match="in use"):
        await fx.switch.originate("L2", "bob")
    await fx.switch.close()


async def test_fork_first_answer_wins_the_others_are_cancelled() -> None:
    fx = await make_switch(USERS)
    desk = Phone(fx, "bob", 5070)
    mobile = Phone(fx, "bob", 5072)
    fx.switch.registrar.add_static("bob", "<sip:bob-mobile@127.0.0.1:5072>")
    await fx.switch.originate("L1", "bob", caller="alice", priority=30)
    (to_desk,), (to_mobile,) = desk.invites(), mobile.invites()
    assert to_desk.call_id != to_mobile.call_id
    assert to_mobile.uri.user == "bob-mobile"  # type: ignore[union-attr]
    assert to_desk.headers.get("Resource-Priority") == "dsn.flash"
    assert to_desk.from_.uri.user == "1001"  # type: ignore[union-attr]
    desk.answer(to_desk, 180)
    assert fx.events == [LegRinging("L1")]
    mobile.answer(to_mobile, 180)
    mobile.answer(to_mobile, 200)
    assert fx.events == [LegRinging("L1"), LegAnswered("L1")]
    assert [a.call_id for a in fx.requests("ACK")] == [to_mobile.call_id]
    (cancel,) = fx.requests("CANCEL")
    assert cancel.call_id == to_desk.call_id
    desk.answer(to_desk, 487)
    assert fx.events == [LegRinging("L1"), LegAnswered("L1")]
    assert fx.switch.media.leg_stats("L1").remote == ("127.0.0.1", mobile.sdp.local.port)
    await fx.switch.hangup("L1", Cause.PREEMPTED, EndReason.preempted("emergency#1"))
    (bye,) = fx.requests("BYE")
    assert bye.call_id == to_mobile.call_id
    assert bye.headers.get("Reason") == 'preemption ;cause=1 ;text="emergency#1"'
    await fx.switch.close()


@pytest.mark.parametrize(
    ("statuses", "cause"),
    [
        ((486,), Cause.BUSY),
        ((600,), Cause.BUSY),
        ((480,), Cause.NO_ANSWER),
        ((603,), Cause.REJECTED),
        ((403,), Cause.REJECTED),
        ((404,), Cause.UNREACHABLE),
        ((488,), Cause.INCOMPATIBLE),
        ((500,), Cause.FAILURE),
        ((404, 486), Cause.BUSY),  # the most telling of the fork
        ((480, 404), Cause.NO_ANSWER),
    ],
)
async def test_failures_map_to_causes(statuses: tuple[int, ...], cause: Cause) -> None:
    fx = await make_switch(USERS)
    phones = [Phone(fx, "bob", 5070)]
    if len(statuses) > 1:
        fx.switch.registrar.add_static("bob", "<sip:bob@127.0.0.1:5072>")
        phones.append(Phone(fx, "bob", 5072))
    await fx.switch.originate("L1", "bob")
    for phone, status in zip(phones, statuses, strict=True):
        (invite,) = phone.invites()
        phone.answer(invite, status)
    assert fx.events == [LegFailed("L1", cause)]
    assert len(fx.requests("ACK")) == len(statuses)  # each error was ACKed (by the layer)
    await fx.switch.close()


async def test_global_failure_ends_the_fork_at_once() -> None:
    fx = await make_switch(USERS)
    desk, mobile = Phone(fx, "bob", 5070), Phone(fx, "bob", 5072)
    fx.switch.registrar.add_static("bob", "<sip:bob@127.0.0.1:5072>")
    await fx.switch.originate("L1", "bob")
    (to_desk,), (to_mobile,) = desk.invites(), mobile.invites()
    mobile.answer(to_mobile, 180)
    desk.answer(to_desk, 603)
    assert fx.events == [LegRinging("L1"), LegFailed("L1", Cause.REJECTED)]
    (cancel,) = fx.requests("CANCEL")
    assert cancel.call_id == to_mobile.call_id
    await fx.switch.close()


async def test_hangup_while_ringing_cancels_and_a_crossing_200_is_acked_and_ended() -> None:
    fx = await make_switch(USERS)
    bob = Phone(fx, "bob", 5070)
    await fx.switch.originate("L1", "bob")
    (invite,) = bob.invites()
    await fx.switch.hangup("L1", Cause.CANCELLED)
    assert fx.requests("CANCEL") == []  # no provisional yet: the CANCEL waits (§9.1)
    bob.answer(invite, 180)
    (cancel,) = fx.requests("CANCEL")
    bob.answer(invite, 200)  # crossed the CANCEL
    assert [r.call_id for r in fx.requests("ACK")] == [invite.call_id]
    assert [r.call_id for r in fx.requests("BYE")] == [invite.call_id]
    assert fx.events == []  # for the core the call never happened
    del cancel
    await fx.switch.close()


async def test_no_response_at_all_is_no_answer() -> None:
    fx = await make_switch(USERS)
    await fx.switch.originate("L1", "bob")
    await asyncio.sleep(40)  # timer B
    assert fx.events == [LegFailed("L1", Cause.NO_ANSWER)]
    await fx.switch.close()


# ---- rooms ------------------------------------------------------------------------------


async def outbound(fx: Fx, leg: str, user: str, port: int) -> Phone:
    phone = Phone(fx, user, port)
    if user != "bob":
        fx.switch.registrar.add_static(user, f"<sip:{user}@127.0.0.1:{port}>")
    await fx.switch.originate(leg, user)
    phone.answer(phone.invites()[-1], 200)
    assert fx.switch.leg_state(leg) == "connected"
    return phone


async def test_a_leg_is_in_one_room_at_a_time() -> None:
    fx = await make_switch([*USERS, U("dave"), U("erin")])
    await outbound(fx, "A", "bob", 5070)
    await outbound(fx, "B", "dave", 5090)
    await outbound(fx, "C", "erin", 5092)
    sw = fx.switch
    await sw.bridge("A", "B")
    assert sw.bridged_to("A") == "B"
    await sw.create_meeting("M")
    await sw.join("M", Member("A"))
    assert sw.bridged_to("A") is None and sw.bridged_to("B") is None  # B is left idle
    assert sw.meeting_of("A") == "M"
    await sw.join("M", Member("C"))
    await sw.join("M", Member("B", MeetingMode.WHISPER, whisper_to="A"))
    await sw.bridge("A", "C")  # out of the meeting, in the same step
    assert sw.meeting_of("A") is None and sw.meeting_of("C") is None
    assert sw.media.mixer.meeting_members("M")["B"].mode is MeetingMode.MUTED  # A left
    with pytest.raises(SwitchError):
        await sw.join("M", Member("C", MeetingMode.WHISPER, whisper_to="A"))
    pb = await sw.play(Target(leg="A"), Tone("ringback"), loop=True)
    await sw.clear("A")
    assert sw.bridged_to("A") is None
    assert pb not in sw.media.mixer.playbacks
    with pytest.raises(SwitchError):
        await sw.bridge("A", "nope")
    await sw.clear("nope")  # idempotent on unknown legs
    await sw.hangup("nope")
    await sw.destroy_meeting("M")
    await sw.destroy_meeting("M")
    await sw.close()


async def test_close_hangs_up_every_leg() -> None:
    fx = await make_switch(USERS)
    await outbound(fx, "A", "bob", 5070)
    bob = Phone(fx, "bob", 5070)
    del bob
    await fx.switch.close()
    assert [r.method for r in fx.requests("BYE")] == ["BYE"]
    assert fx.switch.legs == {}
