"""SIP addressing: URIs, name-addr / addr-spec, and Via (RFC 3261 §19, §20.10, §20.42, §25).

Rules
-----
* A parsed URI keeps every component **as it was on the wire** (escapes included), so ``str()``
  gives back the text it came from. A registrar can therefore store a Contact exactly as sent
  and later use it as a Request-URI byte for byte (baresip registers
  ``<sip:alice-0x55…@127.0.0.1:5064>`` for AOR ``alice``). Decoded views (:meth:`SipUri.user_text`)
  and RFC 3261 §19.1.4 comparison (:meth:`SipUri.equivalent`) unescape on demand.
* Only ``sip:`` and ``sips:`` URIs are understood; any other scheme (``tel:``, ``isbn:``) parses
  as an opaque :class:`AbsoluteUri`, so that a message carrying one can still be answered (416,
  or 400 from a registrar) rather than failing to parse (RFC 4475 §3.3.2–3.3.4).
* Transport names are case-insensitive: ``transport=UDP`` (as SIPp sends it) equals
  ``transport=udp``; :attr:`SipUri.transport` and :attr:`Via.transport` normalise them.
* Every parser raises :class:`~baton.switch.sip.errors.SipParseError` (status 400, with a reason
  naming the element) and nothing else.

Theory of operation
-------------------
A URI is split where the grammar allows no ambiguity: the userinfo ends at the first ``@`` (a
user part cannot hold a bare ``@``), the host is a bracketed IPv6 reference or a run of host
characters, then ``;params`` and ``?headers``. Each piece is checked against its RFC 3261
character class. A name-addr is ``[display-name] <URI>`` followed by header parameters; the
addr-spec form (no brackets) ends its URI at the first ``;``, which is why such a URI may not
contain ``?`` or ``,`` (RFC 4475 ``regbadct``).
"""

from __future__ import annotations

import functools
import ipaddress
import re
import urllib.parse
from dataclasses import dataclass, field

from ._grammar import ALNUM, HEXDIG, TOKEN, UNRESERVED, Params, Scanner, parse_params, quote
from .errors import SipParseError

__all__ = [
    "AbsoluteUri",
    "NameAddress",
    "SipUri",
    "Uri",
    "Via",
    "escape_user",
    "parse_name_addr",
    "parse_uri",
    "parse_via",
    "unescape",
]

_USER = UNRESERVED | frozenset("&=+$,;?/%")
_PASSWORD = UNRESERVED | frozenset("&=+$,%")
_PARAMCHAR = UNRESERVED | frozenset("[]/:&+$%")
_HNV = UNRESERVED | frozenset("[]/?:+$%")
_HOSTNAME = ALNUM | frozenset("-._")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")
_OPAQUE_FORBIDDEN = frozenset(' \t"<>')
_DEFAULT_PORT = {"sip": 5060, "sips": 5061}
_MUST_MATCH = frozenset({"user", "ttl", "method", "maddr", "transport"})


def unescape(text: str) -> str:
    """Decode ``%HH`` escapes (once; RFC 3986 never decodes recursively)."""
    return urllib.parse.unquote(text, encoding="utf-8", errors="surrogateescape")


def escape_user(text: str) -> str:
    """Escape a user part for a SIP URI (RFC 3261 ``user``)."""
    return urllib.parse.quote(text, safe="-_.!~*'()&=+$,;?/", errors="surrogateescape")


def _escape_param(text: str) -> str:
    return urllib.parse.quote(text, safe="-_.!~*'()[]/:&+$", errors="surrogateescape")


def _check_escapes(text: str, what: str) -> None:
    i = text.find("%")
    while i != -1:
        pair = text[i + 1 : i + 3]
        if len(pair) != 2 or not all(c in HEXDIG for c in pair):
            raise SipParseError(f"Malformed URI: bad escape in {what}")
        i = text.find("%", i + 1)


def _check_chars(text: str, allowed: frozenset[str], what: str) -> str:
    for c in text:
        if c not in allowed:
            raise SipParseError(f"Malformed URI: invalid character {c!r} in {what}")
    _check_escapes(text, what)
    return text


def _parse_host(text: str, what: str = "URI") -> str:
    if not text:
        raise SipParseError(f"Malformed {what}: empty host")
    if text.startswith("["):
        if not text.endswith("]"):
            raise SipParseError(f"Malformed {what}: unterminated IPv6 reference")
        try:
            ipaddress.IPv6Address(text[1:-1])
        except ValueError:
            raise SipParseError(f"Malformed {what}: bad IPv6 reference") from None
        return text
    for c in text:
        if c not in _HOSTNAME:
            raise SipParseError(f"Malformed {what}: invalid character {c!r} in host")
    if text.startswith((".", "-")) or ".." in text:
        raise SipParseError(f"Malformed {what}: bad host name")
    return text


def _parse_port(text: str, what: str = "URI") -> int:
    if not text or len(text) > 5 or not text.isascii() or not text.isdigit():
        raise SipParseError(f"Malformed {what}: bad port")
    port = int(text)
    if port > 65535:
        raise SipParseError(f"Malformed {what}: port out of range")
    return port


@dataclass(frozen=True, slots=True)
class SipUri:
    """A ``sip:`` or ``sips:`` URI. Components are kept in their escaped, on-the-wire form."""

    host: str
    user: str | None = None
    password: str | None = None
    port: int | None = None
    params: Params = field(default_factory=Params)
    headers: tuple[tuple[str, str], ...] = ()
    scheme: str = "sip"

    @classmethod
    def build(
        cls,
        host: str,
        *,
        user: str | None = None,
        port: int | None = None,
        params: dict[str, str | None] | None = None,
        scheme: str = "sip",
    ) -> SipUri:
        """Make a URI from *decoded* parts, escaping them as needed."""
        items = [
            (_escape_param(k), None if v is None else _escape_param(v))
            for k, v in (params or {}).items()
        ]
        return cls(
            host=_parse_host(host),
            user=None if user is None else escape_user(user),
            port=port,
            params=Params(items),
            scheme=scheme,
        )

    def __str__(self) -> str:
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out.append(":" + self.password)
            out.append("@")
        out.append(self.host)
        if self.port is not None:
            out.append(f":{self.port}")
        out.append(self.params.render())
        if self.headers:
            out.append("?" + "&".join(f"{k}={v}" for k, v in self.headers))
        return "".join(out)

    @property
    def user_text(self) -> str | None:
        """The user part with escapes decoded (``%75se%72`` → ``user``)."""
        return None if self.user is None else unescape(self.user)

    @property
    def transport(self) -> str | None:
        """The ``transport`` parameter, lower-cased (``UDP`` and ``udp`` are the same)."""
        value = self.params.get("transport")
        return None if value is None else value.lower()

    @property
    def lr(self) -> bool:
        return "lr" in self.params

    @property
    def default_port(self) -> int:
        return _DEFAULT_PORT.get(self.scheme, 5060)

    def host_port(self) -> tuple[str, int]:
        """Where to send to: the host without IPv6 brackets, and the port or its default."""
        host = self.host[1:-1] if self.host.startswith("[") else self.host
        return host, self.port if self.port is not None else self.default_port

    def with_params(self, **changes: str | None) -> SipUri:
        params = self.params
        for name, value in changes.items():
            params = params.with_(name, value)
        return SipUri(
            self.host, self.user, self.password, self.port, params, self.headers, self.scheme
        )

    def without_params(self, *names: str) -> SipUri:
        params = self.params
        for name in names:
            params = params.without(name)
        return SipUri(
            self.host, self.user, self.password, self.port, params, self.headers, self.scheme
        )

    def without_headers(self) -> SipUri:
        return SipUri(self.host, self.user, self.password, self.port, self.params, (), self.scheme)

    def equivalent(self, other: object) -> bool:
        """URI comparison per RFC 3261 §19.1.4 (not string equality).

        User and password compare case-sensitively after unescaping; the host
        case-insensitively; a port, ``user``, ``ttl``, ``method``, ``maddr`` or ``transport``
        present in one URI must be present and equal in the other; any other parameter counts
        only when both URIs carry it; headers must match as sets.
        """
        if not isinstance(other, SipUri) or self.scheme != other.scheme:
            return False
        if self.user_text != other.user_text:
            return False
        if (self.password and unescape(self.password)) != (
            other.password and unescape(other.password)
        ):
            return False
        if self.host.lower() != other.host.lower() or self.port != other.port:
            return False
        mine = {unescape(k).lower(): v for k, v in self.params}
        theirs = {unescape(k).lower(): v for k, v in other.params}
        for name in mine.keys() | theirs.keys():
            in_both = name in mine and name in theirs
            if not in_both:
                if name in _MUST_MATCH:
                    return False
                continue
            if unescape(mine[name] or "").lower() != unescape(theirs[name] or "").lower():
                return False
        mine_h = {(unescape(k).lower(), unescape(v)) for k, v in self.headers}
        theirs_h = {(unescape(k).lower(), unescape(v)) for k, v in other.headers}
        return mine_h == theirs_h


@dataclass(frozen=True, slots=True)
class AbsoluteUri:
    """A URI of a scheme this layer does not interpret (``tel:``, ``isbn:``, ``http:``)."""

    scheme: str
    opaque: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.opaque}"

    def equivalent(self, other: object) -> bool:
        return (
            isinstance(other, AbsoluteUri)
            and self.scheme == other.scheme
            and self.opaque == other.opaque
        )


Uri = SipUri | AbsoluteUri


def parse_uri(text: str) -> Uri:
    """Parse a Request-URI or the URI inside a name-addr.

    Raises :class:`SipParseError` (400) if ``text`` is not a URI.
    """
    return _parse_uri_cached(text)


# Values are immutable, so a parse can be shared: the same header values recur in every
# message of a transaction and are read again on each property access (Message.from_ …).
@functools.lru_cache(maxsize=1024)
def _parse_uri_cached(text: str) -> Uri:
    match = _SCHEME.match(text)
    if match is None or text[match.end() : match.end() + 1] != ":":
        raise SipParseError("Malformed URI: no scheme")
    scheme = match.group().lower()
    rest = text[match.end() + 1 :]
    if scheme not in ("sip", "sips"):
        if not rest or any(c in _OPAQUE_FORBIDDEN or c < " " or c == "\x7f" for c in rest):
            raise SipParseError(f"Malformed URI: invalid {scheme}: URI")
        return AbsoluteUri(scheme, rest)
    user: str | None = None
    password: str | None = None
    at = rest.find("@")
    if at != -1:
        userinfo, rest = rest[:at], rest[at + 1 :]
        if ":" in userinfo:
            user, password = userinfo.split(":", 1)
            _check_chars(password, _PASSWORD, "password")
        else:
            user = userinfo
        if not user:
            raise SipParseError("Malformed URI: empty user part")
        _check_chars(user, _USER, "user part")
    headers: tuple[tuple[str, str], ...] = ()
    question = rest.find("?")
    if question != -1:
        rest, header_text = rest[:question], rest[question + 1 :]
        headers = _parse_uri_headers(header_text)
    semi = rest.find(";")
    param_text = ""
    if semi != -1:
        rest, param_text = rest[:semi], rest[semi:]
    hostport = rest
    port: int | None = None
    if hostport.startswith("["):
        close = hostport.find("]")
        if close == -1:
            raise SipParseError("Malformed URI: unterminated IPv6 reference")
        host = _parse_host(hostport[: close + 1])
        tail = hostport[close + 1 :]
        if tail:
            if not tail.startswith(":"):
                raise SipParseError("Malformed URI: text after IPv6 reference")
            port = _parse_port(tail[1:])
    else:
        if ":" in hostport:
            host_text, port_text = hostport.split(":", 1)
            port = _parse_port(port_text)
        else:
            host_text = hostport
        host = _parse_host(host_text)
    params: list[tuple[str, str | None]] = []
    if param_text:
        for piece in param_text[1:].split(";"):
            name, eq, value = piece.partition("=")
            if not name:
                raise SipParseError("Malformed URI: empty parameter name")
            _check_chars(name, _PARAMCHAR, "parameter")
            if eq:
                if not value:
                    raise SipParseError("Malformed URI: empty parameter value")
                _check_chars(value, _PARAMCHAR, "parameter")
            params.append((name, value if eq else None))
    return SipUri(host, user, password, port, Params(params), headers, scheme)


def _parse_uri_headers(text: str) -> tuple[tuple[str, str], ...]:
    headers: list[tuple[str, str]] = []
    for piece in text.split("&"):
        name, eq, value = piece.partition("=")
        if not name or not eq:
            raise SipParseError("Malformed URI: bad header component")
        _check_chars(name, _HNV, "header")
        _check_chars(value, _HNV, "header")
        headers.append((name, value))
    return tuple(headers)


# ---- name-addr / addr-spec ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NameAddress:
    """``[display-name] <URI> *(;param)`` as in From, To, Contact, Route, Record-Route."""

    uri: Uri
    display_name: str | None = None
    params: Params = field(default_factory=Params)

    def __str__(self) -> str:
        name = "" if self.display_name is None else quote(self.display_name) + " "
        return f"{name}<{self.uri}>{self.params.render()}"

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def with_tag(self, tag: str) -> NameAddress:
        return NameAddress(self.uri, self.display_name, self.params.with_("tag", tag))

    def with_param(self, name: str, value: str | None) -> NameAddress:
        return NameAddress(self.uri, self.display_name, self.params.with_(name, value))

    def without_param(self, name: str) -> NameAddress:
        return NameAddress(self.uri, self.display_name, self.params.without(name))


_DISPLAY_TOKENS = TOKEN | frozenset(" \t")


def parse_name_addr(text: str, what: str = "address") -> NameAddress:
    """Parse a From/To/Contact/Route value: name-addr or addr-spec, then header params.

    Raises :class:`SipParseError` naming ``what`` (e.g. ``"From"``) on malformed input: an
    unterminated quote (``quotbal``), white space inside ``<>`` (``badaspec``), a display name
    of non-token characters (``baddn``), an addr-spec holding ``?`` or ``,`` (``regbadct``).
    """
    return _parse_name_addr_cached(text, what)


# Values are immutable, so a parse can be shared: the same header values recur in every
# message of a transaction and are read again on each property access (Message.from_ …).
@functools.lru_cache(maxsize=1024)
def _parse_name_addr_cached(text: str, what: str) -> NameAddress:
    return _name_addr_fast(text) or _parse_name_addr_slow(text, what)


# The shapes phones send nearly always — ``<sip:a@h:p>;tag=x``, ``"Name" <sip:…>;tag=x``,
# ``sip:a@h:p`` — without white space, escapes or quoted parameter values, matched by one
# expression. Anything else (and anything the URI parser refuses) takes the scanner, which
# gives the same value or the precise error; tests/sip/test_sip_fast_paths.py checks that they
# agree.
_TOKEN_CLASS = r"[A-Za-z0-9\-.!%*_+`'~]"
_PARAMS_FAST = rf"((?:;{_TOKEN_CLASS}+(?:=[A-Za-z0-9\-.!%*_+`'~:\[\]]+)?)*)"
_NAME_ADDR_FAST = re.compile(
    rf'(?:"([^"\\\x00-\x1f\x7f]*)"[ \t]*)?<([^<>"\x00-\x20]+)>{_PARAMS_FAST}'
    rf'|([^<>"\x00-\x20;,?]+){_PARAMS_FAST}'
)


def _params_fast(text: str | None) -> Params:
    """The params matched by ``_PARAMS_FAST`` (``;a=b;c``)."""
    if not text:
        return _NO_PARAMS
    items: list[tuple[str, str | None]] = []
    for item in text[1:].split(";"):
        name, eq, value = item.partition("=")
        items.append((name, value if eq else None))
    return Params(items)


_NO_PARAMS = Params()


def _name_addr_fast(text: str) -> NameAddress | None:
    match = _NAME_ADDR_FAST.fullmatch(text.strip(" \t"))
    if match is None:
        return None
    display, inner, params, bare, bare_params = match.groups()
    if inner is None:
        inner, params = bare, bare_params
    try:
        uri = parse_uri(inner)
    except SipParseError:
        return None
    return NameAddress(uri, display, _params_fast(params))


def _parse_name_addr_slow(text: str, what: str) -> NameAddress:
    scanner = Scanner(text.strip(" \t"), what)
    display: str | None = None
    if scanner.peek() == '"':
        display = scanner.quoted_string()
        scanner.skip_ws()
        if scanner.peek() != "<":
            raise scanner.error("expected '<' after display name")
    elif "<" in scanner.text:
        raw = scanner.take_until("<")
        if any(c not in _DISPLAY_TOKENS for c in raw):
            raise scanner.error("display name must be a quoted string or tokens")
        display = " ".join(raw.split()) or None
    if scanner.accept("<"):
        inner = scanner.take_until(">")
        scanner.expect(">")
        try:
            uri = parse_uri(inner)
        except SipParseError as exc:
            raise scanner.error(exc.reason) from None
    else:
        inner = scanner.take_until("; \t")
        if "?" in inner or "," in inner:
            raise scanner.error("a URI with '?' or ',' must be enclosed in '<>'")
        try:
            uri = parse_uri(inner)
        except SipParseError as exc:
            raise scanner.error(exc.reason) from None
    params = parse_params(scanner)
    return NameAddress(uri, display, params)


# ---- Via ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Via:
    """One Via value: ``SIP/2.0/<transport> host[:port] *(;param)``.

    ``transport`` is upper-cased; ``branch``, ``received`` and ``rport`` read the params.
    """

    transport: str
    host: str
    port: int | None = None
    params: Params = field(default_factory=Params)
    protocol: str = "SIP/2.0"

    def __str__(self) -> str:
        port = "" if self.port is None else f":{self.port}"
        return f"{self.protocol}/{self.transport} {self.host}{port}{self.params.render()}"

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def rport(self) -> int | None:
        """The ``rport`` value a server filled in, or ``None`` (absent or still empty)."""
        value = self.params.get("rport")
        if value is None or not value.isascii() or not value.isdigit():
            return None
        return int(value)

    @property
    def wants_rport(self) -> bool:
        """True if the client asked for ``rport`` (RFC 3581)."""
        return "rport" in self.params

    @property
    def sent_by(self) -> tuple[str, int]:
        """``(host, port)`` with the host lower-cased and the transport's default port."""
        default = 5061 if self.transport in ("TLS", "WSS") else 5060
        return self.host.lower(), self.port if self.port is not None else default

    def with_params(self, **changes: str | None) -> Via:
        params = self.params
        for name, value in changes.items():
            params = params.with_(name, value)
        return Via(self.transport, self.host, self.port, params, self.protocol)

    def without_params(self, *names: str) -> Via:
        params = self.params
        for name in names:
            params = params.without(name)
        return Via(self.transport, self.host, self.port, params, self.protocol)


_VIA_HOST = _HOSTNAME


def parse_via(text: str) -> Via:
    """Parse one Via value (the header is split on commas before this is called).

    LWS is allowed around ``/`` and ``:`` (RFC 4475 ``wsinv``). Raises :class:`SipParseError`.
    """
    return _parse_via_cached(text)


# Values are immutable, so a parse can be shared: the same header values recur in every
# message of a transaction and are read again on each property access (Message.from_ …).
@functools.lru_cache(maxsize=1024)
def _parse_via_cached(text: str) -> Via:
    return _via_fast(text) or _parse_via_slow(text)


# ``SIP/2.0/UDP host[:port];params`` without white space, IPv6 or quoted values: nearly every
# Via. Anything else takes the scanner (see _NAME_ADDR_FAST).
_VIA_FAST = re.compile(
    rf"SIP/2\.0/([A-Za-z]+) ([A-Za-z0-9._\-]+)(?::([0-9]{{1,5}}))?{_PARAMS_FAST}"
)


def _via_fast(text: str) -> Via | None:
    match = _VIA_FAST.fullmatch(text.strip(" \t"))
    if match is None:
        return None
    transport, host, port_text, params_text = match.groups()
    port = None if port_text is None else int(port_text)
    if (port is not None and port > 65535) or host.startswith((".", "-")) or ".." in host:
        return None
    params = _params_fast(params_text)
    rport = params.get("rport")
    if ("branch" in params and not params.get("branch")) or (
        rport is not None and not (rport.isdigit() and int(rport) <= 65535)
    ):
        return None
    return Via(transport.upper(), host, port, params, "SIP/2.0")


def _parse_via_slow(text: str) -> Via:
    s = Scanner(text.strip(" \t"), "Via")
    s.skip_ws()
    name = s.token("protocol name")
    s.skip_ws()
    s.expect("/")
    s.skip_ws()
    version = s.token("protocol version")
    s.skip_ws()
    s.expect("/")
    s.skip_ws()
    transport = s.token("transport")
    if not s.skip_ws():
        raise s.error("expected white space before sent-by")
    if s.peek() == "[":
        host = s.take_until("]")
        s.expect("]")
        host = _parse_host(host + "]", "Via")
    else:
        host = _parse_host(s.take_while(_VIA_HOST), "Via")
    s.skip_ws()
    port: int | None = None
    if s.accept(":"):
        s.skip_ws()
        port = _parse_port(s.take_while(frozenset("0123456789")), "Via")
    params = parse_params(s)
    branch = params.get("branch", "")
    if "branch" in params and not branch:
        raise s.error("empty branch")
    rport = params.get("rport")
    if rport is not None and not (rport.isascii() and rport.isdigit() and int(rport) <= 65535):
        raise s.error("bad rport")
    return Via(transport.upper(), host, port, params, f"{name.upper()}/{version}")
