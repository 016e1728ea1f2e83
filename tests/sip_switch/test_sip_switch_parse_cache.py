"""The memoised URI, name-addr and Via parsers (a B2BUA re-reads the same header values many
times per call): sharing a parse is safe because the values are immutable, and errors are
never cached."""

from __future__ import annotations

import pytest

from baton.switch.sip import SipParseError, parse_name_addr, parse_uri, parse_via


def test_repeated_parses_share_an_immutable_value() -> None:
    text = '"Alice" <sip:alice@127.0.0.1:5062;transport=tcp>;tag=abc'
    first, second = parse_name_addr(text, "From"), parse_name_addr(text, "From")
    assert first is second
    assert type(first).__dataclass_params__.frozen  # type: ignore[attr-defined]
    assert first.with_tag("xyz").tag == "xyz" and first.tag == "abc"  # copies, never edits
    assert parse_uri("sip:bob@127.0.0.1") is parse_uri("sip:bob@127.0.0.1")
    via = "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKabc;rport"
    assert parse_via(via) is parse_via(via)


def test_errors_are_raised_every_time() -> None:
    for _ in range(2):
        with pytest.raises(SipParseError, match="From"):
            parse_name_addr('"unterminated <sip:a@b>', "From")
        with pytest.raises(SipParseError):
            parse_uri("not a uri")


def test_what_is_part_of_the_key() -> None:
    with pytest.raises(SipParseError, match="To"):
        parse_name_addr('"x <sip:a@b>', "To")
    with pytest.raises(SipParseError, match="Contact"):
        parse_name_addr('"x <sip:a@b>', "Contact")
