"""RFC 3261 §17 transactions and the transaction layer, every timer in virtual time.

No test sleeps: time is the ``now`` passed to the layer, and a transaction's timers fire when
the test says so.
"""

from __future__ import annotations

import pytest
from sipfixtures import sip, torture

from baton.switch.sip.errors import LocalProtocolError
from baton.switch.sip.message import Request, Response, make_response, parse_message
from baton.switch.sip.transaction import (
    AckReceived,
    Action,
    CancelTimer,
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    DeliverToTU,
    LayerEvent,
    MessageDropped,
    Peer,
    RequestReceived,
    ResponseReceived,
    SendMessage,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    StartTimer,
    State,
    StrayResponse,
    Terminated,
    Timeout,
    Timer,
    TimerConfig,
    TransactionFailed,
    TransactionKey,
    TransactionLayer,
    TransactionTerminated,
    TransactionTimedOut,
    Transmit,
    TransportFailure,
    new_branch,
)

TIMERS = TimerConfig()
UAC = Peer("udp", "192.0.2.10", 5070)
UAS = Peer("udp", "192.0.2.20", 5060)


def request(method: str = "INVITE", branch: str = "z9hG4bKabc", *, via_host: str = "192.0.2.10:5070",
            transport: str = "UDP", to_tag: str = "", cseq: int = 1, call_id: str = "call-1") -> Request:  # fmt: skip
    to = "<sip:bob@192.0.2.20>" + (f";tag={to_tag}" if to_tag else "")
    message = parse_message(
        sip(
            f"""
            {method} sip:bob@192.0.2.20 SIP/2.0
            Via: SIP/2.0/{transport} {via_host};branch={branch};rport
            Max-Forwards: 70
            From: <sip:alice@192.0.2.10>;tag=from1
            To: {to}
            Call-ID: {call_id}
            CSeq: {cseq} {method}
            Contact: <sip:alice@192.0.2.10:5070>
            Content-Length: 0
            """
        )
    )
    assert isinstance(message, Request)
    return message


def response(req: Request, status: int, to_tag: str = "to1") -> Response:
    return make_response(req, status, to_tag=to_tag)


def transmitted(actions: list[Action]) -> list[Request | Response]:
    return [a.message for a in actions if isinstance(a, Transmit)]


def started(actions: list[Action]) -> dict[Timer, float]:
    return {a.timer: a.seconds for a in actions if isinstance(a, StartTimer)}


def statuses(messages: list[Request | Response]) -> list[int | str]:
    return [m.status if isinstance(m, Response) else m.method for m in messages]


# ---- client INVITE -------------------------------------------------------------------------


def test_client_invite_start_over_udp() -> None:
    tx = ClientInviteTransaction(request(), reliable=False, timers=TIMERS)
    actions = tx.start()
    assert statuses(transmitted(actions)) == ["INVITE"]
    assert started(actions) == {Timer.A: 0.5, Timer.B: 32.0}
    assert tx.state is State.CALLING
    with pytest.raises(LocalProtocolError, match="already started"):
        tx.start()


def test_timer_a_doubles_without_cap_until_timer_b() -> None:
    tx = ClientInviteTransaction(request(), reliable=False, timers=TIMERS)
    tx.start()
    intervals = []
    for _ in range(6):
        actions = tx.timer_fired(Timer.A)
        assert statuses(transmitted(actions)) == ["INVITE"]
        intervals.append(started(actions)[Timer.A])
    assert intervals == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]
    actions = tx.timer_fired(Timer.B)
    assert Timeout(Timer.B) in actions
    assert actions[-1] == Terminated()
    assert CancelTimer(Timer.A) in actions
    assert tx.terminated


def test_provisional_stops_retransmission_and_timer_b() -> None:
    invite = request()
    tx = ClientInviteTransaction(invite, reliable=False, timers=TIMERS)
    tx.start()
    ringing = response(invite, 180)
    actions = tx.receive(ringing)
    assert actions == [CancelTimer(Timer.A), CancelTimer(Timer.B), DeliverToTU(ringing)]
    assert tx.state is State.PROCEEDING
    assert tx.timer_fired(Timer.A) == []  # stale timers are ignored
    assert tx.timer_fired(Timer.B) == []
    assert tx.receive(ringing) == [DeliverToTU(ringing)]


def test_2xx_goes_to_accepted_and_every_2xx_reaches_the_tu() -> None:
    invite = request()
    tx = ClientInviteTransaction(invite, reliable=False, timers=TIMERS)
    tx.start()
    ok = response(invite, 200)
    actions = tx.receive(ok)
    assert DeliverToTU(ok) in actions
    assert started(actions) == {Timer.M: 32.0}
    assert transmitted(actions) == []  # the TU ACKs a 2xx, not the transaction
    assert tx.state is State.ACCEPTED
    assert tx.receive(ok) == [DeliverToTU(ok)]  # a retransmitted 2xx: the TU ACKs it again
    assert tx.receive(response(invite, 486)) == []
    assert tx.timer_fired(Timer.M) == [Terminated()]


def test_failure_is_acked_by_the_transaction() -> None:
    invite = request()
    invite.headers.add("Route", "<sip:proxy.example;lr>")
    tx = ClientInviteTransaction(invite, reliable=False, timers=TIMERS)
    tx.start()
    busy = response(invite, 486, to_tag="callee")
    actions = tx.receive(busy)
    assert DeliverToTU(busy) in actions
    (ack,) = transmitted(actions)
    assert isinstance(ack, Request)
    assert ack.method == "ACK"
    assert ack.uri == invite.uri
    assert ack.headers.get_all("Via") == [invite.headers.get("Via")]
    assert ack.cseq.number == invite.cseq.number
    assert ack.cseq.method == "ACK"
    assert ack.to.tag == "callee"
    assert ack.from_ == invite.from_
    assert ack.call_id == invite.call_id
    assert ack.headers.get_all("Route") == ["<sip:proxy.example;lr>"]
    assert started(actions) == {Timer.D: 32.0}
    assert tx.state is State.COMPLETED
    again = tx.receive(busy)  # the 486 retransmitted: ACK again, do not bother the TU
    assert statuses(transmitted(again)) == ["ACK"]
    assert not any(isinstance(a, DeliverToTU) for a in again)
    assert tx.timer_fired(Timer.D) == [Terminated()]


def test_failure_after_provisional() -> None:
    invite = request()
    tx = ClientInviteTransaction(invite, reliable=False, timers=TIMERS)
    tx.start()
    tx.receive(response(invite, 183))
    actions = tx.receive(response(invite, 487))
    assert statuses(transmitted(actions)) == ["ACK"]
    assert tx.state is State.COMPLETED


def test_client_invite_over_tcp_has_no_a_and_zero_d() -> None:
    invite = request(transport="TCP")
    tx = ClientInviteTransaction(invite, reliable=True, timers=TIMERS)
    assert started(tx.start()) == {Timer.B: 32.0}
    actions = tx.receive(response(invite, 603))
    assert statuses(transmitted(actions)) == ["ACK"]
    assert actions[-1] == Terminated()  # timer D is zero: terminated at once
    assert tx.terminated


def test_client_invite_transport_error() -> None:
    tx = ClientInviteTransaction(request(), reliable=False, timers=TIMERS)
    tx.start()
    actions = tx.transport_error()
    assert TransportFailure() in actions
    assert actions[-1] == Terminated()
    assert tx.transport_error() == []


def test_terminate_is_idempotent() -> None:
    tx = ClientInviteTransaction(request(), reliable=False, timers=TIMERS)
    tx.start()
    tx.receive(response(request(), 180))
    assert tx.terminate() == [Terminated()]
    assert tx.terminate() == []


# ---- client non-INVITE ---------------------------------------------------------------------


def test_timer_e_doubles_to_t2_and_timer_f_times_out() -> None:
    tx = ClientNonInviteTransaction(request("OPTIONS"), reliable=False, timers=TIMERS)
    assert started(tx.start()) == {Timer.E: 0.5, Timer.F: 32.0}
    intervals = [started(tx.timer_fired(Timer.E))[Timer.E] for _ in range(6)]
    assert intervals == [1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    actions = tx.timer_fired(Timer.F)
    assert Timeout(Timer.F) in actions
    assert tx.terminated


def test_provisional_moves_timer_e_to_t2() -> None:
    options = request("OPTIONS")
    tx = ClientNonInviteTransaction(options, reliable=False, timers=TIMERS)
    tx.start()
    assert tx.receive(response(options, 100)) == [DeliverToTU(response(options, 100))]
    assert tx.state is State.PROCEEDING
    actions = tx.timer_fired(Timer.E)
    assert statuses(transmitted(actions)) == ["OPTIONS"]
    assert started(actions) == {Timer.E: 4.0}


@pytest.mark.parametrize("status", [200, 404])
def test_final_response_completes_with_timer_k(status: int) -> None:
    options = request("OPTIONS")
    tx = ClientNonInviteTransaction(options, reliable=False, timers=TIMERS)
    tx.start()
    final = response(options, status)
    actions = tx.receive(final)
    assert actions == [CancelTimer(Timer.E), CancelTimer(Timer.F), DeliverToTU(final),
                       StartTimer(Timer.K, 5.0)]  # fmt: skip
    assert tx.receive(final) == []  # absorbed
    assert tx.timer_fired(Timer.K) == [Terminated()]


def test_client_non_invite_over_tcp() -> None:
    options = request("OPTIONS", transport="TCP")
    tx = ClientNonInviteTransaction(options, reliable=True, timers=TIMERS)
    assert started(tx.start()) == {Timer.F: 32.0}
    actions = tx.receive(response(options, 200))
    assert actions[-1] == Terminated()  # timer K is zero


def test_custom_t1() -> None:
    tx = ClientNonInviteTransaction(request("OPTIONS"), reliable=False,
                                    timers=TimerConfig(t1=0.1, t2=0.8))  # fmt: skip
    assert started(tx.start()) == {Timer.E: 0.1, Timer.F: 6.4}


# ---- server INVITE -------------------------------------------------------------------------


def test_server_invite_sends_100_trying_after_200_ms_of_silence() -> None:
    invite = request()
    invite.headers.add("Timestamp", "1.5")
    tx = ServerInviteTransaction(invite, reliable=False, timers=TIMERS)
    assert tx.start() == [StartTimer(Timer.TRYING, 0.2)]
    (trying,) = transmitted(tx.timer_fired(Timer.TRYING))
    assert isinstance(trying, Response)
    assert trying.status == 100
    assert trying.to.tag is None
    assert trying.headers.get("Timestamp") == "1.5"
    assert statuses(transmitted(tx.receive(invite))) == [100]  # retransmitted INVITE


def test_no_100_trying_when_the_tu_answers_first() -> None:
    invite = request()
    tx = ServerInviteTransaction(invite, reliable=False, timers=TIMERS)
    tx.start()
    actions = tx.respond(response(invite, 180))
    assert actions[0] == CancelTimer(Timer.TRYING)
    assert statuses(transmitted(actions)) == [180]
    assert tx.timer_fired(Timer.TRYING) == []
    assert statuses(transmitted(tx.receive(invite))) == [180]


def test_immediate_100_trying_when_delay_is_zero() -> None:
    tx = ServerInviteTransaction(request(), reliable=False, timers=TimerConfig(trying_delay=0))
    assert statuses(transmitted(tx.start())) == [100]


def test_request_retransmission_before_any_response_is_absorbed() -> None:
    invite = request()
    tx = ServerInviteTransaction(invite, reliable=False, timers=TIMERS)
    tx.start()
    assert tx.receive(invite) == []


def test_server_failure_retransmits_with_timer_g_until_ack() -> None:
    invite = request()
    tx = ServerInviteTransaction(invite, reliable=False, timers=TIMERS)
    tx.start()
    actions = tx.respond(response(invite, 486))
    assert statuses(transmitted(actions)) == [486]
    assert started(actions) == {Timer.G: 0.5, Timer.H: 32.0}
    intervals = []
    for _ in range(5):
        fired = tx.timer_fired(Timer.G)
        assert statuses(transmitted(fired)) == [486]
        intervals.append(started(fired)[Timer.G])
    assert intervals == [1.0, 2.0, 4.0, 4.0, 4.0]
    assert statuses(transmitted(tx.receive(invite))) == [486]
    ack = request("ACK")
    actions = tx.receive(ack)
    assert actions == [CancelTimer(Timer.G), CancelTimer(Timer.H), StartTimer(Timer.I, 5.0)]
    assert tx.state is State.CONFIRMED
    assert tx.receive(ack) == []  # ACK retransmissions absorbed
    assert tx.receive(invite) == []
    assert tx.timer_fired(Timer.I) == [Terminated()]


def test_server_failure_without_ack_times_out_with_h() -> None:
    invite = request()
    tx = ServerInviteTransaction(invite, reliable=False, timers=TIMERS)
    tx.start()
    tx.respond(response(invite, 480))
    actions = tx.timer_fired(Timer.H)
    assert Timeout(Timer.H) in actions
    assert CancelTimer(Timer.G) in actions
    assert tx.terminated


def test_server_invite_over_tcp() -> None:
    invite = request(transport="TCP")
    tx = ServerInviteTransaction(invite, reliable=True, timers=TIMERS)
    tx.start()
    assert started(tx.respond(response(invite, 486))) == {Timer.H: 32.0}  # no G over TCP
    actions = tx.receive(request("ACK", transport="TCP"))
    assert actions[-1] == Terminated()  # timer I is zero


def test_server_2xx_is_retransmitted_in_accepted_until_the_ack() -> None:
    invite = request()
    tx = ServerInviteTransaction(invite, reliable=False, timers=TIMERS)
    tx.start()
    ok = response(invite, 200)
    actions = tx.respond(ok)
    assert statuses(transmitted(actions)) == [200]
    assert started(actions) == {Timer.G: 0.5, Timer.L: 32.0}
    assert tx.state is State.ACCEPTED
    assert statuses(transmitted(tx.timer_fired(Timer.G))) == [200]
    assert tx.receive(invite) == []  # RFC 6026: INVITE retransmissions absorbed in Accepted
    ack = request("ACK", branch="z9hG4bKack", to_tag="to1")
    actions = tx.receive(ack)
    assert actions == [CancelTimer(Timer.G), DeliverToTU(ack)]
    assert tx.state is State.CONFIRMED
    assert tx.timer_fired(Timer.G) == []
    assert tx.timer_fired(Timer.L) == [Terminated()]


def test_server_2xx_without_ack_times_out_with_l() -> None:
    invite = request()
    tx = ServerInviteTransaction(invite, reliable=False, timers=TIMERS)
    tx.start()
    tx.respond(response(invite, 200))
    actions = tx.timer_fired(Timer.L)
    assert Timeout(Timer.L) in actions
    assert tx.terminated


def test_tu_may_resend_2xx_but_not_change_its_mind() -> None:
    invite = request()
    tx = ServerInviteTransaction(invite, reliable=False, timers=TIMERS)
    tx.start()
    tx.respond(response(invite, 200))
    assert statuses(transmitted(tx.respond(response(invite, 200)))) == [200]
    with pytest.raises(LocalProtocolError, match="Accepted cannot accept: TU sends 300-699"):
        tx.respond(response(invite, 500))
    with pytest.raises(LocalProtocolError, match="TU sends 1xx"):
        tx.respond(response(invite, 180))


def test_second_final_response_is_a_local_error() -> None:
    invite = request()
    tx = ServerInviteTransaction(invite, reliable=False, timers=TIMERS)
    tx.start()
    tx.respond(response(invite, 486))
    with pytest.raises(LocalProtocolError, match="server INVITE transaction in state Completed"):
        tx.respond(response(invite, 200))


def test_transport_error_in_accepted_keeps_the_transaction() -> None:
    invite = request()
    tx = ServerInviteTransaction(invite, reliable=False, timers=TIMERS)
    tx.start()
    tx.respond(response(invite, 200))
    actions = tx.transport_error()
    assert TransportFailure() in actions
    assert tx.state is State.ACCEPTED


# ---- server non-INVITE ---------------------------------------------------------------------


def test_server_non_invite_absorbs_and_retransmits() -> None:
    bye = request("BYE")
    tx = ServerNonInviteTransaction(bye, reliable=False, timers=TIMERS)
    assert tx.start() == []  # no 100 Trying for non-INVITE
    assert tx.receive(bye) == []
    actions = tx.respond(response(bye, 200))
    assert statuses(transmitted(actions)) == [200]
    assert started(actions) == {Timer.J: 32.0}
    assert statuses(transmitted(tx.receive(bye))) == [200]
    with pytest.raises(LocalProtocolError):
        tx.respond(response(bye, 500))
    assert tx.timer_fired(Timer.J) == [Terminated()]


def test_server_non_invite_provisional() -> None:
    register = request("REGISTER")
    tx = ServerNonInviteTransaction(register, reliable=False, timers=TIMERS)
    tx.respond(response(register, 100))
    assert tx.state is State.PROCEEDING
    assert statuses(transmitted(tx.receive(register))) == [100]
    tx.respond(response(register, 200))
    assert tx.state is State.COMPLETED


def test_server_non_invite_over_tcp_terminates_after_final() -> None:
    bye = request("BYE", transport="TCP")
    tx = ServerNonInviteTransaction(bye, reliable=True, timers=TIMERS)
    actions = tx.respond(response(bye, 200))
    assert statuses(transmitted(actions)) == [200]
    assert actions[-1] == Terminated()


# ---- the layer -----------------------------------------------------------------------------


def sends(events: list[LayerEvent]) -> list[tuple[int | str, Peer]]:
    return [(statuses([e.message])[0], e.peer) for e in events if isinstance(e, SendMessage)]


def of_type(events: list[LayerEvent], kind: type) -> list[LayerEvent]:
    return [e for e in events if isinstance(e, kind)]


def test_layer_client_invite_retransmits_in_virtual_time_and_times_out() -> None:
    layer = TransactionLayer()
    key, events = layer.send_request(request(branch=new_branch()), UAS, now=100.0)
    assert sends(events) == [("INVITE", UAS)]
    assert layer.next_deadline() == 100.5
    fired_at = []
    now = 100.0
    while (deadline := layer.next_deadline()) is not None:
        now = deadline
        events = layer.advance(now)
        if sends(events):
            fired_at.append(now - 100.0)
    assert fired_at == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert isinstance(events[0], TransactionTimedOut)
    assert events[0].timer is Timer.B
    assert now == 132.0
    assert of_type(events, TransactionTerminated) == [TransactionTerminated(key)]
    assert len(layer) == 0


def test_layer_advance_catches_up_in_order() -> None:
    layer = TransactionLayer()
    layer.send_request(request("OPTIONS", branch=new_branch()), UAS, now=0.0)
    events = layer.advance(40.0)  # one late call: every retransmission, then timer F
    assert len(sends(events)) == 10
    assert isinstance(events[-2], TransactionTimedOut)
    assert events[-2].timer is Timer.F
    assert layer.next_deadline() is None


def test_layer_matches_responses_by_branch_and_method() -> None:
    layer = TransactionLayer()
    invite = request(branch="z9hG4bKone")
    key, _ = layer.send_request(invite, UAS, now=0.0)
    assert key == TransactionKey("z9hG4bKone", "INVITE")
    cancel = request("CANCEL", branch="z9hG4bKone")
    cancel_key, _ = layer.send_request(cancel, UAS, now=0.1)
    assert cancel_key == TransactionKey("z9hG4bKone", "CANCEL")
    ok_cancel = response(cancel, 200)
    events = layer.receive(ok_cancel, UAS, now=0.2)
    assert events[0] == ResponseReceived(ok_cancel, cancel_key)
    terminated = response(invite, 487)
    events = layer.receive(terminated, UAS, now=0.3)
    assert events[0] == ResponseReceived(terminated, key)
    assert sends(events) == [("ACK", UAS)]


def test_layer_stray_and_multi_via_responses() -> None:
    layer = TransactionLayer()
    stray = response(request(branch="z9hG4bKnone"), 200)
    assert layer.receive(stray, UAS, now=0.0) == [StrayResponse(stray, UAS)]
    bcast = parse_message(torture("bcast"))
    assert isinstance(bcast, Response)
    (dropped,) = layer.receive(bcast, UAS, now=0.0)
    assert isinstance(dropped, MessageDropped)
    assert "more than one Via" in dropped.reason


def test_layer_server_transaction_absorbs_retransmissions() -> None:
    layer = TransactionLayer()
    events = layer.receive(request(), UAC, now=0.0)
    (received,) = of_type(events, RequestReceived)
    assert isinstance(received, RequestReceived)
    assert received.key == TransactionKey("z9hG4bKabc", "INVITE", ("192.0.2.10", 5070), True)
    assert layer.receive(request(), UAC, now=0.1) == []  # retransmission: no new request
    assert sends(layer.advance(0.2)) == [(100, UAC)]
    assert sends(layer.receive(request(), UAC, now=0.3)) == [(100, UAC)]
    elsewhere = Peer("udp", "192.0.2.11", 5070)
    other = layer.receive(request(via_host="192.0.2.11:5070", call_id="call-2"), elsewhere, 0.4)
    assert len(of_type(other, RequestReceived)) == 1  # same branch, other sent-by: new transaction


def test_layer_merged_request_gets_482() -> None:
    layer = TransactionLayer()
    (first,) = of_type(layer.receive(request(branch="z9hG4bKpath1"), UAC, now=0.0), RequestReceived)
    assert isinstance(first, RequestReceived)
    # The same request (Call-ID, From tag, CSeq) by a second path: a new branch, no To tag.
    events = layer.receive(request(branch="z9hG4bKpath2"), UAC, now=0.1)
    assert of_type(events, RequestReceived) == []
    assert sends(events) == [(482, UAC)]
    assert sends(layer.receive(request(branch="z9hG4bKpath2"), UAC, now=0.2)) == [(482, UAC)]
    in_dialog = layer.receive(request("INFO", branch="z9hG4bKp3", to_tag="t"), UAC, now=0.3)
    assert len(of_type(in_dialog, RequestReceived)) == 1  # requests with a To tag: not checked
    layer.send_response(first.key, response(first.request, 486), now=0.4)
    layer.advance(100.0)  # every transaction over: the same request is new again
    assert (
        len(of_type(layer.receive(request(branch="z9hG4bKpath4"), UAC, now=100.0), RequestReceived))
        == 1
    )


def test_layer_stamps_received_and_rport() -> None:
    layer = TransactionLayer()
    behind_nat = Peer("udp", "203.0.113.5", 40000)
    events = layer.receive(request(), behind_nat, now=0.0)
    (received,) = of_type(events, RequestReceived)
    assert isinstance(received, RequestReceived)
    via = received.request.top_via
    assert via.received == "203.0.113.5"
    assert via.rport == 40000
    answer = make_response(received.request, 200, to_tag="t")
    (sent,) = of_type(layer.send_response(received.key, answer, now=0.1), SendMessage)
    assert isinstance(sent, SendMessage)
    assert sent.peer == behind_nat  # back to where it came from
    assert sent.message.top_via.rport == 40000


def test_layer_response_goes_to_sent_by_port_without_rport() -> None:
    layer = TransactionLayer()
    options = request("OPTIONS")
    options.headers.replace_first("Via", "SIP/2.0/UDP 192.0.2.10:5072;branch=z9hG4bKx")
    events = layer.receive(options, Peer("udp", "192.0.2.10", 33333), now=0.0)
    (received,) = of_type(events, RequestReceived)
    assert isinstance(received, RequestReceived)
    assert received.request.top_via.received is None  # same host: nothing to add
    (sent,) = of_type(layer.send_response(received.key, response(options, 200), 0.0), SendMessage)
    assert isinstance(sent, SendMessage)
    assert sent.peer == Peer("udp", "192.0.2.10", 5072)


def test_layer_tcp_response_reuses_the_connection() -> None:
    layer = TransactionLayer()
    peer = Peer("tcp", "192.0.2.10", 51234)
    events = layer.receive(request("OPTIONS", transport="TCP"), peer, now=0.0)
    (received,) = of_type(events, RequestReceived)
    assert isinstance(received, RequestReceived)
    events = layer.send_response(received.key, response(received.request, 200), 0.0)
    assert sends(events) == [(200, peer)]
    assert of_type(events, TransactionTerminated)  # J is zero over TCP


def test_layer_ack_of_error_response_is_absorbed() -> None:
    layer = TransactionLayer()
    invite = request()
    (received,) = of_type(layer.receive(invite, UAC, now=0.0), RequestReceived)
    assert isinstance(received, RequestReceived)
    layer.send_response(received.key, response(invite, 486, to_tag="t9"), now=0.1)
    events = layer.receive(request("ACK", to_tag="t9"), UAC, now=0.2)
    assert events == []
    tx = layer.transaction(received.key)
    assert tx is not None
    assert tx.state is State.CONFIRMED
    assert of_type(layer.advance(5.2), TransactionTerminated)


def test_layer_2xx_ack_is_matched_by_dialog_and_stops_retransmissions() -> None:
    layer = TransactionLayer()
    invite = request()
    (received,) = of_type(layer.receive(invite, UAC, now=0.0), RequestReceived)
    assert isinstance(received, RequestReceived)
    layer.send_response(received.key, response(invite, 200, to_tag="t2"), now=1.0)
    assert sends(layer.advance(1.5)) == [(200, UAC)]  # timer G retransmits the 2xx
    ack = request("ACK", branch="z9hG4bKnewbranch", to_tag="t2")
    events = layer.receive(ack, UAC, now=1.6)
    assert events == [AckReceived(ack, UAC, received.key)]
    assert layer.receive(ack, UAC, now=1.7) == []  # a repeated ACK is absorbed
    assert sends(layer.advance(10.0)) == []
    assert of_type(layer.advance(33.0), TransactionTerminated)
    late = layer.receive(ack, UAC, now=40.0)
    assert late == [AckReceived(ack, UAC, None)]  # after L: still the dialog's business


def test_layer_2xx_without_ack_reports_timer_l() -> None:
    layer = TransactionLayer()
    invite = request()
    (received,) = of_type(layer.receive(invite, UAC, now=0.0), RequestReceived)
    assert isinstance(received, RequestReceived)
    layer.send_response(received.key, response(invite, 200), now=0.0)
    events = layer.advance(100.0)
    assert len(sends(events)) == 10  # G: 0.5, 1.5, 3.5, 7.5, then every 4 s up to 31.5
    (timeout,) = of_type(events, TransactionTimedOut)
    assert isinstance(timeout, TransactionTimedOut)
    assert timeout.timer is Timer.L


def test_layer_cancel_matches_its_invite() -> None:
    layer = TransactionLayer()
    invite = request()
    (received,) = of_type(layer.receive(invite, UAC, now=0.0), RequestReceived)
    assert isinstance(received, RequestReceived)
    events = layer.receive(request("CANCEL"), UAC, now=0.1)
    (cancel,) = of_type(events, RequestReceived)
    assert isinstance(cancel, RequestReceived)
    assert cancel.cancels == received.key
    assert cancel.key.method == "CANCEL"


def test_layer_cancel_matching_nothing_gets_481() -> None:
    layer = TransactionLayer()
    events = layer.receive(request("CANCEL", branch="z9hG4bKnothing"), UAC, now=0.0)
    assert of_type(events, RequestReceived) == []
    assert sends(events) == [(481, UAC)]
    assert sends(layer.receive(request("CANCEL", branch="z9hG4bKnothing"), UAC, now=0.1)) == [
        (481, UAC)
    ]


def test_layer_stray_ack_goes_to_the_tu() -> None:
    layer = TransactionLayer()
    ack = request("ACK", branch="z9hG4bKlost", to_tag="x")
    assert layer.receive(ack, UAC, now=0.0) == [AckReceived(ack, UAC, None)]


def test_layer_rejects_empty_branch_statelessly() -> None:
    layer = TransactionLayer()
    message = parse_message(torture("badbranch"))
    assert isinstance(message, Request)
    events = layer.receive(message, Peer("udp", "192.0.2.1", 5060), now=0.0)
    assert sends(events) == [(400, Peer("udp", "192.0.2.1", 5060))]
    (sent,) = events
    assert isinstance(sent, SendMessage)
    assert isinstance(sent.message, Response)
    assert sent.message.reason == "Missing Transaction Identifier"
    assert len(layer) == 0


def test_layer_rfc2543_request_matching() -> None:
    layer = TransactionLayer()
    peer = Peer("udp", "192.0.2.99", 5060)
    invite = parse_message(torture("inv2543"))
    assert isinstance(invite, Request)
    (received,) = of_type(layer.receive(invite, peer, now=0.0), RequestReceived)
    assert isinstance(received, RequestReceived)
    assert received.key.branch.startswith("rfc2543|")
    again = parse_message(torture("inv2543"))
    assert layer.receive(again, peer, now=0.1) == []  # matched without a branch
    layer.send_response(received.key, make_response(received.request, 404, to_tag="t"), now=0.2)
    ack = parse_message(
        torture("inv2543")
        .replace(b"INVITE sip:UserB@example.com", b"ACK sip:UserB@example.com")
        .replace(b"CSeq: 56 INVITE", b"CSeq: 56 ACK")
    )
    assert isinstance(ack, Request)
    assert layer.receive(ack, peer, now=0.3) == []
    tx = layer.transaction(received.key)
    assert tx is not None
    assert tx.state is State.CONFIRMED


def test_layer_send_request_refuses_bad_requests() -> None:
    layer = TransactionLayer()
    with pytest.raises(LocalProtocolError, match="ACK"):
        layer.send_request(request("ACK"), UAS, now=0.0)
    with pytest.raises(LocalProtocolError, match="branch"):
        layer.send_request(request(branch="oldstyle"), UAS, now=0.0)
    with pytest.raises(LocalProtocolError, match="branch"):
        layer.send_request(request(branch="z9hG4bK"), UAS, now=0.0)
    no_via = request()
    no_via.headers.remove("Via")
    with pytest.raises(LocalProtocolError, match="Via"):
        layer.send_request(no_via, UAS, now=0.0)
    layer.send_request(request(branch="z9hG4bKdup"), UAS, now=0.0)
    with pytest.raises(LocalProtocolError, match="already exists"):
        layer.send_request(request(branch="z9hG4bKdup"), UAS, now=0.0)
    with pytest.raises(LocalProtocolError, match="no server transaction"):
        layer.send_response(TransactionKey("x", "INVITE"), Response(200), now=0.0)


def test_layer_transport_error_and_terminate() -> None:
    layer = TransactionLayer()
    invite = request(branch=new_branch())
    key, _ = layer.send_request(invite, UAS, now=0.0)
    events = layer.transport_error(key, now=0.1)
    assert events[0] == TransactionFailed(key, invite)
    assert events[-1] == TransactionTerminated(key)
    assert layer.transport_error(key, now=0.2) == []
    key2, _ = layer.send_request(request(branch=new_branch()), UAS, now=0.0)
    assert layer.terminate(key2) == [TransactionTerminated(key2)]
    assert layer.terminate(key2) == []
    assert layer.next_deadline() is None


def test_layer_send_stateless() -> None:
    ack = request("ACK", branch=new_branch(), to_tag="x")
    assert TransactionLayer().send_stateless(ack, UAS) == [SendMessage(ack, UAS)]


# ---- two layers talking, with loss ---------------------------------------------------------


class Wire:
    """Connects a UAC layer and a UAS layer in memory, dropping chosen transmissions."""

    def __init__(self, drop: dict[int | str, int]) -> None:
        self.uac = TransactionLayer()
        self.uas = TransactionLayer()
        self.drop = drop  # status/method -> how many of those to lose
        self.tu_events: list[tuple[str, LayerEvent]] = []

    def deliver(self, side: str, events: list[LayerEvent], now: float) -> None:
        for event in events:
            if not isinstance(event, SendMessage):
                self.tu_events.append((side, event))
                self.tu_react(side, event, now)
                continue
            label = statuses([event.message])[0]
            if self.drop.get(label, 0) > 0:
                self.drop[label] -= 1
                continue
            data = parse_message(event.message.to_bytes())  # through the wire format
            if side == "uac":
                self.deliver("uas", self.uas.receive(data, UAC, now), now)
            else:
                self.deliver("uac", self.uac.receive(data, UAS, now), now)

    def tu_react(self, side: str, event: LayerEvent, now: float) -> None:
        if (
            side == "uas"
            and isinstance(event, RequestReceived)
            and event.request.method == "INVITE"
        ):
            ok = make_response(event.request, 200, to_tag="uas-tag")
            self.deliver("uas", self.uas.send_response(event.key, ok, now), now)
        if side == "uac" and isinstance(event, ResponseReceived | StrayResponse):
            message = event.response
            if message.status == 200 and message.cseq.method == "INVITE":
                ack = request("ACK", branch=new_branch(), to_tag=message.to.tag or "")
                self.deliver("uac", self.uac.send_stateless(ack, UAS), now)

    def run(self, until: float) -> None:
        while True:
            deadlines = [
                d for d in (self.uac.next_deadline(), self.uas.next_deadline()) if d is not None
            ]
            if not deadlines or min(deadlines) > until:
                return
            now = min(deadlines)
            self.deliver("uac", self.uac.advance(now), now)
            self.deliver("uas", self.uas.advance(now), now)


def test_lost_invite_and_lost_200_are_recovered_by_retransmission() -> None:
    wire = Wire(drop={"INVITE": 2, 200: 2})
    _, events = wire.uac.send_request(request(branch=new_branch()), UAS, now=0.0)
    wire.deliver("uac", events, 0.0)
    wire.run(until=100.0)
    kinds = [(side, type(e).__name__) for side, e in wire.tu_events]
    assert ("uas", "RequestReceived") in kinds
    assert kinds.count(("uas", "RequestReceived")) == 1  # retransmissions absorbed
    assert ("uac", "ResponseReceived") in kinds
    assert ("uas", "AckReceived") in kinds
    assert not any(isinstance(e, TransactionTimedOut) for _, e in wire.tu_events)
    assert len(wire.uac) == 0
    assert len(wire.uas) == 0


def test_quiet_transactions_keep_their_messages_lean() -> None:
    """A transaction that only waits out a timer (here a confirmed INVITE, timer I; a BYE,
    timer J) keeps neither the message it last received nor its messages' parsed views: they
    live up to 32 s, and the collector scans what they keep. The views come back on a read."""
    layer = TransactionLayer()
    invite = request()
    (received,) = of_type(layer.receive(invite, UAC, now=0.0), RequestReceived)
    assert isinstance(received, RequestReceived)
    ok = response(invite, 200, to_tag="t2")
    layer.send_response(received.key, ok, now=0.1)
    ack = request("ACK", branch="z9hG4bKack", to_tag="t2")
    layer.receive(ack, UAC, now=0.2)
    tx = layer.transaction(received.key)
    assert isinstance(tx, ServerInviteTransaction)
    assert tx.state is State.CONFIRMED and tx.quiet
    assert invite.headers._parsed  # the TU's handlers may still read it in this event
    bye = request("BYE", branch="z9hG4bKbye", to_tag="t2", cseq=2)
    (bye_received,) = of_type(layer.receive(bye, UAC, now=0.3), RequestReceived)
    assert isinstance(bye_received, RequestReceived)
    assert tx._received is None
    assert invite.headers._parsed == {} and invite.headers._index is None
    assert invite.call_id == "call-1" and invite.to.tag is None  # rebuilt on a read
    assert ok.headers._parsed == {}
    bye_ok = response(bye, 200, to_tag="t2")
    layer.send_response(bye_received.key, bye_ok, now=0.4)
    layer.advance(0.5)
    bye_tx = layer.transaction(bye_received.key)
    assert bye_tx is not None and bye_tx.state is State.COMPLETED and bye_tx.quiet
    assert bye.headers._parsed == {}
    # A retransmitted BYE still gets the kept 200, unchanged.
    assert layer.receive(request("BYE", branch="z9hG4bKbye", to_tag="t2", cseq=2), UAC,
                         now=0.6) == [SendMessage(bye_ok, UAC, bye_received.key)]  # fmt: skip
    assert bye_ok.to_bytes().startswith(b"SIP/2.0 200 OK\r\n")
