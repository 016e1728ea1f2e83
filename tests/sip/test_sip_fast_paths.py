"""The parsers' fast paths (one regular expression for the common Via and name-addr shapes)
must give exactly what the scanner gives, or decline: never another value, never a value where
the scanner refuses. Checked on every Via/From/To/Contact/Route value of the RFC 4475 torture
messages, on the shapes phones send, and on mutations of both."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from baton.switch.sip.errors import SipParseError
from baton.switch.sip.uri import (
    NameAddress,
    Via,
    _name_addr_fast,
    _parse_name_addr_slow,
    _parse_via_slow,
    _via_fast,
)

TORTURE = Path(__file__).parent / "rfc4475"
_HEADER = re.compile(
    r"^(via|v|from|f|to|t|contact|m|route|record-route)[ \t]*:[ \t]*(.*)$", re.I | re.M
)

COMMON_VIAS = [
    "SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-5425-49-0",
    "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKabc;rport",
    "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKabc;rport=5060;received=192.0.2.1",
    "SIP/2.0/TCP pc33.example.com;branch=z9hG4bK776asdhds",
    "SIP/2.0/tls host.example.com:5061;branch=z9hG4bK1;alias",
    "SIP/2.0/UDP host;branch=",
    "SIP/2.0/UDP host;rport=99999;branch=z9hG4bK1",
    "SIP/2.0/UDP .host;branch=z9hG4bK1",
    "SIP/2.0/UDP ho..st;branch=z9hG4bK1",
    "SIP/2.0/UDP host:99999;branch=z9hG4bK1",
    "SIP/2.0/UDP host:0;branch=z9hG4bK1",
    "SIP/2.0/UDP [::1]:5060;branch=z9hG4bK1",
    "SIP / 2.0 / UDP host;branch=z9hG4bK1",
]
COMMON_NAME_ADDRS = [
    "<sip:caller1@127.0.0.1:5061>;tag=5425SIPpTag0049",
    "<sip:20048@127.0.0.1:43095>",
    "sip:caller1@127.0.0.1:5061",
    "sip:caller1@127.0.0.1:5061;expires=60",
    '"Bob" <sip:bob@biloxi.example.com>;tag=a6c85cf',
    '"" <sip:bob@biloxi.example.com>',
    '"Alice Smith"<sips:alice@atlanta.example.com>;tag=1928301774;x',
    "Bob <sip:bob@biloxi.example.com>",
    "<tel:+15551234567>;tag=1",
    "<sip:bob@biloxi.example.com;lr>",
    "<sip:bob@host:99999>",
    "<sip:@host>",
    "sip:a@b?c",
    "sip:a@b,c",
    "<sip:a@b>;tag=",
    '<sip:a@b>;tag="quoted"',
    "<sip:a@b> ; tag = x",
    "*",
]


def torture_values() -> list[tuple[str, str]]:
    out = []
    for path in sorted(TORTURE.glob("*.sip")):
        text = path.read_bytes().decode("utf-8", "surrogateescape").replace("\r\n", "\n")
        for name, value in _HEADER.findall(text.split("\n\n", 1)[0]):
            kind = "via" if name.lower() in ("via", "v") else "addr"
            out += [(kind, part.strip(" \t")) for part in value.split(",")]
    return out


def check_via(text: str) -> None:
    fast = _via_fast(text)
    if fast is None:
        return
    assert isinstance(fast, Via)
    assert _parse_via_slow(text) == fast  # the scanner must not refuse what the fast path took


def check_name_addr(text: str) -> None:
    fast = _name_addr_fast(text)
    if fast is None:
        return
    assert isinstance(fast, NameAddress)
    assert _parse_name_addr_slow(text, "From") == fast


def test_the_torture_values_agree() -> None:
    values = torture_values()
    assert len(values) > 100
    taken = 0
    for kind, text in values:
        (check_via if kind == "via" else check_name_addr)(text)
        taken += (_via_fast if kind == "via" else _name_addr_fast)(text) is not None
    assert taken > 50  # the fast paths do take the ordinary values


@pytest.mark.parametrize("text", COMMON_VIAS)
def test_common_vias_agree(text: str) -> None:
    check_via(text)
    try:
        _parse_via_slow(text)
    except SipParseError:
        assert _via_fast(text) is None


@pytest.mark.parametrize("text", COMMON_NAME_ADDRS)
def test_common_name_addrs_agree(text: str) -> None:
    check_name_addr(text)
    try:
        _parse_name_addr_slow(text, "From")
    except SipParseError:
        assert _name_addr_fast(text) is None


def test_the_ordinary_shapes_take_the_fast_path() -> None:
    assert _via_fast(COMMON_VIAS[0]) is not None
    assert _via_fast(COMMON_VIAS[2]) is not None
    assert _name_addr_fast(COMMON_NAME_ADDRS[0]) is not None
    assert _name_addr_fast(COMMON_NAME_ADDRS[2]) is not None
    assert _name_addr_fast(COMMON_NAME_ADDRS[4]) is not None


_ALPHABET = st.sampled_from([*"<>\";=:@.[]_-!%*+`'~ \t,?\\/0123456789abcAZ", "\x00", "é"])


@st.composite
def mutated(draw: st.DrawFn, corpus: list[str]) -> str:
    text = list(draw(st.sampled_from(corpus)))
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(text)))
        action = draw(st.sampled_from(["insert", "replace", "delete"]))
        if action == "insert" or not text:
            text.insert(pos, draw(_ALPHABET))
        elif action == "replace":
            text[min(pos, len(text) - 1)] = draw(_ALPHABET)
        else:
            del text[min(pos, len(text) - 1)]
    return "".join(text)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(mutated(COMMON_VIAS))
@example("SIP/2.0/UDP h;branch=1;branch")
def test_mutated_vias_agree(text: str) -> None:
    check_via(text)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(mutated(COMMON_NAME_ADDRS))
@example('"a\\"b" <sip:a@b>')
def test_mutated_name_addrs_agree(text: str) -> None:
    check_name_addr(text)
