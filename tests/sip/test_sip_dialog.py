"""Dialogs: creation on both sides, in-dialog requests, CSeq checks, routing, CANCEL and the
CANCEL/200 race."""

from __future__ import annotations

import pytest
from sipfixtures import sip

from baton.switch.sip.dialog import (
    Answered,
    AnsweredAfterCancel,
    Dialog,
    DialogId,
    DialogSet,
    DialogState,
    EarlyDialog,
    OutgoingInvite,
    Rejected,
    SendAck,
    SendRequest,
    cancel_responses,
    make_cancel,
    reason_value,
)
from baton.switch.sip.errors import LocalProtocolError
from baton.switch.sip.message import Request, Response, make_response, parse_message
from baton.switch.sip.uri import parse_uri

OUR_CONTACT = "<sip:baton@192.0.2.1:5060>"


def invite(*, record_route: tuple[str, ...] = (), via: bool = True) -> Request:
    lines = [
        "INVITE sip:bob@192.0.2.20:5062 SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKinv1;rport",
        "Max-Forwards: 70",
        "From: <sip:alice@baton>;tag=ours",
        "To: <sip:bob@baton>",
        "Call-ID: dlg-1",
        "CSeq: 10 INVITE",
        f"Contact: {OUR_CONTACT}",
        *(f"Record-Route: {r}" for r in record_route),
        'Authorization: Digest username="a", realm="r", nonce="n", uri="u", response="x"',
        "Content-Length: 0",
    ]
    message = parse_message(sip("\n".join(lines)))
    assert isinstance(message, Request)
    if not via:  # as the TU builds it, before the transport adds the Via
        message.headers.remove("Via")
    return message


def answer(request: Request, status: int, *, tag: str | None = "theirs",
           contact: str | None = "<sip:bob@192.0.2.20:5062;transport=udp>",
           record_route: tuple[str, ...] = ()) -> Response:  # fmt: skip
    response = make_response(request, status, to_tag=tag)
    if contact is not None and status > 100:
        response.headers.add("Contact", contact)
    for route in record_route:
        response.headers.add("Record-Route", route)
    return response


def uac_dialog(**kwargs: object) -> Dialog:
    request = invite()
    return Dialog.from_response(request, answer(request, 200, **kwargs), local_contact=OUR_CONTACT)  # type: ignore[arg-type]


# ---- UAC side ----------------------------------------------------------------------------


def test_uac_dialog_from_2xx() -> None:
    request = invite()
    ok = answer(request, 200, record_route=("<sip:p1.example;lr>", "<sip:p2.example;lr>"))
    dialog = Dialog.from_response(request, ok, local_contact=OUR_CONTACT)
    assert dialog.id == DialogId("dlg-1", "ours", "theirs")
    assert dialog.state is DialogState.CONFIRMED
    assert str(dialog.remote_target) == "sip:bob@192.0.2.20:5062;transport=udp"
    assert [str(r) for r in dialog.route_set] == ["<sip:p2.example;lr>", "<sip:p1.example;lr>"]
    assert dialog.local_cseq == 10
    assert dialog.remote_cseq is None


def test_uac_early_dialog_then_confirmed_with_recomputed_route_set() -> None:
    request = invite()
    early = Dialog.from_response(request, answer(request, 180, record_route=("<sip:old;lr>",)),
                                 local_contact=OUR_CONTACT)  # fmt: skip
    assert early.state is DialogState.EARLY
    ok = answer(request, 200, contact="<sip:bob@192.0.2.99>", record_route=("<sip:new;lr>",))
    early.confirm(ok)
    assert early.state is DialogState.CONFIRMED
    assert [str(r) for r in early.route_set] == ["<sip:new;lr>"]
    assert str(early.remote_target) == "sip:bob@192.0.2.99"


@pytest.mark.parametrize(("status", "tag"), [(180, None), (100, "x"), (486, "x")])
def test_responses_that_make_no_dialog(status: int, tag: str | None) -> None:
    request = invite()
    with pytest.raises(LocalProtocolError):
        Dialog.from_response(request, answer(request, status, tag=tag), local_contact=OUR_CONTACT)


def test_in_dialog_request_construction() -> None:
    dialog = uac_dialog()
    bye = dialog.create_request(
        "BYE", headers=[("Reason", reason_value("preemption", 1, "UA preemption"))]
    )
    assert bye.method == "BYE"
    assert str(bye.uri) == "sip:bob@192.0.2.20:5062;transport=udp"
    assert bye.cseq.number == 11
    assert bye.from_.tag == "ours"
    assert bye.to.tag == "theirs"
    assert bye.call_id == "dlg-1"
    assert "Via" not in bye.headers  # the transport adds it
    assert "Contact" not in bye.headers
    assert bye.headers.get("Reason") == 'preemption ;cause=1 ;text="UA preemption"'
    reinvite = dialog.create_request("INVITE", body=b"v=0\r\n", content_type="application/sdp")
    assert reinvite.cseq.number == 12
    assert reinvite.headers.get("Contact") == OUR_CONTACT
    assert reinvite.content_type == "application/sdp"
    info = dialog.create_request(
        "INFO", body=b"Signal=5\r\n", content_type="application/dtmf-relay"
    )
    assert info.cseq.number == 13
    options = dialog.create_request("OPTIONS")
    assert options.cseq.number == 14
    with pytest.raises(LocalProtocolError, match="content type"):
        dialog.create_request("INFO", body=b"x")


def test_ack_for_2xx_uses_the_invite_cseq_and_credentials() -> None:
    request = invite()
    dialog = Dialog.from_response(request, answer(request, 200), local_contact=OUR_CONTACT)
    dialog.create_request("INFO", body=b"x", content_type="text/plain")
    ack = dialog.ack(request)
    assert ack.method == "ACK"
    assert ack.cseq.number == 10
    assert ack.cseq.method == "ACK"
    assert ack.headers.get("Authorization") == request.headers.get("Authorization")
    assert ack.to.tag == "theirs"
    with pytest.raises(LocalProtocolError, match="ack"):
        dialog.create_request("ACK")
    with pytest.raises(LocalProtocolError, match="make_cancel"):
        dialog.create_request("CANCEL")


def test_loose_routing() -> None:
    dialog = uac_dialog(record_route=("<sip:p1.example;lr>", "<sip:p2.example;lr>"))
    bye = dialog.create_request("BYE")
    assert str(bye.uri) == "sip:bob@192.0.2.20:5062;transport=udp"
    assert bye.headers.get_all("Route") == ["<sip:p2.example;lr>", "<sip:p1.example;lr>"]


def test_strict_routing() -> None:
    dialog = uac_dialog(record_route=("<sip:p1.example;lr>", "<sip:strict.example>"))
    bye = dialog.create_request("BYE")
    assert str(bye.uri) == "sip:strict.example"
    assert bye.headers.get_all("Route") == [
        "<sip:p1.example;lr>",
        "<sip:bob@192.0.2.20:5062;transport=udp>",
    ]


def test_target_refresh_by_2xx_and_termination_by_481() -> None:
    dialog = uac_dialog()
    reinvite = dialog.create_request("INVITE")
    ok = answer(reinvite, 200, contact="<sip:bob@198.51.100.9>")
    dialog.response_to(ok)
    assert str(dialog.remote_target) == "sip:bob@198.51.100.9"
    info = dialog.create_request("INFO", body=b"x", content_type="text/plain")
    dialog.response_to(make_response(info, 200))
    assert str(dialog.remote_target) == "sip:bob@198.51.100.9"
    dialog.response_to(make_response(info, 481))
    assert dialog.terminated
    with pytest.raises(LocalProtocolError, match="terminated"):
        dialog.create_request("INFO")
    assert dialog.create_request("BYE").method == "BYE"  # a BYE is always possible


# ---- UAS side ----------------------------------------------------------------------------


def received_invite() -> Request:
    message = parse_message(
        sip(
            """
            INVITE sip:1002@192.0.2.1 SIP/2.0
            Via: SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bKin;received=192.0.2.10
            Record-Route: <sip:p1.example;lr>
            Record-Route: <sip:p2.example;lr>
            From: "Alice" <sip:alice@baton>;tag=caller
            To: <sip:1002@baton>
            Call-ID: uas-1
            CSeq: 5 INVITE
            Contact: <sip:alice@192.0.2.10:5070>
            Content-Length: 0
            """
        )
    )
    assert isinstance(message, Request)
    return message


def in_dialog(method: str, cseq: int, contact: str | None = None) -> Request:
    text = f"""
        {method} sip:baton@192.0.2.1 SIP/2.0
        Via: SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bK{method}{cseq}
        From: "Alice" <sip:alice@baton>;tag=caller
        To: <sip:1002@baton>;tag=callee
        Call-ID: uas-1
        CSeq: {cseq} {method}
        {"Contact: " + contact if contact else ""}
        Content-Length: 0
        """
    message = parse_message(sip("\n".join(line for line in text.splitlines() if line.strip())))
    assert isinstance(message, Request)
    return message


def test_uas_dialog_from_request() -> None:
    dialog = Dialog.from_request(received_invite(), local_tag="callee", local_contact=OUR_CONTACT,
                                 initial_cseq=100)  # fmt: skip
    assert dialog.id == DialogId("uas-1", "callee", "caller")
    assert dialog.state is DialogState.EARLY
    assert [str(r) for r in dialog.route_set] == ["<sip:p1.example;lr>", "<sip:p2.example;lr>"]
    assert str(dialog.remote_target) == "sip:alice@192.0.2.10:5070"
    assert dialog.remote_cseq == 5
    dialog.confirm()
    assert dialog.state is DialogState.CONFIRMED
    bye = dialog.create_request("BYE")
    assert bye.cseq.number == 101
    assert bye.from_.tag == "callee"
    assert bye.to.tag == "caller"
    assert bye.to.display_name == "Alice"
    assert bye.headers.get_all("Route") == ["<sip:p1.example;lr>", "<sip:p2.example;lr>"]


def test_uas_dialog_needs_a_contact() -> None:
    request = received_invite()
    request.headers.remove("Contact")
    with pytest.raises(LocalProtocolError, match="Contact"):
        Dialog.from_request(request, local_tag="t", local_contact=OUR_CONTACT)


def test_received_requests_cseq_ordering() -> None:
    dialog = Dialog.from_request(received_invite(), local_tag="callee", local_contact=OUR_CONTACT,
                                 confirmed=True)  # fmt: skip
    assert dialog.receive_request(in_dialog("INFO", 6)) is None
    assert dialog.remote_cseq == 6
    old = dialog.receive_request(in_dialog("INFO", 4))
    assert old is not None
    assert (old.status, old.reason) == (500, "Out Of Order CSeq")
    assert dialog.remote_cseq == 6
    assert dialog.receive_request(in_dialog("ACK", 5)) is None  # ACK is not checked
    assert dialog.remote_cseq == 6


def test_received_reinvite_refreshes_the_target_and_bye_terminates() -> None:
    dialog = Dialog.from_request(received_invite(), local_tag="callee", local_contact=OUR_CONTACT,
                                 confirmed=True)  # fmt: skip
    assert dialog.receive_request(in_dialog("INVITE", 7, "<sip:alice@203.0.113.1:6000>")) is None
    assert str(dialog.remote_target) == "sip:alice@203.0.113.1:6000"
    assert dialog.receive_request(in_dialog("BYE", 8)) is None
    assert dialog.terminated


def test_dialog_set_lookup_and_481() -> None:
    dialogs = DialogSet()
    uas = Dialog.from_request(received_invite(), local_tag="callee", local_contact=OUR_CONTACT)
    dialogs.add(uas)
    assert dialogs.for_request(in_dialog("BYE", 9)) is uas
    stranger = in_dialog("BYE", 9)
    stranger.headers.set("Call-ID", "unknown")
    assert dialogs.for_request(stranger) is None
    no_dialog = DialogSet.no_such_dialog(stranger)
    assert no_dialog.status == 481
    assert no_dialog.to.tag == "callee"  # the request's To tag is kept
    request = invite()
    uac = Dialog.from_response(request, answer(request, 200), local_contact=OUR_CONTACT)
    dialogs.add(uac)
    assert dialogs.for_response(answer(request, 200)) is uac
    assert len(dialogs) == 2
    assert set(dialogs) == {uas, uac}
    dialogs.remove(uac)
    assert dialogs.get(uac.id) is None


# ---- CANCEL ------------------------------------------------------------------------------


def test_make_cancel() -> None:
    request = invite()
    request.headers.add("Route", "<sip:p1;lr>")
    cancel = make_cancel(request)
    assert cancel.method == "CANCEL"
    assert cancel.uri == request.uri
    assert cancel.headers.get_all("Via") == request.headers.get_all("Via")[:1]
    assert cancel.cseq.number == 10
    assert cancel.cseq.method == "CANCEL"
    for name in ("From", "To", "Call-ID"):
        assert cancel.headers.get(name) == request.headers.get(name)
    assert cancel.headers.get_all("Route") == ["<sip:p1;lr>"]
    assert "Contact" not in cancel.headers
    assert "Authorization" not in cancel.headers
    with pytest.raises(LocalProtocolError, match="no Via"):
        make_cancel(invite(via=False))


def test_cancel_responses() -> None:
    request = received_invite()
    cancel = parse_message(make_cancel(request).to_bytes())
    assert isinstance(cancel, Request)
    ok, terminated = cancel_responses(cancel, request, "callee")
    assert (ok.status, ok.cseq.method) == (200, "CANCEL")
    assert (terminated.status, terminated.cseq.method) == (487, "INVITE")
    assert terminated.to.tag == "callee"


# ---- OutgoingInvite and the CANCEL/200 race -----------------------------------------------


def test_normal_answer() -> None:
    request = invite()
    call = OutgoingInvite(request, local_contact=OUR_CONTACT)
    assert call.on_response(answer(request, 100, tag=None)) == []
    (early,) = call.on_response(answer(request, 180))
    assert isinstance(early, EarlyDialog)
    ok = answer(request, 200)
    ack, answered = call.on_response(ok)
    assert isinstance(ack, SendAck)
    assert isinstance(answered, Answered)
    assert answered.dialog is early.dialog
    assert answered.dialog.state is DialogState.CONFIRMED
    assert ack.request.cseq.number == 10
    assert call.answered
    assert call.dialog is answered.dialog
    assert call.on_response(ok) == [SendAck(ack.request)]  # 2xx retransmission: re-ACK only
    assert call.cancel() == []  # too late: BYE from call.dialog instead


def test_cancel_waits_for_a_provisional() -> None:
    request = invite()
    call = OutgoingInvite(request, local_contact=OUR_CONTACT)
    assert call.cancel() == []  # RFC 3261 §9.1: not before a provisional response
    (send,) = call.on_response(answer(request, 100, tag=None))
    assert isinstance(send, SendRequest)
    assert send.request.method == "CANCEL"
    assert call.phase == "cancelling"
    (rejected,) = call.on_response(answer(request, 487))
    assert rejected == Rejected(answer(request, 487), 487)


def test_cancel_after_ringing() -> None:
    request = invite()
    call = OutgoingInvite(request, local_contact=OUR_CONTACT)
    call.on_response(answer(request, 180))
    (send,) = call.cancel()
    assert isinstance(send, SendRequest)
    assert send.request.method == "CANCEL"
    assert call.cancel() == []  # once


def test_200_crossing_our_cancel_is_acked_then_byed() -> None:
    request = invite()
    call = OutgoingInvite(request, local_contact=OUR_CONTACT)
    call.on_response(answer(request, 180))
    call.cancel()
    ok = answer(request, 200)
    ack, bye, outcome = call.on_response(ok)
    assert isinstance(ack, SendAck)
    assert ack.request.method == "ACK"
    assert isinstance(bye, SendRequest)
    assert bye.request.method == "BYE"
    assert bye.request.cseq.number == 11
    assert bye.request.to.tag == "theirs"
    assert isinstance(outcome, AnsweredAfterCancel)
    assert outcome.dialog.terminated
    assert not call.answered
    assert call.on_response(ok) == [SendAck(ack.request)]  # retransmitted 2xx: ACK only
    assert call.on_response(answer(request, 487)) == []  # the 487 never comes, or is moot


def test_200_before_any_provisional_while_cancel_pending() -> None:
    request = invite()
    call = OutgoingInvite(request, local_contact=OUR_CONTACT)
    call.cancel()
    outcomes = call.on_response(answer(request, 200))
    assert [type(o) for o in outcomes] == [SendAck, SendRequest, AnsweredAfterCancel]


def test_second_fork_answer_is_acked_and_byed() -> None:
    request = invite()
    call = OutgoingInvite(request, local_contact=OUR_CONTACT)
    call.on_response(answer(request, 200, tag="fork1"))
    outcomes = call.on_response(answer(request, 200, tag="fork2"))
    assert [type(o) for o in outcomes] == [SendAck, SendRequest, AnsweredAfterCancel]
    assert call.answered
    assert call.dialog is not None
    assert call.dialog.id.remote_tag == "fork1"


def test_rejection_and_timeout() -> None:
    request = invite()
    call = OutgoingInvite(request, local_contact=OUR_CONTACT)
    busy = answer(request, 486)
    assert call.on_response(busy) == [Rejected(busy, 486)]
    assert call.on_response(busy) == []
    other = OutgoingInvite(invite(), local_contact=OUR_CONTACT)
    assert other.timed_out() == [Rejected(None, 408)]
    assert other.timed_out() == []


def test_late_2xx_after_timeout_is_acked_and_byed() -> None:
    request = invite()
    call = OutgoingInvite(request, local_contact=OUR_CONTACT)
    call.timed_out()
    outcomes = call.on_response(answer(request, 200))
    assert [type(o) for o in outcomes] == [SendAck, SendRequest, AnsweredAfterCancel]


def test_outgoing_invite_argument_checks() -> None:
    with pytest.raises(LocalProtocolError, match="INVITE"):
        OutgoingInvite(make_cancel(invite()), local_contact=OUR_CONTACT)
    with pytest.raises(LocalProtocolError, match="no Via"):
        OutgoingInvite(invite(via=False), local_contact=OUR_CONTACT)
    call = OutgoingInvite(invite(), local_contact=OUR_CONTACT)
    cancel_ok = make_response(make_cancel(invite()), 200)
    assert call.on_response(cancel_ok) == []  # not an INVITE response


def test_uri_equivalence_helps_match_targets() -> None:
    dialog = uac_dialog()
    assert dialog.remote_target == parse_uri("sip:bob@192.0.2.20:5062;transport=udp")
