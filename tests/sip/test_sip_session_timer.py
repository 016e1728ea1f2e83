"""Session timers (RFC 4028): negotiation on both sides and the refresh/expiry deadlines."""

from __future__ import annotations

import pytest
from sipfixtures import sip

from baton.switch.sip.message import Request, Response, make_response, parse_message
from baton.switch.sip.session_timer import (
    SessionTimer,
    negotiate_uac,
    negotiate_uas,
    request_headers,
    retry_interval,
)


def invite(*extra: str) -> Request:
    lines = [
        "INVITE sip:1002@127.0.0.1 SIP/2.0",
        "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKst",
        "From: <sip:alice@127.0.0.1>;tag=a",
        "To: <sip:1002@127.0.0.1>",
        "Call-ID: st-1",
        "CSeq: 1 INVITE",
        *extra,
        "Content-Length: 0",
    ]
    message = parse_message(sip("\n".join(lines)))
    assert isinstance(message, Request)
    return message


def settled(
    result: tuple[SessionTimer, list[tuple[str, str]]] | Response,
) -> tuple[SessionTimer, list[tuple[str, str]]]:
    assert not isinstance(result, Response), result
    return result


def test_uac_supports_timer_and_chooses_refresher() -> None:
    timer, headers = settled(
        negotiate_uas(invite("Supported: timer", "Session-Expires: 600;refresher=uac"))
    )
    assert timer == SessionTimer(600, we_refresh=False)
    assert headers == [("Session-Expires", "600;refresher=uac"), ("Require", "timer")]


def test_uac_supports_timer_without_choosing() -> None:
    timer, headers = settled(negotiate_uas(invite("Supported: timer", "Session-Expires: 600")))
    assert timer.we_refresh is False
    assert headers[0] == ("Session-Expires", "600;refresher=uac")


def test_uac_without_timer_support_makes_us_the_refresher() -> None:
    timer, headers = settled(negotiate_uas(invite("Session-Expires: 600;refresher=uac")))
    assert timer == SessionTimer(600, we_refresh=True)
    assert headers == [("Session-Expires", "600;refresher=uas")]


def test_no_session_expires_uses_our_preference() -> None:
    timer, headers = settled(negotiate_uas(invite(), preferred=1200))
    assert timer == SessionTimer(1200, we_refresh=True)
    assert headers == [("Session-Expires", "1200;refresher=uas")]


def test_too_small_interval_is_422() -> None:
    response = negotiate_uas(invite("Supported: timer", "Session-Expires: 30"), min_se=90)
    assert isinstance(response, Response)
    assert (response.status, response.headers.get("Min-SE")) == (422, "90")
    assert retry_interval(response) == 90
    assert retry_interval(make_response(invite(), 200)) is None


@pytest.mark.parametrize("value", ["soon", "600;refresher=me", "600;;"])
def test_malformed_session_expires_is_400(value: str) -> None:
    response = negotiate_uas(invite(f"Session-Expires: {value}"))
    assert isinstance(response, Response)
    assert response.status == 400


def test_uac_side() -> None:
    ok = make_response(invite(), 200, headers=[("Session-Expires", "900;refresher=uac")])
    assert negotiate_uac(ok) == SessionTimer(900, we_refresh=True)
    theirs = make_response(invite(), 200, headers=[("Session-Expires", "900;refresher=uas")])
    assert negotiate_uac(theirs) == SessionTimer(900, we_refresh=False)
    assert negotiate_uac(make_response(invite(), 200)) is None
    assert request_headers(1800, 90) == [("Supported", "timer"), ("Session-Expires", "1800"),
                                         ("Min-SE", "90")]  # fmt: skip


def test_deadlines() -> None:
    ours = SessionTimer(1800, we_refresh=True)
    assert ours.refresh_at(100.0) == 1000.0
    assert ours.expire_at(100.0) == 1868.0  # 1800 - min(32, 600)
    theirs = SessionTimer(90, we_refresh=False)
    assert theirs.refresh_at(0.0) is None
    assert theirs.expire_at(0.0) == 60.0  # 90 - min(32, 30)
