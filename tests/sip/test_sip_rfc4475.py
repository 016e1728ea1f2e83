"""RFC 4475, the SIP torture test messages: every one of the 49, at the layer that judges it.

Valid messages parse (and are checked field by field where the RFC says what they mean);
invalid ones raise :class:`SipParseError` with a reason naming the problem and, where the
request can still be answered, give a 400/505 response; messages that only the transaction
layer or the application can judge are checked there (the registrar and transaction tests
cover the rest of §3.2–§3.4).
"""

from __future__ import annotations

import pytest
from sipfixtures import torture, torture_names

from baton.switch.sip.errors import SipParseError
from baton.switch.sip.message import (
    CSeq,
    PartialRequest,
    Request,
    Response,
    error_response,
    parse_message,
)
from baton.switch.sip.uri import AbsoluteUri, SipUri, unescape

VALID = [
    "wsinv", "intmeth", "esc01", "escnull", "esc02", "lwsdisp", "longreq", "dblreq", "semiuri",
    "transports", "mpart01", "unreason", "noreason",
    # §3.2–§3.4: syntactically valid; judged by the transaction layer or the application
    "badbranch", "unkscm", "novelsc", "unksm2", "bext01", "invut", "regaut01", "bcast",
    "zeromf", "cparam01", "cparam02", "regescrt", "sdp01", "inv2543",
]  # fmt: skip

INVALID = {
    "badinv01": "Empty element in Via header",
    "clerr": "Content-Length Larger Than Message",
    "ncl": "Malformed Content-Length header",
    "scalar02": "CSeq number out of range",
    "scalarlg": "CSeq number out of range",
    "quotbal": "unterminated quoted string",
    "ltgtruri": "Request-URI enclosed in '<>'",
    "lwsruri": "Malformed Request-Line",
    "lwsstart": "Malformed Request-Line",
    "trws": "Malformed Request-Line",
    "escruri": "Headers in Request-URI",
    "baddate": "Malformed Date header",
    "regbadct": "must be enclosed in '<>'",
    "badaspec": "Malformed To",
    "baddn": "display name",
    "badvers": "Version Not Supported",
    "mismatch01": "CSeq method does not match",
    "mismatch02": "CSeq method does not match",
    "bigcode": "Status code out of range",
    "insuf": "Missing From header",
    "multi01": "Multiple To header fields",
    "mcl01": "Multiple Content-Length header fields",
}


def test_all_49_messages_are_classified() -> None:
    names = torture_names()
    assert len(names) == 49
    assert sorted(VALID + list(INVALID)) == names


def request(name: str) -> Request:
    message = parse_message(torture(name))
    assert isinstance(message, Request)
    return message


def response(name: str) -> Response:
    message = parse_message(torture(name))
    assert isinstance(message, Response)
    return message


@pytest.mark.parametrize("name", VALID)
def test_valid_messages_parse_and_round_trip(name: str) -> None:
    message = parse_message(torture(name))
    again = parse_message(message.to_bytes())
    assert again.to_bytes() == message.to_bytes()


@pytest.mark.parametrize(("name", "reason"), sorted(INVALID.items()))
def test_invalid_messages_raise_parse_error(name: str, reason: str) -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(torture(name))
    assert reason in info.value.reason


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("clerr", 400), ("ncl", 400), ("scalar02", 400), ("quotbal", 400), ("ltgtruri", 400),
        ("lwsruri", 400), ("lwsstart", 400), ("trws", 400), ("escruri", 400), ("baddate", 400),
        ("regbadct", 400), ("badaspec", 400), ("baddn", 400), ("badvers", 505),
        ("mismatch01", 400), ("mismatch02", 400), ("multi01", 400), ("mcl01", 400),
    ],
)  # fmt: skip
def test_invalid_requests_can_be_answered(name: str, status: int) -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(torture(name))
    answer = error_response(info.value)
    assert answer is not None
    assert answer.status == status
    assert ";tag=" in (answer.headers.get("To") or "")
    # The answer copies Via/From/To/Call-ID/CSeq as they came, broken or not: the client
    # matches it to its transaction by branch and CSeq method.
    partial = info.value.partial
    assert isinstance(partial, PartialRequest)
    assert answer.headers.get_all("Via") == partial.headers.get_all("Via")
    assert answer.to_bytes().startswith(f"SIP/2.0 {status} ".encode())


@pytest.mark.parametrize("name", ["scalarlg", "bigcode"])
def test_invalid_responses_are_dropped(name: str) -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(torture(name))
    assert error_response(info.value) is None


@pytest.mark.parametrize("name", ["badinv01", "insuf"])
def test_requests_too_broken_to_answer(name: str) -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(torture(name))
    assert error_response(info.value) is None


# ---- 3.1.1 valid messages, field by field --------------------------------------------------


def test_wsinv() -> None:
    m = request("wsinv")
    assert isinstance(m.uri, SipUri)
    assert "unknownparam" in m.uri.params
    assert m.to.tag == "1918181833n"
    assert m.from_.display_name == 'J Rosenberg \\"'
    assert m.from_.tag == "98asjd8"
    assert m.max_forwards == 68
    assert m.cseq == CSeq(9, "INVITE")
    assert [(v.transport, v.host, v.branch) for v in m.vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert m.headers.get("Subject") == ""
    assert m.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert m.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    route = m.route[0].uri
    assert isinstance(route, SipUri)
    assert route.lr
    contact = m.contacts[0]
    assert contact.display_name == 'Quoted string ""'
    assert contact.params.get("newparam") == "newvalue"
    assert "secondparam" in contact.params
    assert contact.params.get("q") == "0.33"
    assert len(m.body) == 150


def test_intmeth() -> None:
    m = request("intmeth")
    assert m.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert isinstance(m.uri, SipUri)
    assert m.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert m.uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert m.top_via.branch == "z9hG4bK-.!%66*_+`'~"
    assert m.to.display_name == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert m.from_.display_name == "token1~` token2'+_ token3*%!.-"
    assert m.from_.params.get("fromParam''~+*_!.-%") == '"работающий"'
    assert m.from_.tag == "_token~1'+`*%!-."
    assert m.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert m.cseq == CSeq(139122385, m.method)
    assert m.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff大停電"


def test_esc01() -> None:
    m = request("esc01")
    assert isinstance(m.uri, SipUri)
    assert m.uri.user_text == "sips:user@example.com"
    to_uri, from_uri = m.to.uri, m.from_.uri
    assert isinstance(to_uri, SipUri)
    assert isinstance(from_uri, SipUri)
    assert to_uri.user_text == "user"
    assert from_uri.user_text == "I have spaces"
    contact = m.contacts[0].uri
    assert isinstance(contact, SipUri)
    assert contact.user_text == "caller"
    params = {unescape(k): unescape(v or "") for k, v in contact.params}
    assert params == {"lr": "", "name": "value%41"}


def test_escnull() -> None:
    m = request("escnull")
    users = [c.uri.user_text for c in m.contacts if isinstance(c.uri, SipUri)]
    assert users == ["\x00", "\x00\x00"]  # two distinct contacts
    to_uri = m.to.uri
    assert isinstance(to_uri, SipUri)
    assert to_uri.user_text == "null-\x00-null"


def test_esc02() -> None:
    m = request("esc02")
    assert m.method == "RE%47IST%45R"  # not REGISTER
    assert m.to.display_name == "%Z%45"
    assert len(m.contacts) == 2
    assert m.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"
    assert m.top_via.branch == "z9hG4bK209%fzsnel234"


def test_lwsdisp() -> None:
    assert request("lwsdisp").from_.display_name == "caller"


def test_longreq() -> None:
    m = request("longreq")
    assert len(m.vias) == 34
    assert m.vias[-1].received == "192.0.2.5"
    assert m.to.display_name is not None
    assert "extreme extreme" in m.to.display_name
    assert isinstance(m.to.uri, SipUri)
    assert m.to.uri.port == 6000
    assert m.from_.tag is not None
    assert len(m.from_.tag) > 100


def test_dblreq_keeps_only_the_first_request() -> None:
    m = request("dblreq")
    assert m.method == "REGISTER"
    assert m.body == b""


def test_semiuri() -> None:
    m = request("semiuri")
    assert isinstance(m.uri, SipUri)
    assert m.uri.user == "user;par=u%40example.net"
    assert len(m.uri.params) == 0
    assert len(m.headers.get_all("Accept")) == 6


def test_transports() -> None:
    transports = [v.transport for v in request("transports").vias]
    assert transports == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]


def test_mpart01_binary_body_is_framed_by_content_length() -> None:
    m = request("mpart01")
    assert len(m.body) == 553
    assert m.body.endswith(b"--7a9cbec02ceef655--\r\n")
    assert b"\x00" in m.body
    assert m.content_type == "multipart/mixed"


def test_unreason_and_noreason() -> None:
    assert response("unreason").reason.endswith("простое")
    assert response("noreason").reason == ""


# ---- §3.3 application-layer semantics visible on the parsed message ------------------------


def test_unknown_request_uri_schemes_parse_as_absolute_uris() -> None:
    assert request("unkscm").uri == AbsoluteUri("nobodyknowsthisscheme", "totallyopaquecontent")
    assert isinstance(request("novelsc").uri, AbsoluteUri)  # answered 416 by a UAS


def test_unksm2_header_uris_of_unknown_schemes() -> None:
    m = request("unksm2")
    assert isinstance(m.to.uri, AbsoluteUri)
    assert isinstance(m.from_.uri, AbsoluteUri)
    assert isinstance(m.contacts[0].uri, AbsoluteUri)


def test_bext01_requires_are_visible() -> None:
    m = request("bext01")
    assert m.headers.get_all("Require") == ["nothingSupportsThis", "nothingSupportsThisEither"]
    assert m.top_via.transport == "TLS"


def test_zeromf_has_max_forwards_zero() -> None:
    assert request("zeromf").max_forwards == 0


def test_invut_and_sdp01_content_negotiation_inputs() -> None:
    assert request("invut").content_type == "application/unknownformat"
    assert request("sdp01").headers.get("Accept") == "text/nobodyKnowsThis"


def test_bcast_response_has_a_broadcast_via() -> None:
    assert response("bcast").vias[1].host == "255.255.255.255"


def test_inv2543_has_no_branch_and_no_max_forwards() -> None:
    m = request("inv2543")
    assert m.top_via.branch is None
    assert m.max_forwards is None
    assert len(m.body) == 105
