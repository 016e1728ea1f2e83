"""SIP URIs, name-addr/addr-spec and Via: parsing, round trips, comparison."""

from __future__ import annotations

import pytest

from baton.switch.sip.errors import SipParseError
from baton.switch.sip.uri import (
    AbsoluteUri,
    NameAddress,
    SipUri,
    Via,
    escape_user,
    parse_name_addr,
    parse_uri,
    parse_via,
    unescape,
)


def sip_uri(text: str) -> SipUri:
    uri = parse_uri(text)
    assert isinstance(uri, SipUri)
    return uri


# ---- SIP URIs ------------------------------------------------------------------------------


def test_full_uri_components() -> None:
    uri = sip_uri(
        "sips:alice:secret@Example.COM:5061;transport=TCP;lr;maddr=10.0.0.1?Subject=hi&x="
    )
    assert uri.scheme == "sips"
    assert uri.user == "alice"
    assert uri.password == "secret"
    assert uri.host == "Example.COM"
    assert uri.port == 5061
    assert uri.params.get("transport") == "TCP"
    assert uri.transport == "tcp"
    assert uri.lr
    assert uri.params.get("maddr") == "10.0.0.1"
    assert uri.headers == (("Subject", "hi"), ("x", ""))


@pytest.mark.parametrize(
    "text",
    [
        "sip:alice@127.0.0.1:5064",
        "sip:alice-0x55d0c8a0@127.0.0.1:5064;transport=UDP",
        "sip:127.0.0.1",
        "sip:[2001:db8::10]:5070;transport=tcp",
        "sip:user;par=u%40example.net@example.com",
        "sip:%75se%72@example.com",
        "sips:bob@biloxi.example.com;lr?Route=%3Csip:x%3E",
        "sip:+19725552222@gw1.example.net;user=phone",
    ],
)
def test_uri_round_trips_exactly(text: str) -> None:
    assert str(parse_uri(text)) == text


def test_scheme_is_case_insensitive() -> None:
    assert sip_uri("SIP:bob@host").scheme == "sip"


def test_ipv6_reference() -> None:
    uri = sip_uri("sip:bob@[::1]:5062")
    assert uri.host == "[::1]"
    assert uri.host_port() == ("::1", 5062)


def test_default_ports() -> None:
    assert sip_uri("sip:h").host_port() == ("h", 5060)
    assert sip_uri("sips:h").host_port() == ("h", 5061)


def test_user_with_semicolon_params_in_user_part() -> None:
    uri = sip_uri("sip:user;par=u%40example.net@example.com")
    assert uri.user == "user;par=u%40example.net"
    assert uri.user_text == "user;par=u@example.net"
    assert len(uri.params) == 0


def test_escapes_are_kept_and_decoded_on_demand() -> None:
    uri = sip_uri("sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31")
    assert uri.user == "cal%6Cer"
    assert uri.user_text == "caller"
    assert unescape(uri.params.get("n%61me") or "") == "value%41"  # never decoded twice


def test_escaped_null_user_is_not_shortened() -> None:
    assert sip_uri("sip:null-%00-null@example.com").user_text == "null-\x00-null"


@pytest.mark.parametrize(
    "text",
    [
        "sip:",
        "sip:@host",
        "sip:user@",
        "sip:user@host:99999",
        "sip:user@host:port",
        "sip:user@[::1",
        "sip:user@[zz::1]",
        "sip:us er@host",
        "sip:user@ho st",
        "sip:user@host;",
        "sip:user@host;=x",
        "sip:user@host;a=",
        "sip:user@host?",
        "sip:user@host?a",
        "sip:user%2@host",
        "sip:user%zz@host",
        "sip:user@host..com",
        "sip:user@host<",
        "nocolon",
        ":nothing",
        "1abc:x",
        "tel:",
        "tel:has space",
    ],
)
def test_malformed_uris_raise_parse_error(text: str) -> None:
    with pytest.raises(SipParseError) as info:
        parse_uri(text)
    assert info.value.status == 400
    assert "URI" in info.value.reason


def test_other_schemes_are_opaque() -> None:
    assert parse_uri("tel:+1-201-555-0123") == AbsoluteUri("tel", "+1-201-555-0123")
    assert parse_uri("isbn:2983792873") == AbsoluteUri("isbn", "2983792873")
    assert str(parse_uri("soap.beep://192.0.2.103:3002")) == "soap.beep://192.0.2.103:3002"


def test_build_escapes_the_user() -> None:
    uri = SipUri.build("example.com", user="I have spaces", port=5070, params={"lr": None})
    assert str(uri) == "sip:I%20have%20spaces@example.com:5070;lr"
    assert escape_user("a@b") == "a%40b"


def test_with_and_without_params() -> None:
    uri = sip_uri("sip:a@h;transport=udp")
    assert str(uri.with_params(transport="tcp", lr=None)) == "sip:a@h;transport=tcp;lr"
    assert str(uri.without_params("transport")) == "sip:a@h"
    assert str(sip_uri("sip:a@h?x=1").without_headers()) == "sip:a@h"


# ---- comparison (RFC 3261 §19.1.4) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
        ("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;newparam=5"),
        ("sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
         "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com"),
        ("sip:alice@atlanta.com?subject=project%20x&priority=urgent",
         "sip:alice@atlanta.com?priority=urgent&subject=project%20x"),
    ],
)  # fmt: skip
def test_equivalent_uris(a: str, b: str) -> None:
    assert sip_uri(a).equivalent(sip_uri(b))
    assert sip_uri(b).equivalent(sip_uri(a))


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting"),
        ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),
        ("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;security=off"),
        ("sip:a@h", "sips:a@h"),
    ],
)
def test_different_uris(a: str, b: str) -> None:
    assert not sip_uri(a).equivalent(sip_uri(b))


def test_absolute_uri_equivalence() -> None:
    assert parse_uri("tel:123").equivalent(parse_uri("tel:123"))
    assert not parse_uri("tel:123").equivalent(parse_uri("sip:123@h"))


# ---- name-addr / addr-spec ----------------------------------------------------------------


def test_name_addr_with_quoted_display_name_and_tag() -> None:
    addr = parse_name_addr('"Alice \\"A\\" Liddell" <sip:alice@atlanta.com>;tag=1928301774')
    assert addr.display_name == 'Alice "A" Liddell'
    assert str(addr.uri) == "sip:alice@atlanta.com"
    assert addr.tag == "1928301774"
    assert str(addr) == '"Alice \\"A\\" Liddell" <sip:alice@atlanta.com>;tag=1928301774'


def test_name_addr_token_display_name_without_space() -> None:
    addr = parse_name_addr("caller<sip:caller@example.com>;tag=323")
    assert addr.display_name == "caller"
    assert addr.tag == "323"


def test_addr_spec_params_belong_to_the_header() -> None:
    addr = parse_name_addr("sip:+19725552222@gw1.example.net;unknownparam")
    assert isinstance(addr.uri, SipUri)
    assert len(addr.uri.params) == 0
    assert "unknownparam" in addr.params
    inside = parse_name_addr("<sip:+19725552222@gw1.example.net;unknownparam>")
    assert isinstance(inside.uri, SipUri)
    assert "unknownparam" in inside.uri.params
    assert len(inside.params) == 0


def test_lws_around_param_separators() -> None:
    addr = parse_name_addr("sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n")
    assert addr.tag == "1918181833n"


def test_contact_params_with_quoted_value() -> None:
    addr = parse_name_addr('<sip:a@h>;q=0.7;expires=3600;+sip.instance="<urn:uuid:1234>"')
    assert addr.params.get("q") == "0.7"
    assert addr.params.get("+sip.instance") == '"<urn:uuid:1234>"'


def test_with_tag_and_params() -> None:
    addr = parse_name_addr("<sip:bob@biloxi.com>")
    assert str(addr.with_tag("abc")) == "<sip:bob@biloxi.com>;tag=abc"
    assert str(addr.with_param("expires", "60").without_param("expires")) == "<sip:bob@biloxi.com>"


def test_name_addr_quoting_escapes_controls_and_drops_line_breaks() -> None:
    addr = NameAddress(parse_uri("sip:a@h"), 'x"\\\r\ny\x07')
    assert str(addr) == '"x\\"\\\\  y\\\x07" <sip:a@h>'


@pytest.mark.parametrize(
    "text",
    [
        '"Mr. J. User <sip:j.user@example.com>',  # quotbal
        '"Watson, Thomas" < sip:t.watson@example.org >',  # badaspec
        "Bell, Alexander <sip:a.g.bell@example.com>;tag=43",  # baddn
        "sip:user@example.com?Route=%3Csip:sip.example.com%3E",  # regbadct
        '"Joe" <sip:joe@example.org>;;;;',  # badinv01
        "<sip:a@h",
        '"x" sip:a@h',
        "<sip:a@h>;tag=",
        "<sip:a@h> junk",
        "",
    ],
)
def test_malformed_name_addr(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_name_addr(text, "To")


# ---- Via --------------------------------------------------------------------------------


def test_via_components() -> None:
    via = parse_via(
        "SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK776asdhds;rport=5071;received=10.0.0.1"
    )
    assert via == Via(
        "UDP",
        "192.0.2.1",
        5070,
        via.params,
    )
    assert via.branch == "z9hG4bK776asdhds"
    assert via.rport == 5071
    assert via.wants_rport
    assert via.received == "10.0.0.1"
    assert via.sent_by == ("192.0.2.1", 5070)


def test_via_lws_everywhere() -> None:
    via = parse_via("SIP  /   2.0 /UDP     192.0.2.2;branch=390skdjuw")
    assert (via.transport, via.host, via.branch) == ("UDP", "192.0.2.2", "390skdjuw")
    spaced = parse_via("SIP  / 2.0  / TCP     spindle.example.com   ; branch  =   z9hG4bK9ikj8")
    assert (spaced.transport, spaced.host, spaced.branch) == (
        "TCP",
        "spindle.example.com",
        "z9hG4bK9ikj8",
    )
    colon = parse_via("SIP/2.0/UDP host : 5062")
    assert colon.port == 5062


def test_via_transport_is_case_insensitive_and_default_ports() -> None:
    assert parse_via("SIP/2.0/udp h").transport == "UDP"
    assert parse_via("SIP/2.0/UDP H.example").sent_by == ("h.example", 5060)
    assert parse_via("SIP/2.0/TLS h").sent_by == ("h", 5061)


def test_via_rport_flag_and_ipv6() -> None:
    via = parse_via("SIP/2.0/UDP [2001:db8::1]:5060;rport;branch=z9hG4bKx")
    assert via.host == "[2001:db8::1]"
    assert via.wants_rport
    assert via.rport is None


def test_via_round_trip_and_with_params() -> None:
    text = "SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds;rport"
    via = parse_via(text)
    assert str(via) == text
    filled = via.with_params(rport="5062", received="192.0.2.9")
    assert str(filled) == text.replace(";rport", ";rport=5062;received=192.0.2.9")


@pytest.mark.parametrize(
    "text",
    [
        "SIP/2.0/UDP 192.0.2.15;;",
        "SIP/2.0/UDP",
        "SIP/2.0 UDP host",
        "SIP/2.0/UDPhost",
        "SIP/2.0/UDP host;branch=",
        "SIP/2.0/UDP host;rport=x",
        "SIP/2.0/UDP host:",
        "SIP/2.0/UDP host:70000",
        "SIP/2.0/UDP [::1",
        "garbage",
    ],
)
def test_malformed_via(text: str) -> None:
    with pytest.raises(SipParseError, match="Via"):
        parse_via(text)
