"""SIP messages: parsing, headers, limits, serialisation, error responses, TCP framing, fuzz."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sipfixtures import sip, torture, torture_names

from baton.switch.sip.errors import LocalProtocolError, SipParseError
from baton.switch.sip.message import (
    CSeq,
    Frame,
    FramingError,
    Headers,
    KeepAlivePing,
    MalformedFrame,
    ParserLimits,
    Request,
    Response,
    StreamFramer,
    canonical_name,
    error_response,
    is_keepalive,
    make_response,
    parse_message,
)
from baton.switch.sip.uri import SipUri, parse_uri

INVITE = sip(
    """
    INVITE sip:bob@biloxi.example.com SIP/2.0
    Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds;rport
    Max-Forwards: 70
    To: Bob <sip:bob@biloxi.example.com>
    From: Alice <sip:alice@atlanta.example.com>;tag=1928301774
    Call-ID: a84b4c76e66710@pc33.atlanta.example.com
    CSeq: 314159 INVITE
    Contact: <sip:alice@pc33.atlanta.example.com>
    Content-Type: application/sdp
    Content-Length: auto
    """,
    "v=0\r\no=alice 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
    "m=audio 49170 RTP/AVP 0\r\n",
)


def parse_request(data: bytes) -> Request:
    message = parse_message(data)
    assert isinstance(message, Request)
    return message


def parse_error(data: bytes, limits: ParserLimits | None = None) -> SipParseError:
    with pytest.raises(SipParseError) as info:
        parse_message(data) if limits is None else parse_message(data, limits)
    return info.value


# ---- parsing ------------------------------------------------------------------------------


def test_parse_invite_and_typed_accessors() -> None:
    request = parse_request(INVITE)
    assert request.method == "INVITE"
    assert str(request.uri) == "sip:bob@biloxi.example.com"
    assert request.top_via.branch == "z9hG4bK776asdhds"
    assert request.call_id == "a84b4c76e66710@pc33.atlanta.example.com"
    assert request.cseq == CSeq(314159, "INVITE")
    assert request.from_.tag == "1928301774"
    assert request.to.tag is None
    assert request.to.display_name == "Bob"
    assert [str(c.uri) for c in request.contacts] == ["sip:alice@pc33.atlanta.example.com"]
    assert request.max_forwards == 70
    assert request.content_type == "application/sdp"
    assert request.body.startswith(b"v=0\r\n")


def test_parse_response() -> None:
    data = sip(
        """
        SIP/2.0 180 Ringing
        Via: SIP/2.0/UDP h;branch=z9hG4bKa
        To: <sip:b@h>;tag=x
        From: <sip:a@h>;tag=y
        Call-ID: c
        CSeq: 1 INVITE
        Content-Length: 0
        """
    )
    response = parse_message(data)
    assert isinstance(response, Response)
    assert (response.status, response.reason) == (180, "Ringing")
    assert response.is_provisional
    assert not response.is_final
    assert not response.is_success


def test_compact_forms_become_long_names() -> None:
    data = sip(
        """
        OPTIONS sip:h SIP/2.0
        v: SIP/2.0/UDP h;branch=z9hG4bKa
        t: <sip:b@h>
        f: <sip:a@h>;tag=y
        i: abc
        CSeq: 1 OPTIONS
        k: timer, 100rel
        m: <sip:a@10.0.0.1>
        l: 0
        """
    )
    request = parse_request(data)
    names = [name for name, _ in request.headers]
    assert names == ["Via", "To", "From", "Call-ID", "CSeq", "Supported", "Supported",
                     "Contact", "Content-Length"]  # fmt: skip
    assert request.headers.get_all("k") == ["timer", "100rel"]


def test_list_headers_split_outside_quotes_and_brackets() -> None:
    data = sip(
        """
        REGISTER sip:h SIP/2.0
        Via: SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2
        To: <sip:a@h>
        From: <sip:a@h>;tag=1
        Call-ID: c
        CSeq: 1 REGISTER
        Contact: "Doe, John" <sip:j,k@10.0.0.1;x=a>;expires=60, <sip:j@10.0.0.2>
        Authorization: Digest username="a", realm="r", nonce="n,1", uri="sip:h", response="x"
        Date: Sat, 13 Nov 2010 23:29:00 GMT
        Proxy-Authenticate: Digest realm="r", nonce="n", qop="auth,auth-int", algorithm=MD5
        WWW-Authenticate: Digest realm="r", nonce="n", stale=true, algorithm=MD5
        X-Custom: one, two
        Content-Length: 0
        """
    )
    request = parse_request(data)
    assert [v.host for v in request.vias] == ["a", "b"]
    contacts = request.contacts
    assert [c.display_name for c in contacts] == ["Doe, John", None]
    assert len(request.headers.get_all("Authorization")) == 1
    assert len(request.headers.get_all("Proxy-Authenticate")) == 1
    assert len(request.headers.get_all("WWW-Authenticate")) == 1
    assert request.headers.get("Date") == "Sat, 13 Nov 2010 23:29:00 GMT"
    assert request.headers.get_all("X-Custom") == ["one, two"]


def test_folded_lines_are_joined_with_one_space() -> None:
    data = (
        b"OPTIONS sip:h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKa\r\nTo: <sip:b@h>\r\n"
        b"From: <sip:a@h>\r\n ;tag=1\r\nCall-ID: c\r\nCSeq: 1\r\n\t OPTIONS\r\n"
        b"Subject: hello  \r\n   world\r\nContent-Length: 0\r\n\r\n"
    )
    request = parse_request(data)
    assert request.headers.get("Subject") == "hello world"
    assert request.from_.tag == "1"
    assert request.cseq == CSeq(1, "OPTIONS")


def test_bare_lf_line_endings_are_accepted() -> None:
    head, body = INVITE.split(b"\r\n\r\n", 1)
    request = parse_request(head.replace(b"\r\n", b"\n") + b"\n\n" + body)
    assert request.cseq.number == 314159


def test_leading_crlfs_are_skipped() -> None:
    assert parse_request(b"\r\n\r\n" + INVITE).method == "INVITE"


def test_datagram_without_content_length_takes_the_rest() -> None:
    data = INVITE.replace(b"Content-Length: 92\r\n", b"")
    request = parse_request(data)
    assert "Content-Length" not in request.headers
    assert len(request.body) == 92


def test_extra_octets_after_content_length_are_discarded() -> None:
    request = parse_request(INVITE + b"garbage")
    assert request.body.endswith(b"RTP/AVP 0\r\n")


@pytest.mark.parametrize(
    ("mutation", "reason"),
    [
        ((b"Content-Length: 92", b"Content-Length: 93"), "Content-Length Larger Than Message"),
        ((b"Content-Length: 92", b"Content-Length: x"), "Malformed Content-Length header"),
        ((b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n", b""), "Missing Call-ID header"),
        ((b"Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds;rport\r\n", b""),
         "Missing Via header"),
        ((b"CSeq: 314159 INVITE", b"CSeq: 314159 BYE"), "CSeq method does not match"),
        ((b"CSeq: 314159 INVITE", b"CSeq: 2147483648 INVITE"), "CSeq number out of range"),
        ((b"CSeq: 314159 INVITE", b"CSeq: INVITE"), "Malformed CSeq header"),
        ((b"Max-Forwards: 70", b"Max-Forwards: 256"), "Max-Forwards value out of range"),
        ((b"Max-Forwards: 70", b"Max-Forwards: -1"), "Malformed Max-Forwards header"),
        ((b"Call-ID: a84b", b"Call-ID: a84 b"), "Malformed Call-ID header"),
        ((b"Call-ID: a84b", b"Call-ID: @a84b"), "Malformed Call-ID header"),
        ((b"Max-Forwards: 70", b"Max-Forwards 70"), "Malformed header line"),
        ((b"Max-Forwards: 70", b"Max Forwards: 70"), "Malformed header line"),
        ((b"Max-Forwards: 70", b"Expires: 4294967296"), "Expires value out of range"),
        ((b"Max-Forwards: 70", b"Subject: a\x01b"), "Control character in Subject header"),
        ((b"Max-Forwards: 70", b"Route: <sip:a>, ,<sip:b>"), "Empty element in Route header"),
        ((b"SIP/2.0\r\n", b"SIP/2.1\r\n"), "Version Not Supported"),
        ((b"SIP/2.0\r\n", b"HTTP/1.1\r\n"), "Malformed SIP version"),
        ((b"INVITE sip:bob", b"INV@TE sip:bob"), "Malformed method"),
        ((b"INVITE sip:bob@biloxi.example.com", b"INVITE bob"), "Malformed Request-URI"),
        ((b"Contact: <sip:alice@pc33.atlanta.example.com>", b"Contact: *, <sip:a@b>"),
         "Contact '*' mixed"),
        ((b"Max-Forwards: 70", b"Date: Sat, 13 Nov 2010 23:29:00 PST"), "Malformed Date header"),
        ((b"Max-Forwards: 70", b"Record-Route: <sip:p1;lr"), "Unterminated '<'"),
    ],
)  # fmt: skip
def test_malformed_requests_give_400_naming_the_problem(
    mutation: tuple[bytes, bytes], reason: str
) -> None:
    old, new = mutation
    assert old in INVITE
    error = parse_error(INVITE.replace(old, new, 1))
    assert error.status in (400, 505)
    assert reason in error.reason


def test_missing_empty_line() -> None:
    head = INVITE.split(b"\r\n\r\n")[0]
    assert "Missing empty line" in parse_error(head).reason


def test_continuation_line_first_is_an_error() -> None:
    data = b"OPTIONS sip:h SIP/2.0\r\n continued\r\n\r\n"
    assert "Continuation line" in parse_error(data).reason


@pytest.mark.parametrize("data", [b"", b"\r\n\r\n", b"\r\n"])
def test_empty_input(data: bytes) -> None:
    assert parse_error(data).reason == "Empty message"


@pytest.mark.parametrize(
    "line",
    [b"SIP/2.0 20 OK", b"SIP/2.0 099 Low", b"SIP/2.0 700 High", b"SIP/2.0 2000 OK", b"SIP/2.0 abc"],
)
def test_bad_status_lines(line: bytes) -> None:
    data = sip(
        """
        SIP/2.0 200 OK
        Via: SIP/2.0/UDP h;branch=z9hG4bKa
        To: <sip:b@h>;tag=x
        From: <sip:a@h>;tag=y
        Call-ID: c
        CSeq: 1 INVITE
        """
    ).replace(b"SIP/2.0 200 OK", line)
    assert parse_error(data).status == 400


def test_response_without_reason_phrase_words() -> None:
    data = sip(
        """
        SIP/2.0 100
        Via: SIP/2.0/UDP h;branch=z9hG4bKa
        To: <sip:b@h>;tag=x
        From: <sip:a@h>;tag=y
        Call-ID: c
        CSeq: 1 INVITE
        """
    )
    response = parse_message(data)
    assert isinstance(response, Response)
    assert response.reason == ""


# ---- limits -------------------------------------------------------------------------------


def test_message_too_large_is_513() -> None:
    error = parse_error(INVITE, ParserLimits(max_message_bytes=100))
    assert (error.status, error.reason) == (513, "Message Too Large")


def test_header_section_too_large_is_513() -> None:
    error = parse_error(INVITE, ParserLimits(max_head_bytes=100))
    assert error.status == 513


def test_line_too_long_is_513() -> None:
    data = INVITE.replace(b"Max-Forwards: 70", b"X-Long: " + b"a" * 200)
    error = parse_error(data, ParserLimits(max_line_bytes=100))
    assert (error.status, error.reason) == (513, "Message Too Large (header line)")


def test_too_many_headers_is_513() -> None:
    data = INVITE.replace(b"Max-Forwards: 70", b"\r\n".join([b"X-A: 1"] * 30))
    error = parse_error(data, ParserLimits(max_headers=20))
    assert (error.status, error.reason) == (513, "Too Many Header Fields")


def test_body_too_large_is_413() -> None:
    error = parse_error(INVITE, ParserLimits(max_body_bytes=50))
    assert (error.status, error.reason) == (413, "Request Entity Too Large")


# ---- headers ------------------------------------------------------------------------------


def test_headers_are_case_insensitive_and_ordered() -> None:
    headers = Headers([("via", "a"), ("To", "t"), ("V", "b")])
    assert headers.get_all("VIA") == ["a", "b"]
    assert "to" in headers
    assert "t" in headers
    assert list(headers) == [("Via", "a"), ("To", "t"), ("Via", "b")]
    headers.prepend("Via", "z")
    assert headers.get("Via") == "z"
    assert headers.pop_first("Via") == "z"
    headers.set("Via", "only")
    assert list(headers) == [("Via", "only"), ("To", "t")]
    headers.remove("via")
    assert list(headers) == [("To", "t")]
    assert headers.pop_first("Route") is None
    assert headers.get("Route", "none") == "none"


def test_headers_refuse_injection() -> None:
    headers = Headers()
    with pytest.raises(LocalProtocolError, match="line break"):
        headers.add("Subject", "hi\r\nVia: evil")
    with pytest.raises(LocalProtocolError, match="header name"):
        headers.add("Bad Name", "x")


def test_canonical_names() -> None:
    assert canonical_name("i") == "Call-ID"
    assert canonical_name("CALL-ID") == "Call-ID"
    assert canonical_name("www-authenticate") == "WWW-Authenticate"
    assert canonical_name("X-Unknown") == "X-Unknown"


def test_headers_equality_and_copy() -> None:
    a = Headers([("Via", "x")])
    b = a.copy()
    assert a == b
    b.add("To", "y")
    assert a != b


# ---- serialisation ------------------------------------------------------------------------


def test_serialisation_is_canonical() -> None:
    request = Request("OPTIONS", parse_uri("sip:bob@h"))
    request.headers.add("v", "SIP/2.0/UDP a;branch=z9hG4bK1")
    request.headers.add("Call-ID", "c")
    request.body = b"hello"
    assert request.to_bytes() == (
        b"OPTIONS sip:bob@h SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\nCall-ID: c\r\n"
        b"Content-Length: 5\r\n\r\nhello"
    )
    assert bytes(request) == request.to_bytes()
    assert request.to_bytes(compact=True).startswith(b"OPTIONS sip:bob@h SIP/2.0\r\nv: ")
    assert b"\r\nl: 5\r\n" in request.to_bytes(compact=True)


def test_serialisation_fixes_content_length_in_place() -> None:
    request = parse_request(INVITE)
    request.body = b"x"
    data = request.to_bytes()
    assert b"Content-Length: 1\r\nContact" not in data
    assert data.count(b"Content-Length") == 1
    assert parse_request(data).body == b"x"


def test_round_trip_of_parsed_message() -> None:
    request = parse_request(INVITE)
    assert parse_message(request.to_bytes()) == request


def test_response_serialisation() -> None:
    response = Response(486, "Busy Here")
    assert response.to_bytes() == b"SIP/2.0 486 Busy Here\r\nContent-Length: 0\r\n\r\n"


# ---- building responses -------------------------------------------------------------------


def test_make_response_copies_headers_and_adds_tag() -> None:
    request = parse_request(INVITE)
    request.headers.add("Timestamp", "54")
    response = make_response(request, 180, to_tag="abc", headers=[("Contact", "<sip:b@h>")])
    assert response.reason == "Ringing"
    assert response.headers.get_all("Via") == request.headers.get_all("Via")
    assert response.to.tag == "abc"
    assert response.from_ == request.from_
    assert response.call_id == request.call_id
    assert response.cseq == request.cseq
    assert response.headers.get("Contact") == "<sip:b@h>"
    assert "Timestamp" not in response.headers
    trying = make_response(request, 100, to_tag="abc")
    assert trying.to.tag is None
    assert trying.headers.get("Timestamp") == "54"


def test_make_response_keeps_an_existing_to_tag() -> None:
    request = parse_request(INVITE.replace(b"To: Bob <sip:bob@biloxi.example.com>",
                                           b"To: <sip:bob@biloxi.example.com>;tag=old"))  # fmt: skip
    assert make_response(request, 200, to_tag="new").to.tag == "old"


def test_error_response_for_malformed_request() -> None:
    error = parse_error(INVITE.replace(b"CSeq: 314159 INVITE", b"CSeq: 314159 BYE"))
    response = error_response(error, to_tag="t1")
    assert response is not None
    assert response.status == 400
    assert response.reason == "CSeq method does not match the request method"
    assert response.headers.get("CSeq") == "314159 BYE"
    assert response.to.tag == "t1"
    assert parse_message(response.to_bytes()).to_bytes() == response.to_bytes()


def test_a_bad_header_line_is_still_answered() -> None:
    error = parse_error(INVITE.replace(b"Max-Forwards: 70", b"Foobar roobar"))
    assert error.reason == "Malformed header line"
    response = error_response(error)
    assert response is not None
    assert (response.status, response.reason) == (400, "Malformed header line")
    assert response.cseq.number == 314159


def test_no_error_response_without_the_headers_or_for_ack_or_responses() -> None:
    missing = parse_error(
        INVITE.replace(b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n", b"")
    )
    assert error_response(missing) is None
    ack = INVITE.replace(b"INVITE sip:", b"ACK sip:").replace(
        b"Max-Forwards: 70", b"Max-Forwards: x"
    )
    assert error_response(parse_error(ack.replace(b"314159 INVITE", b"314159 ACK"))) is None
    assert error_response(parse_error(b"SIP/2.0 999 Bad\r\n\r\n")) is None
    assert error_response(SipParseError("no partial")) is None


def test_is_keepalive() -> None:
    assert is_keepalive(b"\r\n\r\n")
    assert is_keepalive(b"\r\n")
    assert not is_keepalive(INVITE)


# ---- stream framing -----------------------------------------------------------------------


def test_framer_cuts_messages_by_content_length() -> None:
    framer = StreamFramer()
    events = framer.feed(INVITE + INVITE)
    assert [type(e) for e in events] == [Frame, Frame]
    assert framer.buffered == 0


def test_framer_byte_by_byte() -> None:
    framer = StreamFramer()
    events = []
    for i in range(len(INVITE)):
        events += framer.feed(INVITE[i : i + 1])
    assert len(events) == 1
    assert isinstance(events[0], Frame)
    assert events[0].message == parse_message(INVITE)


def test_framer_skips_crlf_and_reports_pings() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\r\n") == []
    assert framer.feed(b"\r\n") == [KeepAlivePing()]
    events = framer.feed(b"\r\n" + INVITE)
    assert [type(e) for e in events] == [Frame]


def test_framer_reports_malformed_frames_and_goes_on() -> None:
    framer = StreamFramer()
    bad = INVITE.replace(b"CSeq: 314159 INVITE", b"CSeq: 314159 BYE")
    events = framer.feed(bad + INVITE)
    assert isinstance(events[0], MalformedFrame)
    assert isinstance(events[1], Frame)
    assert error_response(events[0].error) is not None


@pytest.mark.parametrize(
    ("data", "reason", "status"),
    [
        (INVITE.replace(b"Content-Length: 92", b"Content-Length: -5"), "Malformed Content-Length", 400),
        (INVITE.replace(b"Max-Forwards: 70", b"l: 3"), "Multiple Content-Length", 400),
        (INVITE.replace(b"Content-Length: 92", b"Content-Length: 99999"), "Request Entity Too Large", 413),
    ],
)  # fmt: skip
def test_framing_errors_are_terminal(data: bytes, reason: str, status: int) -> None:
    framer = StreamFramer()
    events = framer.feed(data)
    assert len(events) == 1
    assert isinstance(events[0], FramingError)
    assert reason in events[0].error.reason
    assert events[0].error.status == status
    assert error_response(events[0].error) is not None  # the head was readable: answer it
    assert framer.broken
    with pytest.raises(LocalProtocolError):
        framer.feed(INVITE)


def test_framer_oversized_head_without_end() -> None:
    framer = StreamFramer(ParserLimits(max_head_bytes=64))
    events = framer.feed(b"INVITE sip:x SIP/2.0\r\n" + b"X: y\r\n" * 20)
    assert len(events) == 1
    assert isinstance(events[0], FramingError)
    assert events[0].error.status == 513


# ---- RFC 4475 messages through the framer --------------------------------------------------


@pytest.mark.parametrize("name", torture_names())
def test_torture_messages_never_break_the_framer(name: str) -> None:
    events = StreamFramer().feed(torture(name))
    assert all(isinstance(e, Frame | MalformedFrame | FramingError) for e in events)


# ---- property-based fuzz ------------------------------------------------------------------

VALID_SAMPLES = [INVITE] + [
    torture(n) for n in ("wsinv", "intmeth", "esc01", "longreq", "semiuri", "unreason", "mpart01")
]


def _parse_or_error(data: bytes) -> Request | Response | SipParseError:
    try:
        return parse_message(data)
    except SipParseError as exc:  # the only exception allowed
        return exc


def _assert_round_trip(message: Request | Response) -> None:
    """Serialising is a fixed point; with a Content-Length already there, parsing inverts it."""
    again = parse_message(message.to_bytes())
    assert again.to_bytes() == message.to_bytes()
    if "Content-Length" in message.headers:
        expected = message.headers.copy()
        expected.set("Content-Length", str(len(message.body)))  # "007" is written "7"
        assert again.headers == expected
        assert again.body == message.body


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
@example(b"\xff\xfe\r\n\r\n")
@example(b"SIP/2.0 200 OK\r\n\r\n")
@example(b"INVITE sip:a@b SIP/2.0\r\nVia: \r\n\r\n")
def test_fuzz_random_bytes(data: bytes) -> None:
    result = _parse_or_error(data)
    if not isinstance(result, SipParseError):
        _assert_round_trip(result)


@st.composite
def mutated_message(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(VALID_SAMPLES)))
    for _ in range(draw(st.integers(1, 8))):
        action = draw(st.sampled_from(["flip", "insert", "delete", "dup"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if action == "flip" and data:
            data[pos] = draw(
                st.sampled_from(list(b'\x00\r\n \t:;,<>"\\%@=?/[]')) | st.integers(0, 255)
            )
        elif action == "insert":
            data[pos:pos] = draw(
                st.sampled_from(
                    [b"\r\n", b" ", b":", b";", b",", b'"', b"<", b"\r\n ", b"%", b"\xc3", b"\x00"]
                )
            )
        elif action == "delete" and data:
            end = pos + draw(st.integers(1, 16))
            del data[pos:end]
        else:
            end = pos + draw(st.integers(1, 64))
            data[pos:pos] = data[pos:end]
    return bytes(data)


@settings(max_examples=1000, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_message())
def test_fuzz_mutated_messages(data: bytes) -> None:
    result = _parse_or_error(data)
    if isinstance(result, SipParseError):
        error_response(result)  # must not raise either
        assert result.status in (400, 413, 505, 513)
    else:
        _assert_round_trip(result)
        for accessor in ("vias", "from_", "to", "cseq", "call_id", "contacts", "max_forwards"):
            getattr(result, accessor)  # validated on parse: never raises


@settings(max_examples=300)
@given(mutated_message(), st.lists(st.integers(1, 64), min_size=1, max_size=20))
def test_fuzz_framer_in_random_chunks(data: bytes, sizes: list[int]) -> None:
    framer = StreamFramer()
    pos = 0
    for size in sizes * 50:
        if pos >= len(data) or framer.broken:
            break
        framer.feed(data[pos : pos + size])
        pos += size


_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~",
                 min_size=1, max_size=12)  # fmt: skip
_host = st.from_regex(r"[a-z][a-z0-9]{0,8}(\.[a-z][a-z0-9]{0,8}){0,2}", fullmatch=True)
_text = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cs", "Cc"), blacklist_characters="\u2028\u2029\x85"
    ),
    max_size=20,
)


@st.composite
def generated_request(draw: st.DrawFn) -> Request:
    method = draw(st.sampled_from(["INVITE", "OPTIONS", "BYE", "REGISTER"]) | _token)
    uri = SipUri.build(draw(_host), user=draw(st.none() | _text.filter(bool)),
                       port=draw(st.none() | st.integers(1, 65535)))  # fmt: skip
    headers = Headers()
    for i in range(draw(st.integers(1, 3))):
        headers.add(
            "Via",
            f"SIP/2.0/{draw(st.sampled_from(['UDP', 'TCP']))} {draw(_host)};branch=z9hG4bK{i}{draw(_token)}",
        )
    headers.add(
        "From",
        f'"{draw(_text).replace(chr(92), "").replace(chr(34), "")}" <sip:a@{draw(_host)}>;tag={draw(_token)}',
    )
    headers.add("To", f"<sip:b@{draw(_host)}>")
    headers.add("Call-ID", draw(_token))
    headers.add("CSeq", f"{draw(st.integers(0, 2**31 - 1))} {method}")
    for name, value in draw(st.lists(st.tuples(st.sampled_from(["Subject", "X-Extra", "User-Agent"]),
                                               _text.map(str.strip)), max_size=4)):  # fmt: skip
        headers.add(name, value)
    body = draw(st.binary(max_size=200))
    headers.add("Content-Length", str(len(body)))
    return Request(method, uri, headers, body)


@settings(max_examples=300)
@given(generated_request())
def test_generated_messages_round_trip(request: Request) -> None:
    assert parse_message(request.to_bytes()) == request
    assert parse_message(request.to_bytes(compact=True)) == request
