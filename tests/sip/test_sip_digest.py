"""Digest authentication: RFC test vectors, challenges, verification outcomes, replay, clients."""

from __future__ import annotations

import itertools

import pytest
from sipfixtures import sip, torture

from baton.switch.sip.digest import (
    HA1,
    AuthOutcome,
    Challenge,
    DigestAuthenticator,
    DigestClient,
    Password,
    Secret,
    build_authorization,
    compute_ha1,
    parse_challenge,
    parse_credentials,
)
from baton.switch.sip.errors import SipParseError
from baton.switch.sip.message import Request, Response, parse_message

REALM = "baton"
USERS: dict[str, Secret] = {
    "alice": Password("alice-secret"),
    "bob": HA1(
        md5=compute_ha1("bob", REALM, "bob-secret", "MD5"),
        sha256=compute_ha1("bob", REALM, "bob-secret", "SHA-256"),
    ),
    "carol": HA1(md5=compute_ha1("carol", REALM, "carol-secret", "MD5")),
}

REGISTER = sip(
    """
    REGISTER sip:127.0.0.1 SIP/2.0
    Via: SIP/2.0/UDP 127.0.0.1:5064;branch=z9hG4bKreg1;rport
    Max-Forwards: 70
    To: <sip:alice@127.0.0.1>
    From: <sip:alice@127.0.0.1>;tag=abc
    Call-ID: reg-1
    CSeq: 1 REGISTER
    Contact: <sip:alice-0x55aa@127.0.0.1:5064>
    Content-Length: 0
    """
)


def register() -> Request:
    message = parse_message(REGISTER)
    assert isinstance(message, Request)
    return message


def counter_bytes() -> object:
    counter = itertools.count()
    return lambda n: next(counter).to_bytes(n, "big")


def authenticator(**kwargs: object) -> DigestAuthenticator:
    return DigestAuthenticator(REALM, b"k" * 32, **kwargs)  # type: ignore[arg-type]


def answer(
    challenge: Challenge, user: str = "alice", password: str = "alice-secret", nc: int = 1
) -> str:
    return build_authorization(challenge, username=user, password=password, method="REGISTER",
                               uri="sip:127.0.0.1", nc=nc, cnonce="c0ffee")  # fmt: skip


# ---- RFC test vectors ----------------------------------------------------------------------


def test_rfc2617_example() -> None:
    challenge = Challenge("testrealm@host.com", "dcd98b7102dd2f0e8b11d0f600bfb0c093",
                          opaque="5ccc069c403ebaf9f0171e9517f40e41", qop=("auth",))  # fmt: skip
    header = build_authorization(challenge, username="Mufasa", password="Circle Of Life",
                                 method="GET", uri="/dir/index.html", cnonce="0a4f113b")  # fmt: skip
    assert parse_credentials(header).response == "6629fae49393a05397450978507c4ef1"


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_examples(algorithm: str, expected: str) -> None:
    challenge = Challenge(
        "http-auth@example.org",
        "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
        algorithm,
        "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS",
    )
    header = build_authorization(challenge, username="Mufasa", password="Circle of Life",
                                 method="GET", uri="/dir/index.html",
                                 cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ")  # fmt: skip
    credentials = parse_credentials(header)
    assert credentials.response == expected
    assert credentials.nc == "00000001"
    assert credentials.opaque == challenge.opaque


# ---- header syntax -------------------------------------------------------------------------


def test_challenge_round_trip() -> None:
    challenge = Challenge(REALM, "n1", "SHA-256", "op", ("auth",), stale=True)
    value = challenge.header_value()
    assert (
        value
        == 'Digest realm="baton", nonce="n1", opaque="op", stale=true, algorithm=SHA-256, qop="auth"'
    )
    assert parse_challenge(value) == challenge


def test_parse_challenge_variants() -> None:
    parsed = parse_challenge('digest realm="a, b",nonce="x" , qop="auth,auth-int"')
    assert parsed.realm == "a, b"
    assert parsed.algorithm == "MD5"
    assert parsed.qop == ("auth", "auth-int")
    with pytest.raises(SipParseError, match="scheme"):
        parse_challenge('Basic realm="x"')
    with pytest.raises(SipParseError, match="required"):
        parse_challenge('Digest realm="x"')


@pytest.mark.parametrize(
    "value",
    [
        'Digest username="a"',
        'Digest username="a", realm="r", nonce="n", uri="u", response="x", qop=auth, nc=1, cnonce="c"',
        'Digest username="a", realm="r", nonce="n", uri="u", response="x", qop=auth, nc=00000001',
        'Digest username="a", realm="r", nonce="n", uri="u", response="x", qop=weird',
        'Digest username="a", username="b", realm="r", nonce="n", uri="u", response="x"',
        'Digest username="a" realm="r"',
        'Digest username=, realm="r"',
        'Digest username="unterminated',
        "NoOneKnowsThisScheme opaque-data=here",
        "",
    ],
)
def test_malformed_credentials(value: str) -> None:
    with pytest.raises(SipParseError):
        parse_credentials(value)


# ---- the authenticator ---------------------------------------------------------------------


def test_challenges_offer_each_algorithm_with_one_nonce() -> None:
    auth = authenticator()
    challenges = auth.challenges(now=10.0)
    assert [c.algorithm for c in challenges] == ["MD5", "SHA-256"]  # interop first
    preferred = authenticator(algorithms=("SHA-256", "MD5")).challenges(now=10.0)
    assert [c.algorithm for c in preferred] == ["SHA-256", "MD5"]
    assert len({c.nonce for c in challenges}) == 1
    assert all(c.opaque == auth.opaque and c.qop == ("auth",) for c in challenges)
    assert auth.challenges(now=10.0)[0].nonce != challenges[0].nonce


def test_challenge_response_401_and_407() -> None:
    auth = authenticator()
    response = auth.challenge(register(), now=1.0, to_tag="t")
    assert (response.status, response.reason) == (401, "Unauthorized")
    assert len(response.headers.get_all("WWW-Authenticate")) == 2
    assert response.to.tag == "t"
    proxy = auth.challenge(register(), now=1.0, proxy=True, stale=True)
    assert proxy.status == 407
    assert all("stale=true" in v for v in proxy.headers.get_all("Proxy-Authenticate"))


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
@pytest.mark.parametrize("user", ["alice", "bob"])
def test_right_password_is_ok(algorithm: str, user: str) -> None:
    auth = authenticator()
    challenge = next(c for c in auth.challenges(now=0.0) if c.algorithm == algorithm)
    result = auth.verify(answer(challenge, user, f"{user}-secret"), method="REGISTER", now=1.0,
                         lookup=USERS.get)  # fmt: skip
    assert result.outcome is AuthOutcome.OK
    assert result.ok
    assert result.username == user


def test_sess_algorithm_and_auth_int() -> None:
    auth = authenticator()
    challenge = auth.challenges(now=0.0)[0]
    sess = Challenge(challenge.realm, challenge.nonce, "MD5-sess", challenge.opaque, ("auth-int",))
    header = build_authorization(sess, username="alice", password="alice-secret",
                                 method="INVITE", uri="sip:x", body=b"v=0\r\n")  # fmt: skip
    assert "qop=auth-int" in header
    result = auth.verify(header, method="INVITE", now=1.0, lookup=USERS.get, body=b"v=0\r\n")
    assert result.ok
    tampered = auth.verify(header, method="INVITE", now=1.0, lookup=USERS.get, body=b"v=1\r\n")
    assert tampered.outcome is AuthOutcome.WRONG_CREDENTIALS


@pytest.mark.parametrize(
    ("user", "password"), [("alice", "wrong"), ("mallory", "x"), ("carol", "carol-secret")]
)
def test_wrong_password_unknown_user_or_missing_ha1(user: str, password: str) -> None:
    auth = authenticator()
    challenge = auth.challenges(now=0.0)[1]  # SHA-256: carol has only an MD5 HA1
    result = auth.verify(answer(challenge, user, password), method="REGISTER", now=1.0,
                         lookup=USERS.get)  # fmt: skip
    assert result.outcome is AuthOutcome.WRONG_CREDENTIALS


def test_method_is_part_of_the_digest() -> None:
    auth = authenticator()
    header = answer(auth.challenges(now=0.0)[0])
    assert auth.verify(header, method="INVITE", now=1.0, lookup=USERS.get).outcome is (
        AuthOutcome.WRONG_CREDENTIALS
    )


def test_expired_nonce_with_right_digest_is_stale() -> None:
    auth = authenticator(nonce_lifetime=60.0)
    header = answer(auth.challenges(now=0.0)[0])
    assert auth.verify(header, method="REGISTER", now=60.0, lookup=USERS.get).ok
    late = answer(auth.challenges(now=0.0)[0])
    result = auth.verify(late, method="REGISTER", now=60.5, lookup=USERS.get)
    assert result.outcome is AuthOutcome.STALE


def test_expired_nonce_with_wrong_digest_is_wrong() -> None:
    auth = authenticator(nonce_lifetime=60.0)
    header = answer(auth.challenges(now=0.0)[0], password="nope")
    assert auth.verify(header, method="REGISTER", now=100.0, lookup=USERS.get).outcome is (
        AuthOutcome.WRONG_CREDENTIALS
    )


def test_foreign_nonce_is_stale_so_the_client_retries() -> None:
    other = DigestAuthenticator(REALM, b"another-secret")
    other_challenge = other.challenges(now=0.0)[0]
    forged = Challenge(REALM, other_challenge.nonce, "MD5", authenticator().opaque)
    result = authenticator().verify(answer(forged), method="REGISTER", now=1.0, lookup=USERS.get)
    assert result.outcome is AuthOutcome.STALE
    garbage = Challenge(REALM, "not-base64-!!", "MD5")
    result = authenticator().verify(answer(garbage), method="REGISTER", now=1.0, lookup=USERS.get)
    assert result.outcome is AuthOutcome.STALE


def test_nonce_from_the_future_is_stale() -> None:
    auth = authenticator()
    header = answer(auth.challenges(now=100.0)[0])
    assert auth.verify(header, method="REGISTER", now=50.0, lookup=USERS.get).outcome is (
        AuthOutcome.STALE
    )


def test_replay_protection_needs_an_increasing_nonce_count() -> None:
    auth = authenticator()
    challenge = auth.challenges(now=0.0)[0]
    first = answer(challenge, nc=1)
    assert auth.verify(first, method="REGISTER", now=1.0, lookup=USERS.get).ok
    replay = auth.verify(first, method="REGISTER", now=2.0, lookup=USERS.get)
    assert replay.outcome is AuthOutcome.STALE
    assert "nonce count" in replay.reason
    assert auth.verify(answer(challenge, nc=2), method="REGISTER", now=3.0, lookup=USERS.get).ok
    assert auth.verify(answer(challenge, nc=5), method="REGISTER", now=4.0, lookup=USERS.get).ok
    assert not auth.verify(answer(challenge, nc=4), method="REGISTER", now=5.0, lookup=USERS.get).ok


def test_replay_table_forgets_expired_nonces_and_is_bounded() -> None:
    auth = authenticator(nonce_lifetime=10.0, max_tracked_nonces=3)
    for t in range(5):
        assert auth.verify(answer(auth.challenges(now=float(t))[0]), method="REGISTER",
                           now=float(t), lookup=USERS.get).ok  # fmt: skip
    assert len(auth._seen) == 3
    auth.verify(answer(auth.challenges(now=100.0)[0]), method="REGISTER", now=100.0,
                lookup=USERS.get)  # fmt: skip
    assert len(auth._seen) == 1


def test_rfc2069_response_without_qop_is_single_use() -> None:
    auth = authenticator()
    base = auth.challenges(now=0.0)[0]
    legacy = Challenge(REALM, base.nonce, "MD5", base.opaque, qop=())
    header = answer(legacy)
    assert "qop" not in header
    assert auth.verify(header, method="REGISTER", now=1.0, lookup=USERS.get).ok
    assert auth.verify(header, method="REGISTER", now=2.0, lookup=USERS.get).outcome is (
        AuthOutcome.STALE
    )


@pytest.mark.parametrize(
    ("mutate", "outcome"),
    [
        (lambda h: h.replace('realm="baton"', 'realm="other"'), AuthOutcome.MISSING),
        (lambda h: h.replace("algorithm=MD5", "algorithm=SHA-512"), AuthOutcome.MALFORMED),
        (lambda h: h + ", userhash=true", AuthOutcome.MALFORMED),
        (lambda h: h.replace("opaque=", 'opaque="x", old='), AuthOutcome.MALFORMED),
        (lambda h: h.replace("Digest", "Basic"), AuthOutcome.MALFORMED),
    ],
)
def test_unusable_credentials(mutate: object, outcome: AuthOutcome) -> None:
    auth = authenticator()
    header = mutate(answer(auth.challenges(now=0.0)[0]))  # type: ignore[operator]
    assert auth.verify(header, method="REGISTER", now=1.0, lookup=USERS.get).outcome is outcome


def test_verify_request_picks_our_realm() -> None:
    auth = authenticator()
    request = register()
    assert auth.verify_request(request, now=1.0, lookup=USERS.get).outcome is AuthOutcome.MISSING
    other = Challenge("elsewhere", "n", "MD5")
    request.headers.add("Authorization", answer(other))
    request.headers.add("Authorization", answer(auth.challenges(now=0.0)[0]))
    assert auth.verify_request(request, now=1.0, lookup=USERS.get).ok
    proxy = auth.verify_request(request, now=1.0, lookup=USERS.get, proxy=True)
    assert proxy.outcome is AuthOutcome.MISSING


def test_unknown_scheme_regaut01_is_malformed() -> None:
    message = parse_message(torture("regaut01"))
    assert isinstance(message, Request)
    result = authenticator().verify_request(message, now=0.0, lookup=USERS.get)
    assert result.outcome is AuthOutcome.MALFORMED


def test_deterministic_nonces_with_injected_randomness() -> None:
    rnd = counter_bytes()
    a = DigestAuthenticator(REALM, b"s", random_bytes=rnd)  # type: ignore[arg-type]
    assert a.new_nonce(1.0) != a.new_nonce(1.0)
    with pytest.raises(ValueError, match="unsupported"):
        DigestAuthenticator(REALM, b"s", algorithms=("SHA-1",))


# ---- the client ----------------------------------------------------------------------------


def test_client_answers_the_first_supported_challenge_and_counts() -> None:
    auth = authenticator()
    request = register()
    challenge_response = auth.challenge(request, now=0.0)
    client = DigestClient("alice", "alice-secret")
    signed = client.authorize(request, challenge_response)
    credentials = parse_credentials(signed.headers.get("Authorization") or "")
    assert credentials.algorithm == "MD5"
    assert credentials.nc == "00000001"
    assert credentials.uri == "sip:127.0.0.1"
    assert auth.verify_request(signed, now=1.0, lookup=USERS.get).ok
    again = client.authorize(signed, challenge_response)
    assert len(again.headers.get_all("Authorization")) == 1
    assert parse_credentials(again.headers.get("Authorization") or "").nc == "00000002"
    assert auth.verify_request(again, now=2.0, lookup=USERS.get).ok


def test_client_proxy_challenge_and_unusable_challenges() -> None:
    auth = authenticator()
    request = register()
    proxy = auth.challenge(request, now=0.0, proxy=True)
    signed = DigestClient("alice", "alice-secret").authorize(request, proxy)
    assert "Proxy-Authorization" in signed.headers
    assert auth.verify_request(signed, now=1.0, lookup=USERS.get, proxy=True).ok
    bad = Response(401, "Unauthorized")
    bad.headers.add("WWW-Authenticate", 'Digest realm="x", nonce="y", algorithm=SHA-512')
    bad.headers.add("WWW-Authenticate", "Bearer token")
    with pytest.raises(SipParseError, match="no usable Digest challenge"):
        DigestClient("a", "b").authorize(request, bad)


@pytest.mark.parametrize(
    ("request_uri", "ok"),
    [
        ("sip:127.0.0.1", True),  # the same text
        ("sip:alice@127.0.0.1", True),  # the digest uri without the user part (SIPp 3.6)
        ("sip:127.0.0.1:5070", False),  # another port
        ("sip:192.0.2.1", False),  # another host
        ("sips:127.0.0.1", False),  # another scheme
    ],
)
def test_the_digest_uri_must_name_the_request_uri(request_uri: str, ok: bool) -> None:
    auth = authenticator()
    header = answer(auth.challenges(now=0.0)[0])  # computed for uri="sip:127.0.0.1"
    result = auth.verify(header, method="REGISTER", now=1.0, lookup=USERS.get,
                         request_uri=request_uri)  # fmt: skip
    assert result.outcome is (AuthOutcome.OK if ok else AuthOutcome.BAD_REQUEST)


def test_credentials_that_are_not_utf8_are_a_bad_request() -> None:
    header = 'Digest username="alice", realm="baton", nonce="n", uri="sip:\udcff", response="0"'
    result = authenticator().verify(header, method="INVITE", now=1.0, lookup=USERS.get)
    assert result.outcome is AuthOutcome.BAD_REQUEST


def test_a_nonce_is_only_valid_from_the_address_it_was_sent_to() -> None:
    auth = authenticator()
    challenge = auth.challenges(now=0.0, source="192.0.2.7")[0]
    header = answer(challenge)
    elsewhere = auth.verify(header, method="REGISTER", now=1.0, lookup=USERS.get,
                            source="198.51.100.1")  # fmt: skip
    assert elsewhere.outcome is AuthOutcome.STALE
    wrong = auth.verify(answer(challenge, password="guess"), method="REGISTER", now=1.0,
                        lookup=USERS.get, source="198.51.100.1")  # fmt: skip
    assert wrong.outcome is AuthOutcome.STALE  # not counted as a wrong password from there
    here = auth.verify(header, method="REGISTER", now=1.0, lookup=USERS.get, source="192.0.2.7")
    assert here.ok
