"""The ``[sip]`` table's validation and the B2BUA's pure decisions (:mod:`baton.switch.sip.b2bua`)."""

from __future__ import annotations

import pytest

from _rigs.sip import U
from baton.core.port import Cause, EndReason, PreemptionCause
from baton.switch.sip import SipConfig, SipConfigError, create_switch, parse_sip_config
from baton.switch.sip.b2bua import (
    cause_for_status,
    dtmf_from_info,
    hangup_reason,
    merge_causes,
    parse_resource_priority,
    resource_priority_for,
    status_for_cause,
)
from baton.switch.sip.config import DEFAULT_RESOURCE_PRIORITY
from baton.switch.sip.uri import parse_uri


def test_defaults() -> None:
    config = parse_sip_config({})
    assert config == SipConfig()
    assert config.digest_algorithms == ("MD5",)
    assert config.resource_priority["dsn.flash-override"] == 40
    assert config.resource_priority["ets.0"] == 40


def test_a_full_table() -> None:
    config = parse_sip_config(
        {
            "listen": ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"],
            "realm": "ops",
            "media_host": "127.0.0.1",
            "rtp_ports": "30000-30999",
            "rtp_timeout": 0,
            "session_expires": 600,
            "digest_algorithms": ["MD5", "SHA-256"],
            "register_expires": {"min": 30, "max": 600, "default": 300},
            "auth_failures": {"max_failures": 3, "window": 10, "block": 120},
            "resource_priority": {"esnet.0": "EMERGENCY", "dsn.flash": 31},
        }
    )
    assert config.rtp_ports == (30000, 31000)
    assert config.rtp_timeout is None
    assert (config.min_expires, config.max_expires, config.default_expires) == (30, 600, 300)
    assert (config.max_auth_failures, config.auth_block) == (3, 120.0)
    assert config.resource_priority == {"esnet.0": 50, "dsn.flash": 31}


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ({"listen": ["udp:127.0.0.1:5060", "sctp:1.2.3.4:5"]}, "sip.listen[1]:"),
        ({"listen": ["udp:pbx.example.com:5060"]}, "sip.listen[0]: 'pbx.example.com' is not an IP"),
        ({"listen": ["udp:0.0.0.0:5060"]}, "sip.listen[0]: listen on a specific address"),
        ({"rtp_ports": "30000"}, "sip.rtp_ports:"),
        ({"rtp_ports": [40000, 30000]}, "sip.rtp_ports:"),
        ({"session_expires": 60}, "sip.session_expires: must be 0 (off) or at least"),
        ({"digest_algorithms": ["SHA-512"]}, "sip.digest_algorithms:"),
        ({"resource_priority": {"dsn.flash": "HIGHEST"}}, "sip.resource_priority.dsn.flash:"),
        ({"resource_priority": {"flash": 1}}, "sip.resource_priority.flash: expected namespace"),
        ({"auth_failures": {"max_failures": 0}}, "sip.auth_failures.max_failures:"),
        ({"register_expires": {"min": 600, "max": 60}}, "sip.register_expires: need min"),
        ({"lisen": []}, "sip.lisen: unknown key"),
        ({"media_host": "localhost"}, "sip.media_host:"),
        # not a number of seconds: nan passed every comparison, inf never ran out
        ({"rtp_timeout": float("nan")}, "sip.rtp_timeout: expected seconds"),
        ({"rtp_timeout": float("inf")}, "sip.rtp_timeout: expected seconds"),
        ({"inbound_ring_timeout": float("nan")}, "sip.inbound_ring_timeout: expected seconds"),
        ({"nonce_lifetime": float("inf")}, "sip.nonce_lifetime: expected seconds"),
    ],
)
def test_bad_keys_are_named(table: dict[str, object], problem: str) -> None:
    with pytest.raises(SipConfigError) as info:
        parse_sip_config(table)
    assert any(p.startswith(problem) for p in info.value.problems), info.value.problems


def test_every_problem_is_listed_at_once() -> None:
    with pytest.raises(SipConfigError) as info:
        parse_sip_config({"realm": "", "rtp_timeout": -1, "min_se": "x"})
    assert [p.split(":")[0] for p in info.value.problems] == [
        "sip.realm", "sip.rtp_timeout", "sip.min_se",
    ]  # fmt: skip


def test_a_bad_static_contact_names_the_user() -> None:
    with pytest.raises(SipConfigError, match=r"users\[bob\]\.contact"):
        create_switch({}, [U("bob", contact="sip:bob@[bad")])


def test_set_users_adds_renumbers_and_removes_users_live() -> None:
    # Provisioning (docs/service.md): a removed user's registrations end; a bad user changes
    # nothing; a dry run only checks.
    alice, bob = U("alice", ("1001",)), U("bob", contact="sip:bob@127.0.0.1:5070")
    switch = create_switch({}, [alice, bob])
    assert len(switch.registered("bob")) == 1
    with pytest.raises(SipConfigError, match=r"users\[carol\]\.contact"):
        switch.set_users([alice, U("carol", contact="sip:carol@[bad")])
    switch.set_users([alice, U("carol", ("1003",))], dry_run=True)
    assert len(switch.registered("bob")) == 1 and switch._directory.secret_of("carol") is None
    switch.set_users([U("alice", ("2001",)), bob, U("carol", ("1003",))])
    assert len(switch.registered("bob")) == 1  # kept, not doubled
    assert switch._directory.aor_of(parse_uri("sip:2001@baton")) == "alice"
    assert switch._directory.aor_of(parse_uri("sip:1001@baton")) is None
    switch.set_users([U("alice", ("2001",)), U("carol", ("1003",))])
    assert switch.registered("bob") == []
    assert (
        switch._directory.secret_of("carol") is not None
        and switch._directory.secret_of("bob") is None
    )


def test_create_switch_binds_nothing_until_started() -> None:
    switch = create_switch({"listen": ["udp:127.0.0.1:0"]}, [U("alice", ("1001",))])
    assert switch.metrics()["registrations"] == 0
    assert switch.registered("alice") == []


@pytest.mark.parametrize(
    ("status", "cause"),
    [
        (486, Cause.BUSY), (600, Cause.BUSY), (480, Cause.NO_ANSWER), (408, Cause.NO_ANSWER),
        (603, Cause.REJECTED), (403, Cause.REJECTED), (404, Cause.UNREACHABLE),
        (503, Cause.UNREACHABLE), (604, Cause.UNREACHABLE), (500, Cause.FAILURE),
        (488, Cause.INCOMPATIBLE), (606, Cause.INCOMPATIBLE), (415, Cause.FAILURE),
    ],
)  # fmt: skip
def test_cause_for_status(status: int, cause: Cause) -> None:
    assert cause_for_status(status) is cause


def test_status_for_cause_and_merge() -> None:
    assert [status_for_cause(c) for c in Cause] == [
        480,
        486,
        480,
        603,
        488,
        404,
        480,
        480,
        480,
        480,
        480,
    ]
    assert merge_causes([Cause.UNREACHABLE, Cause.NO_ANSWER]) is Cause.NO_ANSWER
    assert merge_causes([Cause.NO_ANSWER, Cause.BUSY]) is Cause.BUSY
    assert merge_causes([Cause.NO_ANSWER, Cause.INCOMPATIBLE]) is Cause.INCOMPATIBLE
    assert merge_causes([]) is Cause.UNREACHABLE


def test_hangup_reason() -> None:
    assert hangup_reason(Cause.NORMAL, None) is None
    assert hangup_reason(Cause.PREEMPTED, None) == 'preemption ;cause=1 ;text="UA Preemption"'
    assert hangup_reason(Cause.PREEMPTED, EndReason.preempted("emergency_call#2")) == (
        'preemption ;cause=1 ;text="emergency_call#2"'
    )
    # a preemption without a flow's name (a CallInfo told by nobody) still says which one
    assert hangup_reason(Cause.PREEMPTED, EndReason.preempted(None)) == (
        'preemption ;cause=1 ;text="UA Preemption"'
    )
    # the code and its RFC 4411 name come from the structured kind
    kind = EndReason(preemption=PreemptionCause.RESERVED_RESOURCES)
    assert hangup_reason(Cause.PREEMPTED, kind) == (
        'preemption ;cause=2 ;text="Reserved Resources Preempted"'
    )
    # a reason naming a preemption is one, whatever the cause; plain text is not for the wire
    assert hangup_reason(Cause.NORMAL, EndReason("x", PreemptionCause.GENERIC)) == (
        'preemption ;cause=3 ;text="x"'
    )
    assert hangup_reason(Cause.CANCELLED, EndReason("picked up elsewhere")) is None
    # the text is quoted inside a header: no line break or quote gets out of it
    assert hangup_reason(Cause.PREEMPTED, EndReason('a\r\nInjected: "x"\\')) == (
        'preemption ;cause=1 ;text="a Injected: \\"x\\"\\\\"'
    )


def test_resource_priority() -> None:
    asked = parse_resource_priority(["dsn.routine, ets.1", "wps.2"], DEFAULT_RESOURCE_PRIORITY)
    assert (asked.priority, asked.known, asked.unknown) == (
        30,
        ("dsn.routine", "ets.1"),
        ("wps.2",),
    )
    assert parse_resource_priority(["q735.1"], DEFAULT_RESOURCE_PRIORITY).priority is None
    assert resource_priority_for(0, DEFAULT_RESOURCE_PRIORITY) is None
    assert resource_priority_for(30, DEFAULT_RESOURCE_PRIORITY) == "dsn.flash"
    assert resource_priority_for(50, DEFAULT_RESOURCE_PRIORITY) == "dsn.flash-override"
    assert resource_priority_for(25, DEFAULT_RESOURCE_PRIORITY) == "dsn.immediate"


@pytest.mark.parametrize(
    ("content_type", "body", "digit"),
    [
        ("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n", "5"),
        ("application/dtmf-relay", b"Signal= #\r\n", "#"),
        ("application/dtmf-relay", b"Signal=11\r\n", "#"),
        ("application/dtmf", b"*", "*"),
        ("application/dtmf", b"10", "*"),
        ("application/dtmf-relay", b"Duration=160\r\n", None),
        ("text/plain", b"5", None),
        ("application/dtmf", b"55", None),
    ],
)
def test_dtmf_from_info(content_type: str, body: bytes, digit: str | None) -> None:
    assert dtmf_from_info(content_type, body) == digit


def test_limits_are_read_and_checked() -> None:
    config = parse_sip_config({"limits": {"max_message_size": 8192, "tcp_idle_timeout": 60,
                                          "transactions_per_source": 50}})  # fmt: skip
    assert config.limits.max_message_bytes == 8192
    assert config.limits.parser_limits().max_message_bytes == 8192
    assert (config.limits.tcp_idle_timeout, config.limits.max_transactions_per_source) == (60, 50)
    with pytest.raises(SipConfigError) as bad:
        parse_sip_config({"limits": {"max_message_size": 100, "max_lag": -1, "tcp_conns": 5}})
    assert bad.value.problems == [
        "sip.limits.max_lag: expected seconds (> 0)",
        "sip.limits.tcp_conns: unknown key (known: max_lag, max_message_size, retry_after, "
        "tcp_connections, tcp_connections_per_source, tcp_first_message_timeout, "
        "tcp_idle_timeout, tcp_write_buffer, transactions, transactions_per_source)",
        "sip.limits.max_message_size: expected at least 1024 bytes",
    ]


def test_srtp_policy() -> None:
    assert parse_sip_config({}).srtp == "off"
    assert parse_sip_config({"srtp": "required"}).srtp == "required"
    with pytest.raises(SipConfigError) as bad:
        parse_sip_config({"srtp": "yes"})
    assert bad.value.problems == ['sip.srtp: expected "off", "optional" or "required"']
