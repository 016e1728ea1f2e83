"""SDP parsing/serialisation and RFC 3264 offer/answer for G.711 audio."""

from __future__ import annotations

import base64

import pytest

from baton.switch.sip.sdp import (
    G722,
    PCMA,
    PCMU,
    Accepted,
    Codec,
    Connection,
    Direction,
    LocalMedia,
    NegotiatedAudio,
    NotAcceptable,
    SdpParseError,
    SdpSession,
    parse_sdp,
)

LOCAL = LocalMedia("127.0.0.1", 30000)

# What SIPp's built-in UAC offers, and what a typical phone offers.
SIPP_OFFER = (
    b"v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
    b"t=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)
PHONE_OFFER = (
    b"v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=call\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 9 8 0 101\r\na=rtpmap:9 G722/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n"
    b"a=ptime:30\r\na=sendrecv\r\n"
)


def offer_with(media: str, *, connection: str = "192.0.2.10", extra: str = "") -> bytes:
    return (
        f"v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 {connection}\r\nt=0 0\r\n"
        f"{media}\r\n{extra}"
    ).encode()


def accepted(result: Accepted | NotAcceptable) -> Accepted:
    assert isinstance(result, Accepted), result
    return result


# ---- parsing ------------------------------------------------------------------------------


def test_parse_phone_offer() -> None:
    sdp = parse_sdp(PHONE_OFFER)
    assert sdp.origin.session_id == "1"
    assert sdp.connection == Connection("192.0.2.10")
    media = sdp.media[0]
    assert (media.media, media.port, media.proto) == ("audio", 4000, "RTP/AVP")
    assert media.formats == ["9", "8", "0", "101"]
    assert media.rtpmap("8") == ("PCMA", 8000)
    assert media.rtpmap("0") == ("PCMU", 8000)
    assert media.fmtp("101") == "0-15"
    assert media.ptime == 30
    assert media.direction is Direction.SENDRECV


def test_static_payload_types_without_rtpmap() -> None:
    media = parse_sdp(offer_with("m=audio 4000 RTP/AVP 0 8 18")).media[0]
    assert media.rtpmap("0") == ("PCMU", 8000)
    assert media.rtpmap("8") == ("PCMA", 8000)
    assert media.rtpmap("18") is None


def test_round_trip_keeps_unknown_lines() -> None:
    text = (
        b"v=0\r\no=- 1 2 IN IP4 h\r\ns=x\r\ni=info\r\nu=http://x\r\ne=a@b\r\nc=IN IP4 h\r\n"
        b"b=AS:64\r\nt=0 0\r\nr=1 2 3\r\na=group:BUNDLE a\r\nm=audio 5 RTP/AVP 0\r\ni=mi\r\n"
        b"c=IN IP4 m\r\nb=AS:8\r\nk=prompt\r\na=sendonly\r\nm=video 0/2 RTP/AVP 31\r\n"
    )
    sdp = parse_sdp(text)
    assert sdp.to_bytes() == text
    assert parse_sdp(sdp.to_bytes()).to_bytes() == text
    assert sdp.media[1].port_count == 2


@pytest.mark.parametrize(
    "text",
    [
        b"",
        b"o=- 1 1 IN IP4 h\r\n",
        b"v=1\r\n",
        b"v=0\r\no=short\r\n",
        b"v=0\r\nm=audio\r\n",
        b"v=0\r\nm=audio x RTP/AVP 0\r\n",
        b"v=0\r\nm=audio 70000 RTP/AVP 0\r\n",
        b"v=0\r\nm=audio 5/x RTP/AVP 0\r\n",
        b"v=0\r\nc=IN IP4\r\n",
        b"v=0\r\nnot a line\r\n",
        b"v=0\r\nm=audio 5 RTP/AVP 0\r\nt=0 0\r\n",
        b"v=0\r\n\xff\xfe\r\n",
    ],
)
def test_malformed_sdp(text: bytes) -> None:
    with pytest.raises(SdpParseError) as info:
        parse_sdp(text)
    assert info.value.status == 400


# ---- answering ----------------------------------------------------------------------------


def test_answer_sipp_offer() -> None:
    result = accepted(SdpSession(LOCAL, session_id=7).answer(SIPP_OFFER))
    assert result.media == NegotiatedAudio(
        codec=PCMU,
        dtmf_payload_type=None,
        remote_address="127.0.0.1",
        remote_port=6000,
        local_direction=Direction.SENDRECV,
        remote_direction=Direction.SENDRECV,
        ptime=20,
    )
    assert result.answer.to_bytes() == (
        b"v=0\r\no=baton 7 7 IN IP4 127.0.0.1\r\ns=baton\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        b"m=audio 30000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n"
    )


def test_first_supported_codec_of_the_offer_wins() -> None:
    narrow = LocalMedia("127.0.0.1", 30000, codecs=(PCMU, PCMA))
    result = accepted(SdpSession(narrow).answer(PHONE_OFFER))
    assert result.media.codec == PCMA  # G722 not ours here, PCMA before PCMU in the offer
    assert result.media.dtmf_payload_type == 101
    assert result.media.ptime == 30  # we send at the rate the offerer asked for
    media = result.answer.media[0]
    assert media.formats == ["8", "101"]
    assert media.rtpmap("101") == ("telephone-event", 8000)
    assert media.fmtp("101") == "0-16"


def test_dynamic_payload_types_are_mapped_by_name() -> None:
    result = accepted(
        SdpSession(LOCAL).answer(
            offer_with("m=audio 4000 RTP/AVP 96 97", extra="a=rtpmap:96 pcmu/8000\r\na=rtpmap:97 TELEPHONE-EVENT/8000\r\n")
        )
    )  # fmt: skip
    assert result.media.codec == Codec("PCMU", 96)
    assert result.media.dtmf_payload_type == 97


def test_wideband_codecs_are_taken_in_the_offer_order() -> None:
    result = accepted(SdpSession(LOCAL).answer(PHONE_OFFER))
    assert result.media.codec == G722  # by default Baton speaks G.722 and Opus too
    assert result.answer.media[0].formats == ["9", "101"]
    opus_first = offer_with(
        "m=audio 4000 RTP/AVP 107 0 101",
        extra="a=rtpmap:107 opus/48000/2\r\na=fmtp:107 useinbandfec=1\r\n"
        "a=rtpmap:101 telephone-event/8000\r\n",
    )
    result = accepted(SdpSession(LOCAL).answer(opus_first))
    assert (result.media.codec.name, result.media.codec.payload_type) == ("opus", 107)
    media = result.answer.media[0]
    assert media.formats == ["107", "101"]
    assert media.attribute_values("rtpmap")[0] == "107 opus/48000/2"  # RFC 7587: always "/2"
    assert media.fmtp("107") == "maxplaybackrate=16000;sprop-maxcapturerate=16000"


def test_our_offer_keeps_g711_first() -> None:
    media = SdpSession(LOCAL).offer().media[0]
    assert media.formats == ["0", "8", "9", "111", "101"]
    assert media.rtpmap("111") == ("opus", 48000)


def test_dtmf_can_be_disabled_locally() -> None:
    narrow = LocalMedia("127.0.0.1", 30000, codecs=(PCMU, PCMA), dtmf=False)
    local = narrow
    result = accepted(SdpSession(local).answer(PHONE_OFFER))
    assert result.media.dtmf_payload_type is None
    assert result.answer.media[0].formats == ["8"]


@pytest.mark.parametrize(
    ("offer", "reason"),
    [
        (offer_with("m=audio 4000 RTP/AVP 4 18", extra="a=rtpmap:4 G723/8000\r\n"), "no common codec"),
        (offer_with("m=audio 4000 RTP/SAVP 0"), "not supported"),
        (offer_with("m=video 4000 RTP/AVP 31"), "video RTP/AVP not supported"),
        (offer_with("m=audio 0 RTP/AVP 0"), "disabled"),
        (b"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\n", "no media stream offered"),
        (b"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n", "no connection"),
    ],
)  # fmt: skip
def test_not_acceptable_is_a_488(offer: bytes, reason: str) -> None:
    result = SdpSession(LOCAL).answer(offer)
    assert isinstance(result, NotAcceptable)
    assert result.status == 488
    assert reason in result.reason


def test_extra_streams_are_rejected_with_port_zero() -> None:
    offer = offer_with(
        "m=video 5000 RTP/AVP 31\r\nm=audio 4000 RTP/AVP 0\r\nm=audio 4002 RTP/AVP 8"
    )
    result = accepted(SdpSession(LOCAL).answer(offer))
    ports = [(m.media, m.port) for m in result.answer.media]
    assert ports == [("video", 0), ("audio", 30000), ("audio", 0)]
    assert result.media.remote_port == 4000


def test_media_level_connection_overrides_session_level() -> None:
    offer = offer_with("m=audio 4000 RTP/AVP 0\r\nc=IN IP4 198.51.100.7")
    assert accepted(SdpSession(LOCAL).answer(offer)).media.remote_address == "198.51.100.7"


@pytest.mark.parametrize(
    ("attribute", "answered", "remote"),
    [
        ("a=sendrecv", Direction.SENDRECV, Direction.SENDRECV),
        ("a=sendonly", Direction.RECVONLY, Direction.SENDONLY),  # the peer holds us
        ("a=recvonly", Direction.SENDONLY, Direction.RECVONLY),
        ("a=inactive", Direction.INACTIVE, Direction.INACTIVE),
    ],
)
def test_direction_is_answered_per_rfc3264(
    attribute: str, answered: Direction, remote: Direction
) -> None:
    offer = offer_with("m=audio 4000 RTP/AVP 0", extra=attribute + "\r\n")
    result = accepted(SdpSession(LOCAL).answer(offer))
    assert result.media.local_direction is answered
    assert result.media.remote_direction is remote
    assert result.answer.media[0].direction is answered
    assert result.media.held_by_remote == (not remote.receives)


def test_session_level_direction_applies_to_media() -> None:
    offer = offer_with("m=audio 4000 RTP/AVP 0").replace(b"t=0 0\r\n", b"t=0 0\r\na=sendonly\r\n")
    assert accepted(SdpSession(LOCAL).answer(offer)).media.local_direction is Direction.RECVONLY


def test_old_style_hold_with_zero_address() -> None:
    offer = offer_with("m=audio 4000 RTP/AVP 0", connection="0.0.0.0")
    result = accepted(SdpSession(LOCAL).answer(offer))
    assert result.media.remote_address is None  # never send RTP to 0.0.0.0
    assert result.media.held_by_remote
    assert result.media.local_direction is Direction.RECVONLY
    assert result.answer.media[0].direction is Direction.RECVONLY


def test_our_wish_narrows_the_answer() -> None:
    result = accepted(SdpSession(LOCAL).answer(PHONE_OFFER, wish=Direction.SENDONLY))
    assert result.media.local_direction is Direction.SENDONLY
    held = offer_with("m=audio 4000 RTP/AVP 0", extra="a=sendonly\r\n")
    both = accepted(SdpSession(LOCAL).answer(held, wish=Direction.SENDONLY))
    assert both.media.local_direction is Direction.INACTIVE


# ---- offering -----------------------------------------------------------------------------


def test_our_offer() -> None:
    session = SdpSession(LocalMedia("127.0.0.1", 30002, codecs=(PCMA, PCMU)), session_id=100)
    offer = session.offer()
    assert offer.to_bytes() == (
        b"v=0\r\no=baton 100 100 IN IP4 127.0.0.1\r\ns=baton\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        b"m=audio 30002 RTP/AVP 8 0 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n"
        b"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
    )


def test_session_version_increments_on_changed_reoffer_only() -> None:
    session = SdpSession(LOCAL, session_id=5)
    assert session.offer().origin.version == 5
    assert session.offer().origin.version == 5  # identical SDP keeps its version (RFC 3264 §8)
    hold = session.offer(Direction.SENDONLY)
    assert hold.origin.version == 6
    assert hold.media[0].direction is Direction.SENDONLY
    assert session.offer().origin.version == 7  # resume
    assert session.offer(new_version=True).origin.version == 8
    assert hold.origin.session_id == session.offer().origin.session_id


def test_answers_share_the_session_version_counter() -> None:
    session = SdpSession(LOCAL, session_id=1)
    assert accepted(session.answer(SIPP_OFFER)).answer.origin.version == 1
    held = SIPP_OFFER.replace(
        b"a=rtpmap:0 PCMU/8000\r\n", b"a=rtpmap:0 PCMU/8000\r\na=sendonly\r\n"
    )
    assert accepted(session.answer(held)).answer.origin.version == 2
    assert session.last_sdp is not None
    assert session.last_sdp.media[0].direction is Direction.RECVONLY


def test_accept_answer() -> None:
    session = SdpSession(LOCAL)
    session.offer()
    answer = offer_with("m=audio 4000 RTP/AVP 8 101", extra="a=rtpmap:101 telephone-event/8000\r\n")
    media = session.accept_answer(answer)
    assert isinstance(media, NegotiatedAudio)
    assert media.codec == PCMA
    assert media.dtmf_payload_type == 101
    assert (media.remote_address, media.remote_port) == ("192.0.2.10", 4000)
    assert media.local_direction is Direction.SENDRECV


def test_accept_answer_to_hold_offer() -> None:
    session = SdpSession(LOCAL)
    session.offer(Direction.SENDONLY)
    media = session.accept_answer(offer_with("m=audio 4000 RTP/AVP 0", extra="a=recvonly\r\n"))
    assert isinstance(media, NegotiatedAudio)
    assert media.local_direction is Direction.SENDONLY


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (offer_with("m=audio 0 RTP/AVP 0"), "rejected"),
        (offer_with("m=audio 4000 RTP/AVP 18"), "no codec"),
        (b"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\n", "no media"),
        (b"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n", "no connection"),
    ],
)
def test_unacceptable_answers(answer: bytes, reason: str) -> None:
    session = SdpSession(LOCAL)
    session.offer()
    result = session.accept_answer(answer)
    assert isinstance(result, NotAcceptable)
    assert reason in result.reason


def test_answer_without_offer() -> None:
    assert isinstance(SdpSession(LOCAL).accept_answer(SIPP_OFFER), NotAcceptable)


def test_ipv6_local_address() -> None:
    offer = SdpSession(LocalMedia("::1", 30000)).offer()
    assert offer.connection == Connection("::1", "IN", "IP6")
    assert offer.origin.addr_type == "IP6"


# ---- SDES-SRTP (RFC 4568) ----------------------------------------------------------------

THEIR_KEY = bytes(range(30))
OURS = bytes(range(100, 130))


def srtp_offer(proto: str = "RTP/SAVP", crypto: bool = True) -> bytes:
    line = f"a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:{base64.b64encode(THEIR_KEY).decode()}\r\n"
    return offer_with(f"m=audio 4000 {proto} 0", extra="a=rtpmap:0 PCMU/8000\r\n"
                      + (line if crypto else ""))  # fmt: skip


@pytest.mark.parametrize("policy", ["optional", "required"])
def test_an_srtp_offer_is_answered_with_our_key(policy: str) -> None:
    session = SdpSession(LocalMedia("127.0.0.1", 30000, srtp=policy, srtp_key=OURS))
    result = accepted(session.answer(srtp_offer()))
    media = result.answer.media[0]
    assert media.proto == "RTP/SAVP"
    assert media.attribute_values("crypto") == [
        f"3 AES_CM_128_HMAC_SHA1_80 inline:{base64.b64encode(OURS).decode()}"
    ]
    assert (result.media.srtp_send, result.media.srtp_receive) == (OURS, THEIR_KEY)


def test_srtp_policies_refuse_what_they_cannot_do() -> None:
    required = SdpSession(LocalMedia("127.0.0.1", 30000, srtp="required", srtp_key=OURS))
    assert isinstance(required.answer(SIPP_OFFER), NotAcceptable)  # plain RTP offered
    off = SdpSession(LocalMedia("127.0.0.1", 30000))
    assert isinstance(off.answer(srtp_offer()), NotAcceptable)  # RTP/SAVP: not without keys
    plain = accepted(off.answer(srtp_offer("RTP/AVP")))  # best-effort key ignored
    assert plain.media.srtp_receive is None and not plain.answer.media[0].attribute_values("crypto")
    optional = SdpSession(LocalMedia("127.0.0.1", 30000, srtp="optional", srtp_key=OURS))
    assert accepted(optional.answer(SIPP_OFFER)).media.srtp_send is None
    missing = SdpSession(LocalMedia("127.0.0.1", 30000, srtp="optional", srtp_key=OURS))
    assert isinstance(missing.answer(srtp_offer(crypto=False)), NotAcceptable)  # SAVP, no key


def test_our_srtp_offer_and_the_answer() -> None:
    session = SdpSession(LocalMedia("127.0.0.1", 30000, srtp="required", srtp_key=OURS))
    media = session.offer().media[0]
    assert media.proto == "RTP/SAVP" and len(media.attribute_values("crypto")) == 1
    negotiated = session.accept_answer(srtp_offer())
    assert isinstance(negotiated, NegotiatedAudio)
    assert (negotiated.srtp_send, negotiated.srtp_receive) == (OURS, THEIR_KEY)
    again = SdpSession(LocalMedia("127.0.0.1", 30000, srtp="required", srtp_key=OURS))
    again.offer()
    assert isinstance(again.accept_answer(SIPP_OFFER), NotAcceptable)  # no key in the answer
    optional = SdpSession(LocalMedia("127.0.0.1", 30000, srtp="optional", srtp_key=OURS))
    assert optional.offer().media[0].proto == "RTP/AVP"  # best effort: a key on plain RTP/AVP
