"""The ``[sip]`` table of Baton's config, validated, and the users the ``sip`` switch serves.

Rules
-----
* :func:`parse_sip_config` takes the table exactly as the TOML file gave it and returns a
  :class:`SipConfig`, or raises :class:`SipConfigError` listing **every** problem, one line each,
  starting with the key (``sip.listen[1]: …``), so that a bad file stops start-up with a message
  the operator can act on.
* Unknown keys are errors (a typo must not silently fall back to a default).
* The switch layer sits below the service, so users arrive duck-typed (:class:`SipUser`): the
  service's ``UserConfig`` fits, and so does any object with the same attributes.

Keys (all optional)::

    [sip]
    listen = ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]
    realm = "baton"
    media_host = "127.0.0.1"            # the address in our SDP; RTP sockets bind to it
    rtp_ports = "30000-30999"           # or [30000, 30999]
    rtp_timeout = 30                    # seconds without RTP before a leg is dead; 0: never
    session_expires = 1800              # RFC 4028 interval; 0: no session timers
    min_se = 90
    digest_algorithms = ["MD5"]         # add "SHA-256" only if every phone handles it
    nonce_lifetime = 300
    register_expires = { min = 60, max = 3600, default = 3600 }
    inbound_ring_timeout = 180          # an inbound call nobody answers is ended with 480
    auth_failures = { max_failures = 5, window = 60, block = 60 }
    limits = { max_message_size = 16384, tcp_connections = 4096, ... }  # see TransportLimits
    srtp = "off"                        # SDES-SRTP: "off", "optional" or "required"
    [sip.tls]                           # for tls: and wss: listen addresses; the service
                                        # reads relative paths from its config file's folder
    certificate = "tls/baton.crt"       # PEM, the full chain
    key = "tls/baton.key"
    ca = "tls/phones-ca.crt"            # optional: phones must present a certificate it signed
    [sip.resource_priority]             # RFC 4412 namespace.value → Baton priority
    "dsn.flash" = "FLASH"
    [sip.peers]                         # calls with the other tenants of a cluster (.peers)
    edge = "udp:127.0.0.1:5060"         # the edge: peer calls go there, and come only from there
    secret = "..."                      # the key the edge signs peer calls with (>= 16 chars)
    numbers = ["3"]                     # prefixes of the other tenants' numbers
    lines = 8                           # peer calls at once
    tenant = "north"                    # this tenant, named to the others (the service sets it)
"""

from __future__ import annotations

import ipaddress
import math
import re
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .transport import ListenAddress, TransportLimits

#: A tenant's name, as the service's config spells tenants and ids.
_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

__all__ = [
    "DEFAULT_RESOURCE_PRIORITY",
    "PRIORITY_LEVELS",
    "SipConfig",
    "SipConfigError",
    "SipUser",
    "parse_sip_config",
    "tls_error_text",
    "tls_pair_problem",
]

#: Baton's named priority levels (MLPP). The values mirror ``baton.core.Priority``; they are
#: repeated here because the switch layer must not import the core above it.
PRIORITY_LEVELS: dict[str, int] = {
    "ROUTINE": 0,
    "PRIORITY": 10,
    "IMMEDIATE": 20,
    "FLASH": 30,
    "FLASH_OVERRIDE": 40,
    "EMERGENCY": 50,
}

#: RFC 4412 §12.6 and §12.7: the ``dsn`` namespace names MLPP levels directly; in ``ets`` the
#: lowest number is the highest priority (ets.0 is the top of five).
DEFAULT_RESOURCE_PRIORITY: dict[str, int] = {
    "dsn.routine": 0,
    "dsn.priority": 10,
    "dsn.immediate": 20,
    "dsn.flash": 30,
    "dsn.flash-override": 40,
    "ets.4": 0,
    "ets.3": 10,
    "ets.2": 20,
    "ets.1": 30,
    "ets.0": 40,
}


class SipConfigError(ValueError):
    """The ``[sip]`` table (or a user's SIP settings) is unusable. ``problems`` holds one
    ``key: message`` line per problem. Fix the config file and start again."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("bad [sip] configuration:\n  " + "\n  ".join(problems))


class SipUser(Protocol):
    """What the switch needs to know of a user (the service's ``UserConfig`` fits). A user may
    also have ``srtp`` (``"off"``, ``"optional"``, ``"required"`` or ``None``): its own SRTP
    policy, overriding ``[sip] srtp`` for its legs."""

    @property
    def id(self) -> str: ...

    @property
    def numbers(self) -> Sequence[str]: ...

    @property
    def password(self) -> str: ...

    @property
    def contact(self) -> str | None: ...

    @property
    def max_priority(self) -> int | None: ...


@dataclass(frozen=True, slots=True)
class SipConfig:
    """The validated ``[sip]`` table. See the module docstring for each key."""

    listen: tuple[str, ...] = ("udp:127.0.0.1:5060",)
    realm: str = "baton"
    media_host: str = "127.0.0.1"
    rtp_ports: tuple[int, int] = (30000, 31000)  # [first, last)
    rtp_timeout: float | None = 30.0
    session_expires: int = 1800  # 0: no session timers
    min_se: int = 90
    # MD5 only by default: baresip 1.0 fails a REGISTER outright ("Function not implemented")
    # when any challenge of the 401 is SHA-256, and SIPp 3.6.1 reads only the first.
    digest_algorithms: tuple[str, ...] = ("MD5",)
    nonce_lifetime: float = 300.0
    min_expires: int = 60
    max_expires: int = 3600
    default_expires: int = 3600
    inbound_ring_timeout: float = 180.0
    max_auth_failures: int = 5
    auth_failure_window: float = 60.0
    auth_block: float = 60.0
    resource_priority: dict[str, int] = field(
        default_factory=lambda: dict(DEFAULT_RESOURCE_PRIORITY)
    )
    limits: TransportLimits = field(default_factory=TransportLimits)
    srtp: str = "off"  # "off" | "optional" | "required": SDES-SRTP (docs/sip.md, "SRTP")
    tls_certificate: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    #: ``[sip.peers]``: (edge listen address, secret, lines, number prefixes), or None.
    peers: tuple[str, str, int, tuple[str, ...]] | None = None
    #: ``[sip.peers] tenant``: this tenant's name, told to the others on each call to them.
    peer_tenant: str | None = None


#: ``[sip] limits`` keys → :class:`TransportLimits` fields, and whether the value is whole.
_LIMITS: dict[str, tuple[str, bool]] = {
    "max_message_size": ("max_message_bytes", True),
    "tcp_connections": ("tcp_max_connections", True),
    "tcp_connections_per_source": ("tcp_max_per_source", True),
    "tcp_idle_timeout": ("tcp_idle_timeout", False),
    "tcp_first_message_timeout": ("tcp_first_message_timeout", False),
    "tcp_write_buffer": ("tcp_max_write_buffer", True),
    "transactions": ("max_transactions", True),
    "transactions_per_source": ("max_transactions_per_source", True),
    "max_lag": ("max_lag", False),
    "retry_after": ("retry_after", True),
}


_KEYS = frozenset(
    {
        "listen", "realm", "media_host", "rtp_ports", "rtp_timeout", "session_expires", "min_se",
        "digest_algorithms", "nonce_lifetime", "register_expires", "inbound_ring_timeout",
        "auth_failures", "resource_priority", "limits", "tls", "srtp", "peers",
    }
)  # fmt: skip


def _number(value: object) -> float | None:
    """A finite number (TOML's ``nan`` passes every comparison, ``inf`` never runs out)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _priority(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return PRIORITY_LEVELS.get(value.strip().upper().replace("-", "_"))
    return None


def parse_sip_config(table: Mapping[str, Any]) -> SipConfig:
    """Validate the ``[sip]`` table. Raises :class:`SipConfigError` naming every bad key."""
    problems: list[str] = []
    values: dict[str, Any] = {}

    def bad(key: str, message: str) -> None:
        problems.append(f"sip.{key}: {message}")

    if not isinstance(table, Mapping):
        raise SipConfigError(["sip: expected a table"])
    for key in sorted(set(table) - _KEYS):
        bad(key, f"unknown key (known: {', '.join(sorted(_KEYS))})")

    if "listen" in table:
        listen = table["listen"]
        if isinstance(listen, str):
            listen = [listen]
        if not isinstance(listen, list) or not listen:
            bad("listen", 'expected a list like ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]')
        else:
            # tcp:, tls:, ws: and wss: each take a TCP port (udp: a UDP one): two of them on
            # one host and port could never both listen
            stream: dict[tuple[str, int], str] = {}
            for i, item in enumerate(listen):
                try:
                    address = ListenAddress.parse(str(item)) if isinstance(item, str) else None
                except ValueError as exc:
                    bad(f"listen[{i}]", str(exc))
                    continue
                if address is None:
                    bad(f"listen[{i}]", "expected a string like udp:127.0.0.1:5060")
                    continue
                if not _is_ip(address.host):
                    bad(
                        f"listen[{i}]", f"{address.host!r} is not an IP address (Baton does no DNS)"
                    )
                elif ipaddress.ip_address(address.host).is_unspecified:
                    bad(
                        f"listen[{i}]", "listen on a specific address: it goes into Contact and Via"
                    )
                if address.transport != "udp":
                    taken = stream.setdefault((address.host, address.port), str(address))
                    if taken != str(address):
                        bad(f"listen[{i}]", f"{address} and {taken} would take the same TCP port")
            values["listen"] = tuple(str(x) for x in listen)

    if "realm" in table:
        realm = table["realm"]
        if not isinstance(realm, str) or not realm or '"' in realm:
            bad("realm", "expected a non-empty string without quotes")
        values["realm"] = realm

    if "media_host" in table:
        host = table["media_host"]
        if not isinstance(host, str) or not _is_ip(host):
            bad("media_host", "expected an IP address (it goes into our SDP)")
        values["media_host"] = host

    if "rtp_ports" in table:
        ports = _port_range(table["rtp_ports"])
        if ports is None:
            bad("rtp_ports", 'expected "FIRST-LAST" or [FIRST, LAST] with 1024 <= FIRST < LAST')
        else:
            values["rtp_ports"] = ports

    if "rtp_timeout" in table:
        seconds = _number(table["rtp_timeout"])
        if seconds is None or seconds < 0:
            bad("rtp_timeout", "expected seconds (0 disables the RTP inactivity timeout)")
        else:
            values["rtp_timeout"] = seconds or None

    for key in ("session_expires", "min_se"):
        if key in table:
            n = table[key]
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                bad(key, "expected whole seconds (>= 0)")
            else:
                values[key] = n
    se, min_se = values.get("session_expires", 1800), values.get("min_se", 90)
    if isinstance(se, int) and isinstance(min_se, int) and 0 < se < max(min_se, 90):
        bad("session_expires", f"must be 0 (off) or at least min_se ({max(min_se, 90)})")

    if "digest_algorithms" in table:
        algos = table["digest_algorithms"]
        known = {"MD5", "SHA-256", "MD5-SESS", "SHA-256-SESS"}
        if (
            not isinstance(algos, list)
            or not algos
            or not all(isinstance(a, str) and a.upper() in known for a in algos)
        ):
            bad("digest_algorithms", 'expected a list of "MD5", "SHA-256" (MD5 first for SIPp)')
        else:
            values["digest_algorithms"] = tuple(str(a).upper() for a in algos)

    for key in ("nonce_lifetime", "inbound_ring_timeout"):
        if key in table:
            seconds = _number(table[key])
            if seconds is None or seconds <= 0:
                bad(key, "expected seconds (> 0)")
            else:
                values[key] = seconds

    if "register_expires" in table:
        _register_expires(table["register_expires"], values, bad)

    if "auth_failures" in table:
        _auth_failures(table["auth_failures"], values, bad)

    if "limits" in table:
        _limits(table["limits"], values, bad)

    if "tls" in table:
        _tls(table["tls"], values, bad)

    if "peers" in table:
        _peers(table["peers"], values, bad)

    if "srtp" in table:
        if table["srtp"] not in ("off", "optional", "required"):
            bad("srtp", 'expected "off", "optional" or "required"')
        else:
            values["srtp"] = table["srtp"]
    listen_tls = any(str(x).lower().startswith(("tls:", "wss:")) for x in values.get("listen", ()))
    tls_given = isinstance(table.get("tls"), Mapping) and {"certificate", "key"} <= set(
        table["tls"]
    )
    if listen_tls and "tls_certificate" not in values and not tls_given:
        # (a certificate and key given but unusable are named above, under tls.*)
        bad("tls", "a tls: or wss: listen address needs [sip.tls] certificate and key")

    if "resource_priority" in table:
        mapping = table["resource_priority"]
        if not isinstance(mapping, Mapping):
            bad("resource_priority", 'expected a table like { "dsn.flash" = "FLASH" }')
        else:
            rp: dict[str, int] = {}
            for name, level in mapping.items():
                ns, dot, val = str(name).partition(".")
                if not dot or not ns or not val:
                    bad(f"resource_priority.{name}", "expected namespace.value (RFC 4412)")
                    continue
                prio = _priority(level)
                if prio is None:
                    bad(
                        f"resource_priority.{name}",
                        f"expected a priority: {', '.join(PRIORITY_LEVELS)} or an integer",
                    )
                    continue
                rp[str(name).lower()] = prio
            values["resource_priority"] = rp

    if problems:
        raise SipConfigError(problems)
    return SipConfig(**values)


def _register_expires(value: object, values: dict[str, Any], bad: Any) -> None:
    if not isinstance(value, Mapping):
        bad("register_expires", "expected a table { min = 60, max = 3600, default = 3600 }")
        return
    for name in sorted(set(value) - {"min", "max", "default"}):
        bad(f"register_expires.{name}", "unknown key (known: min, max, default)")
    got: dict[str, int] = {}
    for name in ("min", "max", "default"):
        if name in value:
            n = value[name]
            if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
                bad(f"register_expires.{name}", "expected whole seconds (> 0)")
            else:
                got[name] = n
    low = got.get("min", 60)
    high = got.get("max", 3600)
    default = got.get("default", min(3600, high))
    if not low <= default <= high:
        bad("register_expires", f"need min <= default <= max (got {low}, {default}, {high})")
    values.update(min_expires=low, max_expires=high, default_expires=default)


def _auth_failures(value: object, values: dict[str, Any], bad: Any) -> None:
    if not isinstance(value, Mapping):
        bad("auth_failures", "expected a table { max_failures = 5, window = 60, block = 60 }")
        return
    for name in sorted(set(value) - {"max_failures", "window", "block"}):
        bad(f"auth_failures.{name}", "unknown key (known: max_failures, window, block)")
    if "max_failures" in value:
        n = value["max_failures"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            bad("auth_failures.max_failures", "expected a whole number (>= 1)")
        else:
            values["max_auth_failures"] = n
    for name, attr in (("window", "auth_failure_window"), ("block", "auth_block")):
        if name in value:
            seconds = _number(value[name])
            if seconds is None or seconds <= 0:
                bad(f"auth_failures.{name}", "expected seconds (> 0)")
            else:
                values[attr] = seconds


def _limits(value: object, values: dict[str, Any], bad: Any) -> None:
    if not isinstance(value, Mapping):
        bad("limits", "expected a table like { max_message_size = 16384 }")
        return
    got: dict[str, Any] = {}
    for name in sorted(value):
        if name not in _LIMITS:
            bad(f"limits.{name}", f"unknown key (known: {', '.join(sorted(_LIMITS))})")
            continue
        attr, whole = _LIMITS[name]
        n = value[name]
        if whole and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            bad(f"limits.{name}", "expected a whole number (>= 1)")
        elif not whole and ((seconds := _number(n)) is None or seconds <= 0):
            bad(f"limits.{name}", "expected seconds (> 0)")
        else:
            got[attr] = n
    if got.get("max_message_bytes", 16_384) < 1024:
        bad("limits.max_message_size", "expected at least 1024 bytes")
    values["limits"] = TransportLimits(**got)


def _tls(value: object, values: dict[str, Any], bad: Any) -> None:
    if not isinstance(value, Mapping):
        bad("tls", 'expected a table { certificate = "...", key = "...", ca = "..." }')
        return
    for name in sorted(set(value) - {"certificate", "key", "ca"}):
        bad(f"tls.{name}", "unknown key (known: ca, certificate, key)")
    for name in ("certificate", "key", "ca"):
        if name not in value:
            if name != "ca":
                bad(f"tls.{name}", "required")
            continue
        path = value[name]
        if not isinstance(path, str) or not path:
            bad(f"tls.{name}", "expected the path of a PEM file")
            continue
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            bad(f"tls.{name}", f"cannot read {path}: {exc.strerror}")
            continue
        values[f"tls_{name}"] = path
    if "tls_certificate" in values and "tls_key" in values:
        problem = tls_pair_problem(values["tls_certificate"], values["tls_key"])
        if problem is not None:
            bad("tls", problem)


def tls_error_text(exc: Exception) -> str:
    """What went wrong loading a certificate and key, in words rather than OpenSSL's
    (``[SSL] PEM lib (_ssl.c:3905)``)."""
    text = str(exc)
    if "KEY_VALUES_MISMATCH" in text:
        return "the key does not belong to the certificate (a key from another pair)"
    if "PEM lib" in text or "NO_START_LINE" in text or "PEM" in getattr(exc, "library", ""):
        return "not a PEM certificate and private key (expected -----BEGIN ...----- blocks)"
    if isinstance(exc, OSError) and not isinstance(exc, ssl.SSLError) and exc.strerror:
        return exc.strerror
    return text


def tls_pair_problem(certificate: str, key: str) -> str | None:
    """Why a server could not use ``certificate`` (a PEM chain) with ``key``; None if it can."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(certificate, key)
    except (OSError, ssl.SSLError) as exc:
        return f"cannot use certificate {certificate} with key {key}: {tls_error_text(exc)}"
    return None


def _peers(value: object, values: dict[str, Any], bad: Any) -> None:
    if not isinstance(value, Mapping):
        bad("peers", 'expected a table { edge = "udp:IP:PORT", secret = "...", numbers = [...] }')
        return
    for name in sorted(set(value) - {"edge", "secret", "numbers", "lines", "tenant"}):
        bad(f"peers.{name}", "unknown key (known: edge, lines, numbers, secret, tenant)")
    edge, secret = value.get("edge"), value.get("secret")
    numbers, lines = value.get("numbers", []), value.get("lines", 8)
    try:
        address = ListenAddress.parse(edge) if isinstance(edge, str) else None
    except ValueError:
        address = None
    if address is None or not _is_ip(address.host):
        bad("peers.edge", "expected the edge's address, like udp:192.0.2.1:5060")
    if not isinstance(secret, str) or len(secret) < 16:
        bad("peers.secret", "expected the edge's shared secret, 16 characters at least")
    if (
        not isinstance(numbers, list)
        or not numbers
        or not all(isinstance(n, str) and n and n.isdigit() for n in numbers)
    ):
        bad("peers.numbers", 'expected the other tenants\' number prefixes, like ["3", "45"]')
    if isinstance(lines, bool) or not isinstance(lines, int) or not 1 <= lines <= 1000:
        bad("peers.lines", "expected how many peer calls at once (1-1000)")
    tenant = value.get("tenant")
    if tenant is not None and not (isinstance(tenant, str) and _TENANT.fullmatch(tenant)):
        bad("peers.tenant", "expected this tenant's name (letters, digits, - _ .; 64 at most)")
    elif tenant is not None:
        values["peer_tenant"] = tenant
    if address is not None and isinstance(secret, str) and isinstance(numbers, list):
        values["peers"] = (str(edge), secret, lines, tuple(str(n) for n in numbers))


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _port_range(value: object) -> tuple[int, int] | None:
    """``"30000-30999"`` or ``[30000, 30999]`` (inclusive) → ``(30000, 31000)`` (half-open)."""
    first: object
    last: object
    if isinstance(value, str):
        a, dash, b = value.partition("-")
        if not dash or not a.strip().isdigit() or not b.strip().isdigit():
            return None
        first, last = int(a), int(b)
    elif isinstance(value, list | tuple) and len(value) == 2:
        first, last = value
    else:
        return None
    if (
        not isinstance(first, int)
        or not isinstance(last, int)
        or isinstance(first, bool)
        or isinstance(last, bool)
    ):
        return None
    if not 1024 <= first < last <= 65535 or last - first < 3:
        return None
    return first, last + 1
