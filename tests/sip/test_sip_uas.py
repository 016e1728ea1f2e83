"""The UAS's first look at requests (RFC 3261 §8.2), including the RFC 4475 §3.3 cases."""

from __future__ import annotations

import pytest
from sipfixtures import sip, torture

from baton.switch.sip.message import Request, parse_message
from baton.switch.sip.uas import UasPolicy, check_request


def parsed(data: bytes) -> Request:
    message = parse_message(data)
    assert isinstance(message, Request)
    return message


def request(method: str = "INVITE", *, extra: tuple[str, ...] = (), body: str = "",
            uri: str = "sip:1002@127.0.0.1") -> Request:  # fmt: skip
    lines = [
        f"{method} {uri} SIP/2.0",
        "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKu1",
        "Max-Forwards: 70",
        "From: <sip:alice@127.0.0.1>;tag=a",
        "To: <sip:1002@127.0.0.1>",
        "Call-ID: uas-check",
        f"CSeq: 1 {method}",
        *extra,
        "Content-Length: auto",
    ]
    return parsed(sip("\n".join(lines), body))


def test_a_plain_invite_passes() -> None:
    sdp = "v=0\r\n"
    assert check_request(request(extra=("Content-Type: application/sdp",), body=sdp)) is None
    assert check_request(request("ACK")) is None


@pytest.mark.parametrize(("method", "status"), [("SUBSCRIBE", 405), ("FROBNICATE", 501)])
def test_methods(method: str, status: int) -> None:
    response = check_request(request(method), to_tag="t")
    assert response is not None
    assert response.status == status
    assert (
        response.headers.get("Allow") == "ACK, BYE, CANCEL, INFO, INVITE, OPTIONS, REGISTER, UPDATE"
    )
    assert response.to.tag == "t"


def test_require_and_proxy_require() -> None:
    response = check_request(request(extra=("Require: 100rel, timer",)))
    assert response is not None
    assert response.status == 420
    assert response.headers.get_all("Unsupported") == ["100rel", "timer"]
    policy = UasPolicy(supported=frozenset({"100rel", "timer"}))
    assert check_request(request(extra=("Require: 100rel, timer",)), policy) is None
    assert check_request(request(extra=("Proxy-Require: foo",))) is None


def test_body_type_and_encoding() -> None:
    response = check_request(request(extra=("Content-Type: text/html",), body="<p>"))
    assert response is not None
    assert response.status == 415
    assert response.headers.get("Accept") == "application/dtmf-relay, application/sdp"
    gzip = request(extra=("Content-Type: application/sdp", "Content-Encoding: gzip"), body="x")
    response = check_request(gzip)
    assert response is not None
    assert (response.status, response.headers.get("Accept-Encoding")) == (415, "identity")
    no_type = request(body="x")
    response = check_request(no_type)
    assert response is not None
    assert response.status == 415


def test_max_forwards_zero() -> None:
    hop = request(extra=()).headers
    message = request()
    message.headers.set("Max-Forwards", "0")
    response = check_request(message)
    assert response is not None
    assert response.status == 483
    assert check_request(message, UasPolicy(forwards=False)) is None
    assert hop.get("Max-Forwards") == "70"


def test_accept_without_sdp_is_406() -> None:
    response = check_request(request(extra=("Accept: text/plain",)))
    assert response is not None
    assert response.status == 406
    assert check_request(request(extra=("Accept: application/*",))) is None
    assert check_request(request(extra=("Accept: text/plain, application/sdp;level=1",))) is None


# ---- RFC 4475 §3.3 -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("unkscm", 416),  # §3.3.2 unknown Request-URI scheme
        ("novelsc", 416),  # §3.3.3 known but atypical scheme
        ("bext01", 420),  # §3.3.5 Require
        ("invut", 415),  # §3.3.6 unknown Content-Type
        ("sdp01", 406),  # §3.3.15 unacceptable Accept
        ("esc02", 501),  # §3.1.1.5 RE%47IST%45R is not REGISTER
        ("intmeth", 501),  # §3.1.1.2 an unknown method
    ],
)
def test_rfc4475_application_layer(name: str, status: int) -> None:
    response = check_request(parsed(torture(name)))
    assert response is not None
    assert response.status == status


def test_rfc4475_bext01_lists_only_require() -> None:
    response = check_request(parsed(torture("bext01")))
    assert response is not None
    assert response.headers.get_all("Unsupported") == [
        "nothingSupportsThis",
        "nothingSupportsThisEither",
    ]


def test_rfc4475_zeromf_options_is_answered() -> None:
    assert check_request(parsed(torture("zeromf"))) is None
