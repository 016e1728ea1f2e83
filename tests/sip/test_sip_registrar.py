"""The registrar: digest-authenticated REGISTER, bindings as sent, expiry, ordering, static
contacts, throttling — and the RFC 4475 REGISTER messages."""

from __future__ import annotations

import pytest
from sipfixtures import sip, torture

from baton.switch.sip.digest import DigestAuthenticator, DigestClient, Password, Secret
from baton.switch.sip.errors import LocalProtocolError, SipParseError
from baton.switch.sip.message import Request, Response, parse_message
from baton.switch.sip.registrar import AuthThrottle, Registrar
from baton.switch.sip.uri import SipUri

USERS: dict[str, Secret] = {"alice": Password("alice-secret"), "bob": Password("bob-secret")}
BARESIP_CONTACT = "<sip:alice-0x55d0c8a0@127.0.0.1:5064;transport=udp>"


def register(
    *,
    user: str = "alice",
    contacts: tuple[str, ...] = (BARESIP_CONTACT,),
    expires: int | None = None,
    call_id: str = "reg-call-1",
    cseq: int = 1,
    extra: tuple[str, ...] = (),
) -> Request:
    lines = [
        "REGISTER sip:127.0.0.1:5060 SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:5064;branch=z9hG4bKr{cseq};rport",
        "Max-Forwards: 70",
        f"To: <sip:{user}@127.0.0.1>",
        f"From: <sip:{user}@127.0.0.1>;tag=f{cseq}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        *(f"Contact: {c}" for c in contacts),
        *([f"Expires: {expires}"] if expires is not None else []),
        *extra,
        "Content-Length: 0",
    ]
    message = parse_message(sip("\n".join(lines)))
    assert isinstance(message, Request)
    return message


def open_registrar(**kwargs: object) -> Registrar:
    return Registrar(authenticator=None, lookup=USERS.get, **kwargs)  # type: ignore[arg-type]


class Phone:
    """Registers through the digest dance, like a real phone."""

    def __init__(
        self, registrar: Registrar, user: str = "alice", password: str = "alice-secret"
    ) -> None:
        self.registrar = registrar
        self.client = DigestClient(user, password)
        self.user = user
        self.cseq = 0

    def register(self, now: float, **kwargs: object) -> Response:
        self.cseq += 1
        request = register(user=self.user, cseq=self.cseq, **kwargs)  # type: ignore[arg-type]
        response = self.registrar.process(request, source="127.0.0.1", now=now)
        if response.status == 401:
            self.cseq += 1
            retry = register(user=self.user, cseq=self.cseq, **kwargs)  # type: ignore[arg-type]
            retry = self.client.authorize(retry, response)
            response = self.registrar.process(retry, source="127.0.0.1", now=now)
        return response


def auth_registrar(**kwargs: object) -> Registrar:
    authenticator = DigestAuthenticator("baton", b"secret-key", algorithms=("MD5",))
    return Registrar(authenticator=authenticator, lookup=USERS.get, **kwargs)  # type: ignore[arg-type]


# ---- bindings ------------------------------------------------------------------------------


def test_register_stores_the_contact_exactly_as_sent() -> None:
    registrar = open_registrar()
    response = registrar.process(register(), source="127.0.0.1", now=1000.0)
    assert response.status == 200
    (binding,) = registrar.contacts("alice", now=1000.0)
    assert binding.contact_text == BARESIP_CONTACT
    assert str(binding.uri) == "sip:alice-0x55d0c8a0@127.0.0.1:5064;transport=udp"
    assert binding.aor == "alice"
    assert binding.expires_in(1000.0) == 3600
    assert binding.source == "127.0.0.1"
    assert response.headers.get_all("Contact") == [
        "<sip:alice-0x55d0c8a0@127.0.0.1:5064;transport=udp>;expires=3600"
    ]
    assert response.to.tag is not None


def test_a_binding_remembers_the_phones_user_agent_and_transport() -> None:
    registrar = open_registrar()
    request = register(extra=("User-Agent: baresip v1.0.0 (x86_64/linux)",))
    assert registrar.process(request, source="127.0.0.1", now=5.0).status == 200
    (binding,) = registrar.contacts("alice", now=5.0)
    assert (binding.user_agent, binding.transport) == ("baresip v1.0.0 (x86_64/linux)", "UDP")
    assert binding.registered_at == 5.0


def test_expiry_from_contact_param_then_header_then_default() -> None:
    registrar = open_registrar(default_expires=600)
    registrar.process(register(contacts=("<sip:a@10.0.0.1>;expires=120",), expires=300),
                      source="s", now=0.0)  # fmt: skip
    registrar.process(
        register(contacts=("<sip:a@10.0.0.2>",), expires=300, cseq=2), source="s", now=0.0
    )
    registrar.process(register(contacts=("<sip:a@10.0.0.3>",), cseq=3), source="s", now=0.0)
    lifetimes = {str(b.uri): b.expires_in(0.0) for b in registrar.contacts("alice", 0.0)}
    assert lifetimes == {"sip:a@10.0.0.1": 120, "sip:a@10.0.0.2": 300, "sip:a@10.0.0.3": 600}


def test_bindings_expire_in_time() -> None:
    registrar = open_registrar()
    registrar.process(register(expires=60), source="s", now=0.0)
    assert len(registrar.contacts("alice", 59.9)) == 1
    assert registrar.contacts("alice", 60.0) == []
    (gone,) = registrar.expire(60.0)
    assert gone.aor == "alice"
    assert registrar.aors() == []


def test_interval_too_brief_and_too_long() -> None:
    registrar = open_registrar(min_expires=60, max_expires=3600)
    brief = registrar.process(register(expires=30), source="s", now=0.0)
    assert (brief.status, brief.headers.get("Min-Expires")) == (423, "60")
    assert registrar.contacts("alice", 0.0) == []
    long = registrar.process(register(expires=86400, cseq=2), source="s", now=0.0)
    assert long.status == 200
    assert registrar.contacts("alice", 0.0)[0].expires_in(0.0) == 3600


def test_several_contacts_ordered_by_q() -> None:
    registrar = open_registrar()
    registrar.process(register(contacts=("<sip:desk@10.0.0.1>;q=0.5", "<sip:mobile@10.0.0.2>;q=0.9")),
                      source="s", now=0.0)  # fmt: skip
    registrar.process(register(contacts=("<sip:soft@10.0.0.3>",), call_id="other", cseq=1),
                      source="s", now=1.0)  # fmt: skip
    assert [str(b.uri) for b in registrar.contacts("alice", 2.0)] == [
        "sip:soft@10.0.0.3", "sip:mobile@10.0.0.2", "sip:desk@10.0.0.1",
    ]  # fmt: skip
    response = registrar.process(register(contacts=(), cseq=2), source="s", now=2.0)  # a query
    assert len(response.headers.get_all("Contact")) == 3


def test_refresh_updates_the_same_binding_by_uri_equivalence() -> None:
    registrar = open_registrar()
    registrar.process(
        register(contacts=("<sip:alice@10.0.0.1;transport=UDP>",)), source="s", now=0.0
    )
    registrar.process(register(contacts=("<sip:alice@10.0.0.1;transport=udp>",), cseq=2, expires=900),
                      source="s", now=100.0)  # fmt: skip
    (binding,) = registrar.contacts("alice", 100.0)
    assert binding.expires_in(100.0) == 900
    assert binding.cseq == 2


def test_unregister_one_contact() -> None:
    registrar = open_registrar()
    registrar.process(
        register(contacts=("<sip:a@10.0.0.1>", "<sip:a@10.0.0.2>")), source="s", now=0.0
    )
    response = registrar.process(register(contacts=("<sip:a@10.0.0.1>;expires=0",), cseq=2),
                                 source="s", now=1.0)  # fmt: skip
    assert response.status == 200
    assert [str(b.uri) for b in registrar.contacts("alice", 1.0)] == ["sip:a@10.0.0.2"]
    assert response.headers.get_all("Contact") == ["<sip:a@10.0.0.2>;expires=3599"]


def test_star_removes_everything_but_needs_expires_zero() -> None:
    registrar = open_registrar()
    registrar.process(
        register(contacts=("<sip:a@10.0.0.1>", "<sip:a@10.0.0.2>")), source="s", now=0.0
    )
    bad = registrar.process(register(contacts=("*",), cseq=2), source="s", now=1.0)
    assert (bad.status, bad.reason) == (400, "Contact * Needs Expires 0")
    assert len(registrar.contacts("alice", 1.0)) == 2
    ok = registrar.process(register(contacts=("*",), expires=0, cseq=3), source="s", now=1.0)
    assert ok.status == 200
    assert registrar.contacts("alice", 1.0) == []
    mixed = register(contacts=("*",), expires=0, cseq=4)
    mixed.headers.add("Contact", "<sip:a@10.0.0.1>")  # the parser refuses this; build it
    assert registrar.process(mixed, source="s", now=1.0).status == 400


def test_out_of_order_cseq_is_500_and_changes_nothing() -> None:
    registrar = open_registrar()
    registrar.process(register(contacts=("<sip:a@10.0.0.1>",), cseq=5), source="s", now=0.0)
    stale = register(contacts=("<sip:a@10.0.0.1>;expires=0", "<sip:a@10.0.0.9>"), cseq=5)
    response = registrar.process(stale, source="s", now=1.0)
    assert response.status == 500
    assert [str(b.uri) for b in registrar.contacts("alice", 1.0)] == ["sip:a@10.0.0.1"]
    star = registrar.process(register(contacts=("*",), expires=0, cseq=4), source="s", now=1.0)
    assert star.status == 500
    other_call = register(contacts=("<sip:a@10.0.0.1>",), call_id="another", cseq=1)
    assert registrar.process(other_call, source="s", now=2.0).status == 200  # new Call-ID: fine


@pytest.mark.parametrize(
    ("contact", "reason"),
    [("<sip:a@10.0.0.1>;expires=soon", "Invalid Contact Expires"),
     ("<sip:a@10.0.0.1>;q=2", "Invalid Contact q"),
     ("<sip:a@10.0.0.1>;q=high", "Invalid Contact q"),
     ("<tel:+123>", "Contact Must Be A SIP URI")],
)  # fmt: skip
def test_bad_contacts(contact: str, reason: str) -> None:
    response = open_registrar().process(register(contacts=(contact,)), source="s", now=0.0)
    assert (response.status, response.reason) == (400, reason)


def test_require_is_refused_with_420() -> None:
    response = open_registrar().process(
        register(extra=("Require: gruu, path",)), source="s", now=0.0
    )
    assert response.status == 420
    assert response.headers.get_all("Unsupported") == ["gruu", "path"]
    allowed = open_registrar(supported=frozenset({"path"}))
    assert allowed.process(register(extra=("Require: path",)), source="s", now=0.0).status == 200


def test_only_register() -> None:
    options = register()
    options.method = "OPTIONS"
    with pytest.raises(LocalProtocolError):
        open_registrar().process(options, source="s", now=0.0)


# ---- static contacts -----------------------------------------------------------------------


def test_static_contacts_never_expire_and_survive_register() -> None:
    registrar = open_registrar()
    static = registrar.add_static("bob", "sip:bob@127.0.0.1:5070")
    assert static.static
    assert registrar.contacts("bob", 1e9) == [static]
    registrar.process(register(user="bob", contacts=("*",), expires=0), source="s", now=0.0)
    assert registrar.contacts("bob", 0.0) == [static]
    registrar.process(
        register(user="bob", contacts=("<sip:bob@10.0.0.5>",), cseq=2), source="s", now=0.0
    )
    assert len(registrar.contacts("bob", 0.0)) == 2
    ok = registrar.process(register(user="bob", contacts=(), cseq=3), source="s", now=0.0)
    assert ok.headers.get_all("Contact") == ["<sip:bob@10.0.0.5>;expires=3600"]
    assert registrar.expire(1e9) != []
    assert registrar.contacts("bob", 1e9) == [static]
    assert registrar.remove_static("bob", "<sip:bob@127.0.0.1:5070>")
    assert not registrar.remove_static("bob", "<sip:bob@127.0.0.1:5070>")
    assert registrar.aors() == []
    with pytest.raises(SipParseError):
        registrar.add_static("x", "not a uri")


# ---- authentication ------------------------------------------------------------------------


def test_digest_registration() -> None:
    registrar = auth_registrar()
    challenge = registrar.process(register(), source="127.0.0.1", now=0.0)
    assert challenge.status == 401
    assert "WWW-Authenticate" in challenge.headers
    assert registrar.contacts("alice", 0.0) == []
    response = Phone(registrar).register(now=0.0)
    assert response.status == 200
    assert len(registrar.contacts("alice", 0.0)) == 1


def test_wrong_password_is_403() -> None:
    registrar = auth_registrar()
    response = Phone(registrar, password="nope").register(now=0.0)
    assert (response.status, response.reason) == (403, "Wrong Credentials")
    assert registrar.contacts("alice", 0.0) == []


def test_unknown_user_is_403() -> None:
    response = Phone(auth_registrar(), user="mallory", password="x").register(now=0.0)
    assert response.status == 403


def test_user_may_register_only_its_own_aor() -> None:
    registrar = auth_registrar()
    phone = Phone(registrar, user="alice")
    phone.user = "bob"  # alice's credentials, bob's AOR
    phone.client = DigestClient("alice", "alice-secret")
    response = phone.register(now=0.0)
    assert (response.status, response.reason) == (403, "Not Your AOR")


def test_stale_nonce_is_rechallenged_with_stale_true() -> None:
    authenticator = DigestAuthenticator("baton", b"k", algorithms=("MD5",), nonce_lifetime=30.0)
    registrar = Registrar(authenticator=authenticator, lookup=USERS.get)
    challenge = registrar.process(register(), source="s", now=0.0)
    late = DigestClient("alice", "alice-secret").authorize(register(cseq=2), challenge)
    response = registrar.process(late, source="s", now=100.0)
    assert response.status == 401
    assert "stale=true" in (response.headers.get("WWW-Authenticate") or "")


def test_throttle_blocks_a_source_and_user_pair_after_repeated_failures() -> None:
    registrar = auth_registrar(throttle=AuthThrottle(max_failures=3, window=60.0, block=120.0))
    attacker = Phone(registrar, password="guess")
    for _ in range(3):
        assert attacker.register(now=10.0).status == 403
    alice = Phone(registrar)
    blocked = alice.register(now=11.0)  # even the right password, from there
    assert (blocked.status, blocked.reason) == (403, "Too Many Failed Attempts")
    assert blocked.headers.get("Retry-After") == "119"
    # Another user behind the same address is not blocked, nor alice from elsewhere.
    assert Phone(registrar, "bob", "bob-secret").register(now=11.0).status == 200
    challenge = registrar.process(register(), source="192.0.2.77", now=11.0)
    answer = DigestClient("alice", "alice-secret").authorize(register(cseq=3), challenge)
    assert registrar.process(answer, source="192.0.2.77", now=11.0).status == 200
    assert alice.register(now=131.0).status == 200  # the block is over


def test_failures_on_a_nonce_sent_elsewhere_do_not_count() -> None:
    """A stranger forging a phone's source address never sees the challenges sent there: it
    answers a nonce it got for itself, which is not valid from the phone's address."""
    registrar = auth_registrar(throttle=AuthThrottle(max_failures=2, window=60.0, block=120.0))
    own = registrar.process(register(), source="198.51.100.9", now=1.0)  # the forger's nonce
    for cseq in range(2, 6):
        forged = DigestClient("alice", "guess").authorize(register(cseq=cseq), own)
        response = registrar.process(forged, source="127.0.0.1", now=2.0)  # as the phone
        assert response.status == 401  # re-challenged (stale), no failure counted
    assert Phone(registrar).register(now=3.0).status == 200


def test_throttle_policy() -> None:
    throttle = AuthThrottle(max_failures=2, window=10.0, block=30.0, max_sources=2)
    throttle.record_failure("a", 0.0)
    throttle.record_failure("a", 11.0)  # the first fell out of the window
    assert throttle.allowed("a", 11.0)
    throttle.record_failure("a", 12.0)
    assert not throttle.allowed("a", 12.0)
    assert throttle.retry_after("a", 12.0) == 30
    assert throttle.allowed("a", 42.0)
    assert throttle.retry_after("a", 42.0) == 0
    throttle.record_failure("b", 0.0)
    throttle.record_success("b")
    throttle.record_failure("b", 1.0)
    assert throttle.allowed("b", 1.0)
    for source in ("c", "d", "e"):
        throttle.record_failure(source, 0.0)
    assert len(throttle._failures) == 2


# ---- RFC 4475 REGISTER messages (§3.3) -----------------------------------------------------


def torture_request(name: str) -> Request:
    message = parse_message(torture(name))
    assert isinstance(message, Request)
    return message


def test_rfc4475_unksm2_non_sip_to_is_rejected() -> None:
    response = open_registrar().process(torture_request("unksm2"), source="s", now=0.0)
    assert (response.status, response.reason) == (400, "To Must Be A SIP URI")


def test_rfc4475_regaut01_unknown_scheme_is_challenged() -> None:
    message = torture_request("regaut01")
    registrar = Registrar(authenticator=DigestAuthenticator("baton", b"k"),
                          lookup=lambda user: USERS.get("alice"))  # fmt: skip
    assert registrar.process(message, source="s", now=0.0).status == 401


def test_rfc4475_cparam01_param_belongs_to_the_contact() -> None:
    registrar = Registrar(authenticator=None, lookup=USERS.get)
    assert registrar.process(torture_request("cparam01"), source="s", now=0.0).status == 200
    (binding,) = registrar.contacts("watson", 0.0)
    assert str(binding.uri) == "sip:+19725552222@gw1.example.net"
    assert "unknownparam" in binding.contact.params


def test_rfc4475_cparam02_param_belongs_to_the_uri() -> None:
    registrar = Registrar(authenticator=None, lookup=USERS.get)
    assert registrar.process(torture_request("cparam02"), source="s", now=0.0).status == 200
    (binding,) = registrar.contacts("watson", 0.0)
    assert str(binding.uri) == "sip:+19725552222@gw1.example.net;unknownparam"


def test_rfc4475_regescrt_escaped_headers_are_kept() -> None:
    registrar = Registrar(authenticator=None, lookup=USERS.get)
    response = registrar.process(torture_request("regescrt"), source="s", now=0.0)
    assert response.status == 200
    (binding,) = registrar.contacts("user", 0.0)
    assert isinstance(binding.uri, SipUri)
    assert binding.uri.headers == (("Route", "%3Csip:sip.example.com%3E"),)
    assert binding.contact_text == "<sip:user@example.com?Route=%3Csip:sip.example.com%3E>"


def test_rfc4475_escnull_registers_two_distinct_contacts() -> None:
    registrar = Registrar(authenticator=None, lookup=USERS.get)
    assert registrar.process(torture_request("escnull"), source="s", now=0.0).status == 200
    assert len(registrar.contacts("null-\x00-null", 0.0)) == 2


def test_rfc4475_dblreq_first_request_registers() -> None:
    registrar = Registrar(authenticator=None, lookup=USERS.get)
    assert registrar.process(torture_request("dblreq"), source="s", now=0.0).status == 200
    assert [str(b.uri) for b in registrar.contacts("j.user", 0.0)] == [
        "sip:j.user@host.example.com"
    ]


def test_flow_is_kept_on_the_binding_for_connection_reuse() -> None:
    registrar = open_registrar()
    flow = ("tcp", "127.0.0.1", 40123)  # what the adapter passes: the peer of the REGISTER
    registrar.process(register(), source="127.0.0.1", now=0.0, flow=flow)
    (binding,) = registrar.contacts("alice", 0.0)
    assert binding.flow == flow
