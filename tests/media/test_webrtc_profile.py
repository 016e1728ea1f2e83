"""The WebRTC profile's pieces without a browser: ICE-lite checks (built and verified with
aioice's STUN, an independent implementation) and the SDP offer/answer of a browser's leg."""

from __future__ import annotations

import pytest
from aioice import stun

from baton.switch.media.webrtc import DtlsIdentity, WebRtcLeg, is_dtls, is_stun
from baton.switch.sip.sdp import (
    WEBRTC_PROTO,
    Accepted,
    LocalMedia,
    NotAcceptable,
    SdpSession,
    WebRtcLocal,
    parse_sdp,
)

IDENTITY = DtlsIdentity()


def check(ufrag: str, pwd: str, *, nominate: bool = False) -> bytes:
    msg = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
    msg.attributes["USERNAME"] = f"{ufrag}:browser"
    msg.attributes["PRIORITY"] = 12345
    msg.attributes["ICE-CONTROLLING"] = 42
    if nominate:
        msg.attributes["USE-CANDIDATE"] = None
    msg.add_message_integrity(pwd.encode())
    msg.add_fingerprint()
    return bytes(msg)


def test_ice_lite_answers_only_checks_signed_with_our_password() -> None:
    leg = WebRtcLeg(IDENTITY, "ufrag123", "p" * 24, "sha-256 00")
    request = check("ufrag123", "p" * 24)
    assert is_stun(request) and not is_dtls(request)
    assert leg.on_stun(check("ufrag123", "q" * 24), ("127.0.0.1", 5000)) is None
    assert leg.on_stun(check("other", "p" * 24), ("127.0.0.1", 5000)) is None
    assert leg.selected is None
    reply = leg.on_stun(request, ("127.0.0.1", 5000))
    assert reply is not None
    parsed = stun.parse_message(reply)
    assert parsed.message_class is stun.Class.RESPONSE
    assert parsed.transaction_id == stun.parse_message(request).transaction_id
    assert parsed.attributes["XOR-MAPPED-ADDRESS"] == ("127.0.0.1", 5000)
    parsed.check_message_integrity(b"p" * 24)  # raises if the MAC is wrong
    assert leg.selected == ("127.0.0.1", 5000) and not leg.nominated
    leg.on_stun(check("ufrag123", "p" * 24, nominate=True), ("127.0.0.1", 6000))
    assert leg.selected == ("127.0.0.1", 6000) and leg.nominated


LOCAL = LocalMedia(
    "127.0.0.1", 30000, webrtc=WebRtcLocal("ufrag123", "p" * 24, IDENTITY.fingerprint)
)

CHROME_OFFER = (
    "v=0\r\no=- 4611 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
    "a=msid-semantic: WMS\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 126\r\n"
    "c=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\n"
    "a=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=ice-options:trickle\r\n"
    "a=fingerprint:sha-256 AA:BB\r\na=setup:actpass\r\na=mid:0\r\na=sendrecv\r\n"
    "a=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n"
    "a=rtpmap:63 red/48000/2\r\na=rtpmap:9 G722/8000\r\na=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:8 PCMA/8000\r\na=rtpmap:126 telephone-event/8000\r\n"
)


def test_a_browser_offer_is_answered_with_ice_lite_and_dtls_srtp() -> None:
    result = SdpSession(LOCAL).answer(CHROME_OFFER.encode())
    assert isinstance(result, Accepted), result
    answer = result.answer
    assert ("ice-lite", None) in answer.attributes
    assert ("group", "BUNDLE 0") in answer.attributes
    media = answer.media[0]
    assert media.proto == WEBRTC_PROTO and media.formats == ["111", "126"]
    for name, value in [("setup", "passive"), ("mid", "0"), ("ice-ufrag", "ufrag123"),
                        ("fingerprint", IDENTITY.fingerprint)]:  # fmt: skip
        assert media.attribute(name) == value
    assert ("rtcp-mux", None) in media.attributes
    assert "127.0.0.1 30000 typ host" in (media.attribute("candidate") or "")
    negotiated = result.media
    assert negotiated.codec.name == "opus" and negotiated.dtmf_payload_type == 126
    assert negotiated.remote_address == "0.0.0.0"  # not a hold: ICE says where media goes
    assert negotiated.local_direction.sends and negotiated.local_direction.receives
    assert negotiated.webrtc == ("ufrag123", "p" * 24, "sha-256 AA:BB")
    assert negotiated.srtp_send is None  # the keys come from DTLS


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (("a=fingerprint:sha-256 AA:BB\r\n", ""), "fingerprint"),
        (("a=rtcp-mux\r\n", ""), "rtcp-mux"),
        (("a=ice-pwd:abcdefghijklmnopqrstuvwx\r\n", ""), "ICE credentials"),
        (("a=setup:actpass", "a=setup:passive"), "DTLS server"),
    ],
)
def test_browser_offers_without_what_webrtc_needs_get_488(
    change: tuple[str, str], reason: str
) -> None:
    result = SdpSession(LOCAL).answer(CHROME_OFFER.replace(*change).encode())
    assert isinstance(result, NotAcceptable) and result.status == 488
    assert reason in result.reason


def test_offers_to_a_browser_use_the_webrtc_profile_and_read_its_answer() -> None:
    local = LocalMedia(
        "127.0.0.1", 30000, webrtc=WebRtcLocal("u" * 8, "p" * 24, "sha-256 CC"), offer_webrtc=True
    )
    session = SdpSession(local)
    offer = session.offer()
    media = offer.media[0]
    assert media.proto == WEBRTC_PROTO and media.formats[0] == "111"  # Opus first
    assert media.attribute("setup") == "actpass"
    assert ("ice-lite", None) in offer.attributes
    answer = parse_sdp(
        CHROME_OFFER.replace("a=setup:actpass", "a=setup:active").replace(" 63 9 0 8 126", " 126")
    )
    negotiated = session.accept_answer(answer)
    assert not isinstance(negotiated, NotAcceptable), negotiated
    assert negotiated.codec.name == "opus" and negotiated.webrtc is not None
    passive = SdpSession(local)
    passive.offer()
    refused = passive.accept_answer(
        CHROME_OFFER.replace("a=setup:actpass", "a=setup:passive").encode()
    )
    assert isinstance(refused, NotAcceptable)


def test_re_offers_after_a_browser_offer_stay_webrtc() -> None:
    """A session refresh or hold re-offer to a browser that called in: the same profile, mid,
    ICE credentials and fingerprint, and Baton stays the DTLS server."""
    session = SdpSession(LOCAL)
    offer = CHROME_OFFER.replace("a=mid:0", "a=mid:audio").replace("BUNDLE 0", "BUNDLE audio")
    assert isinstance(session.answer(offer.encode()), Accepted)
    again = session.offer()
    media = again.media[0]
    assert media.proto == WEBRTC_PROTO
    assert media.attribute("mid") == "audio" and ("group", "BUNDLE audio") in again.attributes
    assert media.attribute("setup") == "passive"
    assert media.attribute("ice-ufrag") == "ufrag123"
    assert media.attribute("fingerprint") == IDENTITY.fingerprint


@pytest.mark.parametrize(
    "candidates",
    [
        "",  # a trickling browser's first offer: its candidates come later, or never
        "a=candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host\r\na=end-of-candidates\r\n",
        "a=candidate:2 1 udp 2122260223 4d6e.local 50000 typ host\r\n",  # mDNS, unresolvable
    ],
)
def test_the_browsers_candidates_are_not_needed(candidates: str) -> None:
    # ICE-lite: the browser's checks say where it is, so an offer is answered the same with
    # or without its candidates (docs/sip.md, "WebRTC").
    result = SdpSession(LOCAL).answer((CHROME_OFFER + candidates).encode())
    assert isinstance(result, Accepted), result
    media = result.answer.media[0]
    assert media.attribute("setup") == "passive" and media.formats == ["111", "126"]
    assert ("end-of-candidates", None) in media.attributes  # ours are all in the answer
