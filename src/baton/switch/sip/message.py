"""SIP messages (RFC 3261 §7, §20, §25): parse bytes into requests and responses, and back.

Rules
-----
* **Bytes in, messages out.** :func:`parse_message` takes one datagram (or one frame cut by
  :class:`StreamFramer`) and returns a :class:`Request` or a :class:`Response`. On *any* input
  it either returns one of those or raises :class:`~baton.switch.sip.errors.SipParseError` —
  never another exception. The error carries the status to answer (400 with a reason phrase
  naming the problem, 413/513 for what is too large, 505 for a foreign SIP version) and what was
  parsed so far, from which :func:`error_response` builds the answer when that is possible.
* **Strict limits.** :class:`ParserLimits` bounds the message, the header section, each line,
  the number of header fields and the body. Content-Length must not promise more than the
  datagram holds; bytes beyond it are discarded (RFC 3261 §18.3).
* **Validated on the way in.** The headers every element relies on — Via, From, To, Call-ID,
  CSeq, Max-Forwards, Content-Length, and Contact/Route/Record-Route/Expires/Date when present —
  are checked while parsing, so the typed accessors (:attr:`Message.vias`, :attr:`Message.cseq`,
  …) never fail on a parsed message. Headers the layer does not know are kept as text.
* **Headers are ordered, case-insensitive and multi-valued.** Compact names (``i``, ``m``, ``v``
  …) become their long form; values of the list headers of RFC 3261 (Via, Contact, Route,
  Allow, …) are split on commas outside quotes and ``<>``, one value per entry. Headers with
  commas of their own — WWW-Authenticate, Authorization, Proxy-*, Date, Retry-After and every
  unknown header — are never split.
* **Canonical serialisation.** :meth:`Message.to_bytes` writes the start line, one header per
  line in stored order under its long name, a Content-Length that always matches the body, an
  empty line and the body. ``parse_message(m.to_bytes())`` gives back an equal message.

Theory of operation
-------------------
The header section is found by its empty line and decoded as UTF-8 (undecodable octets are
kept as surrogates so they survive a round trip). Folded lines (``CRLF`` then white space) are
joined with one space. Each line is split at its first colon; the name is canonicalised, the
value split if its header is a list. Then the start line is read, the headers above validated,
and the body cut by Content-Length. A parse error raised after the header section was read
carries a :class:`PartialRequest`, so even a request with a broken CSeq can get its 400.

For TCP, :class:`StreamFramer` buffers bytes and cuts messages by Content-Length, skipping the
CRLFs allowed between messages and reporting RFC 5626 double-CRLF keep-alive pings.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from ._grammar import has_ctl, is_token, is_word, split_list
from .errors import LocalProtocolError, SipParseError
from .uri import NameAddress, SipUri, Uri, Via, parse_name_addr, parse_uri, parse_via

__all__ = [
    "REASON_PHRASES",
    "CSeq",
    "Frame",
    "FramerEvent",
    "FramingError",
    "Headers",
    "KeepAlivePing",
    "MalformedFrame",
    "Message",
    "ParserLimits",
    "PartialRequest",
    "Request",
    "Response",
    "StreamFramer",
    "canonical_name",
    "error_response",
    "is_keepalive",
    "make_response",
    "parse_message",
]

SIP_VERSION = "SIP/2.0"

REASON_PHRASES: dict[int, str] = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    199: "Early Dialog Terminated",
    200: "OK",
    202: "Accepted",
    204: "No Notification",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    305: "Use Proxy",
    380: "Alternative Service",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    417: "Unknown Resource-Priority",
    420: "Bad Extension",
    421: "Extension Required",
    422: "Session Interval Too Small",
    423: "Interval Too Brief",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    485: "Ambiguous",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",
    491: "Request Pending",
    493: "Undecipherable",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    580: "Precondition Failure",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}

# ---- header names ------------------------------------------------------------------------

_COMPACT = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "d": "Request-Disposition",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "n": "Identity-Info",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
    "y": "Identity",
}
_COMPACT_OF = {long.lower(): short for short, long in _COMPACT.items()}

_KNOWN = [
    "Accept",
    "Accept-Encoding",
    "Accept-Language",
    "Accept-Resource-Priority",
    "Alert-Info",
    "Allow",
    "Authentication-Info",
    "Authorization",
    "Call-ID",
    "Call-Info",
    "Contact",
    "Content-Disposition",
    "Content-Encoding",
    "Content-Language",
    "Content-Length",
    "Content-Type",
    "CSeq",
    "Date",
    "Error-Info",
    "Expires",
    "From",
    "In-Reply-To",
    "Max-Forwards",
    "Min-Expires",
    "Min-SE",
    "MIME-Version",
    "Organization",
    "P-Asserted-Identity",
    "P-Preferred-Identity",
    "Path",
    "Priority",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "Proxy-Require",
    "RAck",
    "Reason",
    "Record-Route",
    "Refer-To",
    "Referred-By",
    "Reply-To",
    "Require",
    "Resource-Priority",
    "Retry-After",
    "Route",
    "RSeq",
    "Server",
    "Service-Route",
    "Session-Expires",
    "Subject",
    "Supported",
    "Timestamp",
    "To",
    "Unsupported",
    "User-Agent",
    "Via",
    "Warning",
    "WWW-Authenticate",
    "Event",
    "Allow-Events",
    "Subscription-State",
]
_CANONICAL = {name.lower(): name for name in _KNOWN} | {
    long.lower(): long for long in _COMPACT.values()
}

# Headers whose grammar is a comma-separated list (RFC 3261 §20 and extensions). Everything
# else — the authentication headers and Date above all — is one value per header line.
_LIST_HEADERS = frozenset(
    name.lower()
    for name in (
        "Accept",
        "Accept-Encoding",
        "Accept-Language",
        "Accept-Resource-Priority",
        "Alert-Info",
        "Allow",
        "Allow-Events",
        "Call-Info",
        "Contact",
        "Content-Encoding",
        "Content-Language",
        "Error-Info",
        "In-Reply-To",
        "P-Asserted-Identity",
        "P-Preferred-Identity",
        "Path",
        "Proxy-Require",
        "Reason",
        "Record-Route",
        "Require",
        "Resource-Priority",
        "Route",
        "Service-Route",
        "Supported",
        "Unsupported",
        "Via",
        "Warning",
    )
)

# Headers that may appear at most once (RFC 4475 ``multi01``, ``mcl01``).
_SINGLE = ("To", "From", "Call-ID", "CSeq", "Max-Forwards", "Content-Length", "Content-Type",
           "Expires")  # fmt: skip
_REQUIRED = ("Via", "From", "To", "Call-ID", "CSeq")
_SINGLE_KEYS = tuple((name, name.lower()) for name in _SINGLE)
_REQUIRED_KEYS = tuple((name, name.lower()) for name in _REQUIRED)


def canonical_name(name: str) -> str:
    """The long, conventionally capitalised name of a header (``i`` → ``Call-ID``).

    Unknown names are returned unchanged (they still compare case-insensitively).
    """
    lower = name.lower()
    if len(lower) == 1 and lower in _COMPACT:
        return _COMPACT[lower]
    return _CANONICAL.get(lower, name)


# The lookup key of a header name as callers spell it (``"Via"``, ``"v"``, ``"call-id"``):
# its canonical name, lower-cased. Memoised, since the same few names are looked up for every
# message; bounded, since a name may also come from the network.
_KEYS: dict[str, str] = {}
_MAX_KEYS = 4096


def _key(name: str) -> str:
    key = _KEYS.get(name)
    if key is None:
        key = canonical_name(name).lower()
        if len(_KEYS) < _MAX_KEYS:
            _KEYS[name] = key
    return key


class Headers:
    """An ordered, case-insensitive multi-map of header values.

    Each entry is one header *value*: a list header received as ``Via: a, b`` holds two
    entries. Names are stored canonicalised (:func:`canonical_name`). Values are checked for
    line breaks, so nothing set here can inject a header.

    Reads go through an index (lower-cased name → values) built on the first read, and the
    typed views of :class:`Message` keep what they parsed here; any change drops both. A parsed
    message is read a few dozen times on its way through the stack and changed rarely.
    """

    __slots__ = ("_index", "_items", "_parsed")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = []
        self._index: dict[str, tuple[str, ...]] | None = None
        self._parsed: dict[str, Any] = {}
        for name, value in items:
            self.add(name, value)

    @classmethod
    def _trusted(cls, items: list[tuple[str, str]]) -> Headers:
        headers = cls.__new__(cls)
        headers._items = items
        headers._index = None
        headers._parsed = {}
        return headers

    def _changed(self, key: str) -> None:
        """Header ``key`` (lower-cased canonical name) changed: the index goes, and the typed
        views parsed from that header (a request's received/rport stamp on its Via must not
        make its From, To and CSeq parsed again)."""
        self._index = None
        parsed = self._parsed
        if parsed:
            for memo in _MEMOS_OF.get(key, ()):
                parsed.pop(memo, None)

    def forget_views(self) -> None:
        """Drop the index and the typed views (rebuilt on the next read): for a message
        kept long after it was handled, so that the garbage collector has fewer objects to
        scan."""
        self._index = None
        if self._parsed:
            self._parsed = {}

    def _index_map(self) -> dict[str, tuple[str, ...]]:
        """Lower-cased name → values, built on the first read after a change. Tuples, not
        lists: a tuple of strings leaves the garbage collector's view after its first
        collection, and a message lives through several (docs/benchmarks.md, "The third
        pass")."""
        index = self._index
        if index is None:
            index = {}
            for n, v in self._items:
                key = n.lower()
                values = index.get(key)
                index[key] = (v,) if values is None else (*values, v)
            self._index = index
        return index

    def _values(self, name: str) -> tuple[str, ...] | None:
        # Inlined lookups: this runs about a hundred times per call.
        index = self._index
        if index is None:
            index = self._index_map()
        key = _KEYS.get(name)
        if key is None:
            key = _key(name)
        return index.get(key)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        return self._values(name) is not None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return [(n.lower(), v) for n, v in self._items] == [(n.lower(), v) for n, v in other._items]

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"

    def copy(self) -> Headers:
        return Headers._trusted(list(self._items))

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name``, or ``default``."""
        # _values() inlined: the most frequent read of a message.
        index = self._index
        if index is None:
            index = self._index_map()
        key = _KEYS.get(name)
        values = index.get(_key(name) if key is None else key)
        return default if values is None else values[0]

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name``, in order."""
        values = self._values(name)
        return [] if values is None else list(values)

    def count(self, name: str) -> int:
        """How many values ``name`` has."""
        values = self._values(name)
        return 0 if values is None else len(values)

    def add(self, name: str, value: str) -> None:
        """Append a value (after any existing ones)."""
        # The common case inlined (a name checked before, a value without a line break, a
        # message being built: nothing indexed or parsed yet): about 30 adds per call.
        canonical = _CHECKED.get(name)
        if canonical is None or "\r" in value or "\n" in value:
            item = self._checked(name, value)
        else:
            item = (canonical, value)
        self._items.append(item)
        if self._index is not None or self._parsed:
            self._changed(item[0].lower())

    def prepend(self, name: str, value: str) -> None:
        """Insert a value before every other header (a new top Via, a Record-Route)."""
        item = self._checked(name, value)
        self._items.insert(0, item)
        self._changed(item[0].lower())

    def set(self, name: str, value: str) -> None:
        """Replace every value of ``name`` by one, kept at the place of the first."""
        item = self._checked(name, value)
        key = item[0].lower()
        self._changed(key)
        for i, (n, _) in enumerate(self._items):
            if n.lower() == key:
                self._items[i] = item
                self._items[i + 1 :] = [x for x in self._items[i + 1 :] if x[0].lower() != key]
                return
        self._items.append(item)

    def replace_first(self, name: str, value: str) -> None:
        """Replace the first value of ``name`` in place (or append if there is none)."""
        item = self._checked(name, value)
        key = item[0].lower()
        self._changed(key)
        for i, (n, _) in enumerate(self._items):
            if n.lower() == key:
                self._items[i] = item
                return
        self._items.append(item)

    def remove(self, name: str) -> None:
        """Remove every value of ``name`` (no error if there is none)."""
        key = _key(name)
        self._items = [x for x in self._items if x[0].lower() != key]
        self._changed(key)

    def pop_first(self, name: str) -> str | None:
        """Remove and return the first value of ``name`` (e.g. the top Route)."""
        key = _key(name)
        for i, (n, v) in enumerate(self._items):
            if n.lower() == key:
                del self._items[i]
                self._changed(key)
                return v
        return None

    @staticmethod
    def _checked(name: str, value: str) -> tuple[str, str]:
        canonical = _CHECKED.get(name)
        if canonical is None:
            if not is_token(name):
                raise LocalProtocolError(f"invalid header name {name!r}")
            canonical = canonical_name(name)
            if len(_CHECKED) < _MAX_KEYS:
                _CHECKED[name] = canonical
        if "\r" in value or "\n" in value:
            raise LocalProtocolError(f"line break in the value of header {name!r}")
        return canonical, value


# A header (lower-cased canonical name) → the typed views of Message parsed from it, which a
# change of that header makes stale. Every key _memo() is called with is listed here.
_MEMOS_OF: dict[str, tuple[str, ...]] = {
    "via": ("vias", "top_via"),
    "from": ("from",),
    "to": ("to",),
    "call-id": ("call_id",),
    "cseq": ("cseq",),
    "contact": ("contacts",),
    "record-route": ("record_route",),
    "route": ("route",),
    "max-forwards": ("max_forwards",),
    "expires": ("expires",),
}

# A header name set locally, already checked to be a token → its canonical name (bounded).
_CHECKED: dict[str, str] = {}


# ---- typed values ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CSeq:
    """``CSeq: <number> <method>``."""

    number: int
    method: str

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


_CSEQ = re.compile(r"([0-9]+)[ \t]+(\S+)")
_DATE = re.compile(
    r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} "
    r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4} "
    r"[0-9]{2}:[0-9]{2}:[0-9]{2} GMT"
)
_MAX_CSEQ = 2**31 - 1
_MAX_DELTA_SECONDS = 2**32 - 1


def _parse_cseq(value: str) -> CSeq:
    match = _CSEQ.fullmatch(value)
    if match is None or not is_token(match.group(2)):
        raise SipParseError("Malformed CSeq header")
    number = int(match.group(1)) if len(match.group(1)) <= 12 else _MAX_CSEQ + 1
    if number > _MAX_CSEQ:
        raise SipParseError("CSeq number out of range")
    return CSeq(number, match.group(2))


def _parse_uint(value: str, name: str, maximum: int) -> int:
    if not value or not value.isascii() or not value.isdigit():
        raise SipParseError(f"Malformed {name} header")
    if len(value.lstrip("0")) > 12 or int(value) > maximum:
        raise SipParseError(f"{name} value out of range")
    return int(value)


_T = TypeVar("_T")


def _memo(headers: Headers, key: str, make: Callable[[Headers], _T]) -> _T:
    """``make(headers)``, parsed once per unchanged :class:`Headers` (a change forgets it).

    The typed views of :class:`Message` read ``headers._parsed`` first themselves (a hit costs
    one dictionary lookup, no call) and come here on a miss."""
    parsed = headers._parsed
    if key in parsed:
        return cast(_T, parsed[key])
    value = parsed[key] = make(headers)
    return value


_MISSING: Any = object()


def _required(headers: Headers, name: str) -> str:
    value = headers.get(name)
    if value is None:
        raise SipParseError(f"Missing {name} header")
    return value


def _vias(headers: Headers) -> tuple[Via, ...]:
    return tuple(map(parse_via, headers.get_all("Via")))


def _top_via(headers: Headers) -> Via:
    return parse_via(_required(headers, "Via"))


def _call_id(headers: Headers) -> str:
    return _required(headers, "Call-ID")


def _cseq(headers: Headers) -> CSeq:
    return _parse_cseq(_required(headers, "CSeq"))


def _from(headers: Headers) -> NameAddress:
    return parse_name_addr(_required(headers, "From"), "From")


def _to(headers: Headers) -> NameAddress:
    return parse_name_addr(_required(headers, "To"), "To")


def _contacts(headers: Headers) -> tuple[NameAddress, ...]:
    values = headers._values("Contact")
    if not values:
        return ()
    if "*" in values:
        if len(values) > 1:
            raise SipParseError("Contact '*' mixed with other contacts")
        return ()
    if len(values) == 1:
        return (parse_name_addr(values[0], "Contact"),)
    return tuple([parse_name_addr(v, "Contact") for v in values])


def _record_route(headers: Headers) -> tuple[NameAddress, ...]:
    return tuple(parse_name_addr(v, "Record-Route") for v in headers.get_all("Record-Route"))


def _route(headers: Headers) -> tuple[NameAddress, ...]:
    return tuple(parse_name_addr(v, "Route") for v in headers.get_all("Route"))


def _max_forwards(headers: Headers) -> int | None:
    value = headers.get("Max-Forwards")
    return None if value is None else _parse_uint(value, "Max-Forwards", 255)


def _expires(headers: Headers) -> int | None:
    value = headers.get("Expires")
    return None if value is None else _parse_uint(value, "Expires", _MAX_DELTA_SECONDS)


class Message:
    """What requests and responses share: headers, a body, and typed header accessors.

    The accessors parse a header the first time it is read and keep the result in the
    :class:`Headers` until they change (messages are mutable). On a message that came from
    :func:`parse_message` they cannot fail for the validated headers; on one built locally they
    raise :class:`SipParseError` if a header was set to nonsense.
    """

    __slots__ = ()
    headers: Headers
    body: bytes
    version: str

    # -- the typed views
    @property
    def vias(self) -> list[Via]:
        return list(_memo(self.headers, "vias", _vias))

    @property
    def top_via(self) -> Via:
        value: Via = self.headers._parsed.get("top_via", _MISSING)
        return _memo(self.headers, "top_via", _top_via) if value is _MISSING else value

    @property
    def call_id(self) -> str:
        value: str = self.headers._parsed.get("call_id", _MISSING)
        return _memo(self.headers, "call_id", _call_id) if value is _MISSING else value

    @property
    def cseq(self) -> CSeq:
        value: CSeq = self.headers._parsed.get("cseq", _MISSING)
        return _memo(self.headers, "cseq", _cseq) if value is _MISSING else value

    @property
    def from_(self) -> NameAddress:
        value: NameAddress = self.headers._parsed.get("from", _MISSING)
        return _memo(self.headers, "from", _from) if value is _MISSING else value

    @property
    def to(self) -> NameAddress:
        value: NameAddress = self.headers._parsed.get("to", _MISSING)
        return _memo(self.headers, "to", _to) if value is _MISSING else value

    @property
    def contact_is_star(self) -> bool:
        """True for ``Contact: *`` (a REGISTER removing every binding)."""
        return self.headers.get_all("Contact") == ["*"]

    @property
    def contacts(self) -> list[NameAddress]:
        """Every Contact value; ``[]`` when there is none or for ``Contact: *``."""
        return list(_memo(self.headers, "contacts", _contacts))

    @property
    def record_route(self) -> list[NameAddress]:
        return list(_memo(self.headers, "record_route", _record_route))

    @property
    def route(self) -> list[NameAddress]:
        return list(_memo(self.headers, "route", _route))

    @property
    def max_forwards(self) -> int | None:
        return _memo(self.headers, "max_forwards", _max_forwards)

    @property
    def expires(self) -> int | None:
        return _memo(self.headers, "expires", _expires)

    @property
    def content_type(self) -> str | None:
        """The media type, lower-cased, without parameters (``application/sdp``)."""
        value = self.headers.get("Content-Type")
        return None if value is None else value.split(";", 1)[0].strip(" \t").lower()

    def _required(self, name: str) -> str:
        return _required(self.headers, name)

    # -- serialisation
    def start_line(self) -> str:
        raise NotImplementedError

    def to_bytes(self, *, compact: bool = False) -> bytes:
        """Serialise canonically. ``compact`` uses the one-letter names where they exist."""
        lines = [self.start_line()]
        length = str(len(self.body))
        seen_length = False
        for name, value in self.headers:
            if name == "Content-Length":
                if seen_length:
                    continue
                seen_length = True
                value = length
            if compact:
                name = _COMPACT_OF.get(name.lower(), name)
            lines.append(f"{name}: {value}")
        if not seen_length:
            lines.append(("l" if compact else "Content-Length") + ": " + length)
        lines.append("")
        lines.append("")
        head = "\r\n".join(lines).encode("utf-8", "surrogateescape")
        return head + self.body

    def __bytes__(self) -> bytes:
        return self.to_bytes()


@dataclass(eq=True, slots=True, repr=False)
class Request(Message):
    """A SIP request. ``uri`` is the Request-URI."""

    method: str
    uri: Uri
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = SIP_VERSION

    def start_line(self) -> str:
        return f"{self.method} {self.uri} {self.version}"

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri} {self.headers.get('Call-ID')!r}>"


@dataclass(eq=True, slots=True, repr=False)
class Response(Message):
    """A SIP response."""

    status: int
    reason: str = ""
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = SIP_VERSION

    def start_line(self) -> str:
        return f"{self.version} {self.status} {self.reason}"

    @property
    def is_provisional(self) -> bool:
        return self.status < 200

    @property
    def is_success(self) -> bool:
        return 200 <= self.status < 300

    @property
    def is_final(self) -> bool:
        return self.status >= 200

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason!r} {self.headers.get('CSeq')!r}>"


# ---- parsing -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ParserLimits:
    """Bounds on what the parser accepts. Defaults fit every real phone with room to spare."""

    max_message_bytes: int = 65_535  # the largest UDP payload; also per TCP frame
    max_head_bytes: int = 32_768
    max_line_bytes: int = 8_192  # one physical line
    max_headers: int = 200  # header values, after splitting lists
    max_body_bytes: int = 32_768


DEFAULT_LIMITS = ParserLimits()


@dataclass(frozen=True, slots=True)
class PartialRequest:
    """What the parser knew of a malformed request: enough, perhaps, to answer it."""

    headers: Headers


_HEAD_END = re.compile(rb"\r?\n\r?\n")
# A control character in a head other than HTAB and a line break's CRLF or LF (a CR alone is
# one: it stays inside a line).
_HEAD_CTL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\r(?!\n)")
_LINE_SPLIT = re.compile(r"\r?\n")
_STATUS_LINE = re.compile(r"SIP/([0-9]+\.[0-9]+) ([0-9]+)(?: (.*))?", re.IGNORECASE | re.DOTALL)
_VERSION = re.compile(r"SIP/([0-9]+)\.([0-9]+)", re.IGNORECASE)
_REASON_CTL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # a control character but HTAB


def is_keepalive(data: bytes) -> bool:
    """True for a datagram that is only CRLFs/white space (an RFC 5626 ping, or a NAT nudge)."""
    return not data.strip(b"\r\n \t\x00")


def parse_message(data: bytes, limits: ParserLimits = DEFAULT_LIMITS) -> Request | Response:
    """Parse one complete SIP message (a UDP datagram or one TCP frame).

    Raises :class:`SipParseError` — and only that — if the bytes are not an acceptable message.
    """
    if len(data) > limits.max_message_bytes:
        raise SipParseError("Message Too Large", 513)
    start = 0
    while data[start : start + 1] in (b"\r", b"\n"):
        start += 1
    match = _HEAD_END.search(data, start)
    if match is None:
        head_bytes, rest, terminated = data[start:], b"", False
    else:
        head_bytes, rest, terminated = data[start : match.start()], data[match.end() :], True
    if not head_bytes:
        raise SipParseError("Empty message")
    if len(head_bytes) > limits.max_head_bytes:
        raise SipParseError("Message Too Large (header section)", 513)
    head = head_bytes.decode("utf-8", "surrogateescape")
    lines = _LINE_SPLIT.split(head)
    start_line = lines[0]
    if len(start_line) > limits.max_line_bytes:
        raise SipParseError("Message Too Large (start line)", 513)
    is_response = start_line[:4].upper() == "SIP/"
    # One search of the whole head instead of one per header value: without a control
    # character anywhere (but the line breaks) no value can hold one.
    careful = _HEAD_CTL.search(head) is not None
    try:
        headers = _parse_header_lines(
            lines[1:], limits, careful, folded="\n " in head or "\n\t" in head
        )
    except SipParseError as exc:
        if is_response:
            exc.partial = None
        raise
    try:
        if not terminated:
            raise SipParseError("Missing empty line after the header section")
        if is_response:
            message: Request | Response = _parse_status_line(start_line, headers)
        else:
            message = _parse_request_line(start_line, headers)
        _validate(message)
        message.body = _cut_body(message, rest, limits)
    except SipParseError as exc:
        if not is_response:
            exc.partial = PartialRequest(headers)
        raise
    return message


def _parse_header_lines(
    lines: list[str], limits: ParserLimits, careful: bool = True, *, folded: bool = True
) -> Headers:
    """Unfold and split the header lines. On a bad line, the error carries the well-formed
    headers (as a :class:`PartialRequest`) so that the request can still be answered.
    ``folded=False`` says no line is a continuation (the head holds no CRLF then SP or HTAB)."""
    max_line = limits.max_line_bytes
    if folded:
        unfolded: list[str] = []
        for line in lines:
            if len(line) > max_line:
                raise SipParseError("Message Too Large (header line)", 513)
            if line[:1] in (" ", "\t"):
                if not unfolded:
                    raise SipParseError("Continuation line before the first header")
                unfolded[-1] = unfolded[-1].rstrip(" \t") + " " + line.lstrip(" \t")
            else:
                unfolded.append(line)
        lines = unfolded
    elif lines and len(max(lines, key=len)) > max_line:
        raise SipParseError("Message Too Large (header line)", 513)
    items: list[tuple[str, str]] = []
    append = items.append
    first_error: SipParseError | None = None
    max_headers = limits.max_headers
    names = _NAMES
    for line in lines:
        # The common line inlined: a name seen before, a colon, a value that is one element
        # (_parse_header_line does everything else, and the careful checks).
        name, colon, value = line.partition(":")
        known = names.get(name)
        if known is not None and colon and not careful:
            value = value.strip(" \t")
            if not known[1] or not value or _LIST_SYNTAX.search(value) is None:
                append((known[0], value))
                if len(items) > max_headers:
                    raise SipParseError("Too Many Header Fields", 513)
                continue
        try:
            _parse_header_line(line, items, careful)
        except SipParseError as exc:
            first_error = first_error or exc
        if len(items) > max_headers:
            raise SipParseError("Too Many Header Fields", 513)
    headers = Headers._trusted(items)
    if first_error is not None:
        first_error.partial = PartialRequest(headers)
        raise first_error
    return headers


# A header name as received → (its canonical name, whether its value is a list). Memoised
# and bounded like ``_KEYS``: phones send the same few dozen names.
_NAMES: dict[str, tuple[str, bool]] = {}
# The characters that make a header value need the careful split (a list header holding a
# comma, a quote or a bracket); values without them are one element.
_LIST_SYNTAX = re.compile(r'[,"<]')


def _parse_header_line(line: str, items: list[tuple[str, str]], careful: bool = True) -> None:
    """Append the value(s) of one unfolded header line to ``items`` (``careful``: the head
    holds a control character, so look for one in this value)."""
    name, colon, value = line.partition(":")
    known = _NAMES.get(name)
    if known is None:
        raw = name.rstrip(" \t")
        if not colon or not is_token(raw):
            raise SipParseError("Malformed header line")
        canonical = canonical_name(raw)
        known = (canonical, canonical.lower() in _LIST_HEADERS)
        if len(_NAMES) < _MAX_KEYS:
            _NAMES[name] = known
    elif not colon:
        raise SipParseError("Malformed header line")
    name, is_list = known
    value = value.strip(" \t")
    if careful and has_ctl(value):
        raise SipParseError(f"Control character in {name} header")
    if is_list and value and _LIST_SYNTAX.search(value) is not None:
        parts = split_list(value)
        if any(not part for part in parts):
            raise SipParseError(f"Empty element in {name} header")
        items.extend((name, part) for part in parts)
    else:
        items.append((name, value))


def _parse_status_line(line: str, headers: Headers) -> Response:
    match = _STATUS_LINE.fullmatch(line)
    if match is None:
        raise SipParseError("Malformed status line")
    if match.group(1) != "2.0":
        raise SipParseError("Version Not Supported", 505)
    code = match.group(2)
    if len(code) != 3 or not 100 <= int(code) <= 699:
        raise SipParseError("Status code out of range")
    reason = match.group(3) or ""
    if _REASON_CTL.search(reason) is not None:
        raise SipParseError("Control character in reason phrase")
    return Response(int(code), reason, headers)


def _parse_request_line(line: str, headers: Headers) -> Request:
    parts = line.split(" ")
    if len(parts) != 3 or not all(parts):
        raise SipParseError("Malformed Request-Line")
    method, uri_text, version = parts
    if not is_token(method):
        raise SipParseError("Malformed method")
    version_match = _VERSION.fullmatch(version)
    if version_match is None:
        raise SipParseError("Malformed SIP version")
    if version_match.group(1, 2) != ("2", "0"):
        raise SipParseError("Version Not Supported", 505)
    if uri_text.startswith("<"):
        raise SipParseError("Request-URI enclosed in '<>'")
    try:
        uri = parse_uri(uri_text)
    except SipParseError as exc:
        raise SipParseError(f"Malformed Request-URI ({exc.reason})") from None
    if isinstance(uri, SipUri) and uri.headers:
        # RFC 3261 §19.1.1 table: headers are not allowed in a Request-URI (RFC 4475 escruri).
        raise SipParseError("Headers in Request-URI")
    return Request(method, uri, headers, version=SIP_VERSION)


def _validate(message: Request | Response) -> None:
    headers = message.headers
    index = headers._index_map()
    for name, key in _SINGLE_KEYS:
        values = index.get(key)
        if values is not None and len(values) > 1:
            raise SipParseError(f"Multiple {name} header fields")
    for name, key in _REQUIRED_KEYS:
        if key not in index:
            raise SipParseError(f"Missing {name} header")
    # Parsing is the validation; what it parses stays memoised for the typed views (written
    # here directly: the memo of a message just parsed is empty).
    parsed = headers._parsed
    vias = parsed["vias"] = tuple(map(parse_via, index["via"]))
    parsed["top_via"] = vias[0]
    parsed["from"] = parse_name_addr(index["from"][0], "From")
    parsed["to"] = parse_name_addr(index["to"][0], "To")
    call_id = index["call-id"][0]
    local, at, host = call_id.partition("@")
    if not is_word(local) or (at and not is_word(host)):
        raise SipParseError("Malformed Call-ID header")
    parsed["call_id"] = call_id
    cseq = parsed["cseq"] = _parse_cseq(index["cseq"][0])
    if isinstance(message, Request) and cseq.method != message.method:
        raise SipParseError("CSeq method does not match the request method")
    value = index.get("max-forwards")
    parsed["max_forwards"] = None if value is None else _parse_uint(value[0], "Max-Forwards", 255)
    value = index.get("expires")
    parsed["expires"] = (
        None if value is None else _parse_uint(value[0], "Expires", _MAX_DELTA_SECONDS)
    )
    parsed["contacts"] = _contacts(headers)
    if "route" in index:
        _memo(headers, "route", _route)
    if "record-route" in index:
        _memo(headers, "record_route", _record_route)
    date = index.get("date")
    if date is not None and _DATE.fullmatch(date[0]) is None:
        raise SipParseError("Malformed Date header")
    length = index.get("content-length")
    if length is not None:
        _parse_uint(length[0], "Content-Length", 2**31)


def _cut_body(message: Message, rest: bytes, limits: ParserLimits) -> bytes:
    length_text = message.headers.get("Content-Length")
    if length_text is None:
        body = rest  # a datagram without Content-Length: the body is the rest (RFC 3261 §18.3)
    else:
        length = int(length_text)
        if length > len(rest):
            raise SipParseError("Content-Length Larger Than Message")
        body = rest[:length]  # extra octets in the datagram are discarded
    if len(body) > limits.max_body_bytes:
        raise SipParseError("Request Entity Too Large", 413)
    return body


# ---- building responses ------------------------------------------------------------------


def new_tag() -> str:
    """A fresh From/To tag (RFC 3261 §19.3: at least 32 bits of randomness)."""
    return random_hex(6)


# Random bytes from the kernel, drawn 4 KiB at a time: a call draws a dozen tags, branches and
# Call-IDs, and one system call each was a measurable part of a call's CPU.
_POOL_SIZE = 4096
_pool = b""
_pool_at = 0


def random_bytes(nbytes: int) -> bytes:
    """``secrets.token_bytes(nbytes)``: as unpredictable, from a pool of ``os.urandom``."""
    global _pool, _pool_at
    start = _pool_at
    end = start + nbytes
    if end > len(_pool):
        _pool = os.urandom(max(_POOL_SIZE, nbytes))
        start, end = 0, nbytes
    _pool_at = end
    return _pool[start:end]


def random_hex(nbytes: int) -> str:
    """``secrets.token_hex(nbytes)``: as unpredictable, from the same pool."""
    return random_bytes(nbytes).hex()


def random_int(nbytes: int) -> int:
    """``secrets.randbits(8 * nbytes)``: uniform in ``[0, 256**nbytes)``, from the pool."""
    return int.from_bytes(random_bytes(nbytes))


def _forget_pool() -> None:
    # A forked child must not hand out its parent's next tags.
    global _pool, _pool_at
    _pool, _pool_at = b"", 0


os.register_at_fork(after_in_child=_forget_pool)


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> Response:
    """Build a response to ``request`` per RFC 3261 §8.2.6.

    Copies every Via (in order), From, To, Call-ID and CSeq; a Timestamp for 100 Trying. If the
    request's To has no tag, ``to_tag`` is added to it (give one for any response but 100).
    ``headers`` are appended after the copied ones.
    """
    # Copied values were checked when they entered the request's Headers: no second check.
    source = request.headers
    items = [("Via", via) for via in source.get_all("Via")]
    tagged: str | None = None  # the To with our tag, in place of the request's
    if to_tag is not None and status > 100:
        to = request.to
        if to.tag is None:
            tagged = str(to.with_tag(to_tag))
    for name in ("From", "To", "Call-ID", "CSeq"):
        value = source.get(name)
        if value is not None:
            items.append((name, tagged if name == "To" and tagged is not None else value))
    out = Headers._trusted(items)
    if status == 100:
        timestamp = request.headers.get("Timestamp")
        if timestamp is not None:
            out.add("Timestamp", timestamp)
    elif status < 300 and request.method in ("INVITE", "SUBSCRIBE"):
        # §12.1.1: a response that may create a dialog carries the request's Record-Route, in
        # order, so the caller's ACK and BYE come back through the proxies that asked to stay.
        for route in request.headers.get_all("Record-Route"):
            out.add("Record-Route", route)
    for name, extra in headers:
        out.add(name, extra)
    return Response(status, reason or REASON_PHRASES.get(status, ""), out, body)


def error_response(error: SipParseError, *, to_tag: str | None = None) -> Response | None:
    """The response to send back for a malformed request, if one can be built.

    Possible when the error carries a :class:`PartialRequest` with Via, From, To, Call-ID and
    CSeq present (their values are copied as they came) and the request is not an ACK. Returns
    ``None`` otherwise: the message is dropped, as RFC 3261 §18.3 asks for responses.
    """
    partial = error.partial
    if not isinstance(partial, PartialRequest):
        return None
    headers = partial.headers
    if any(name not in headers for name in _REQUIRED):
        return None
    cseq = headers.get("CSeq") or ""
    if cseq.rstrip().upper().endswith(" ACK"):
        return None
    out = Headers._trusted(
        [(n, v) for n, v in headers if n in ("Via", "From", "To", "Call-ID", "CSeq")]
    )
    to = headers.get("To") or ""
    if ";tag=" not in to.replace(" ", "").lower():
        out.set("To", f"{to};tag={to_tag or new_tag()}")
    # The first line of From/To/Call-ID/CSeq only: a duplicated header (multi01) must not
    # make the answer as broken as the request.
    for name in ("From", "To", "Call-ID", "CSeq"):
        first = out.get(name)
        if first is not None:
            out.set(name, first)
    return Response(error.status, error.reason, out)


# ---- stream framing ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Frame:
    """A complete, valid message cut from the stream."""

    message: Request | Response


@dataclass(frozen=True, slots=True)
class MalformedFrame:
    """A complete frame that is not a valid message. The stream goes on; answer it with
    :func:`error_response` if that gives a response."""

    error: SipParseError


@dataclass(frozen=True, slots=True)
class KeepAlivePing:
    """A double-CRLF keep-alive (RFC 5626 §3.5.1): answer with a single CRLF."""


@dataclass(frozen=True, slots=True)
class FramingError:
    """Message boundaries are lost (no or bad Content-Length, oversized header section).

    Terminal: the framer accepts no more bytes; answer if possible, then close the connection.
    """

    error: SipParseError


FramerEvent = Frame | MalformedFrame | KeepAlivePing | FramingError

_CONTENT_LENGTH = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*(.*?)[ \t]*\r?$", re.I | re.M)


class StreamFramer:
    """Cuts a byte stream (TCP) into SIP messages by Content-Length.

    Feed it bytes as they arrive; it returns the events that the new bytes completed. CRLFs
    before a message are skipped (RFC 3261 §7.5). A missing Content-Length counts as 0.
    """

    def __init__(self, limits: ParserLimits = DEFAULT_LIMITS) -> None:
        self._limits = limits
        self._buffer = bytearray()
        self._broken = False

    @property
    def broken(self) -> bool:
        return self._broken

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[FramerEvent]:
        if self._broken:
            raise LocalProtocolError("feed() after a FramingError: close the connection")
        self._buffer += data
        events: list[FramerEvent] = []
        while True:
            event = self._next()
            if event is None:
                return events
            events.append(event)
            if isinstance(event, FramingError):
                self._broken = True
                self._buffer.clear()
                return events

    def _next(self) -> FramerEvent | None:
        buffer = self._buffer
        while buffer and buffer[0] in (13, 10):
            if buffer.startswith(b"\r\n\r\n"):
                del buffer[:4]
                return KeepAlivePing()
            if bytes(buffer) in (b"\r", b"\r\n", b"\r\n\r"):
                return None  # perhaps the start of a ping: wait for the rest
            del buffer[: 2 if buffer.startswith(b"\r\n") else 1]
        if not buffer:
            return None
        match = _HEAD_END.search(buffer)
        if match is None:
            if len(buffer) > self._limits.max_head_bytes:
                return FramingError(SipParseError("Message Too Large (header section)", 513))
            return None
        if match.start() > self._limits.max_head_bytes:
            return FramingError(SipParseError("Message Too Large (header section)", 513))
        head = bytes(buffer[: match.start()])
        values = {v.strip() for v in _CONTENT_LENGTH.findall(head)}
        if len(values) > 1:
            return FramingError(
                SipParseError("Multiple Content-Length header fields", partial=_partial(head))
            )
        length_text = values.pop() if values else b"0"
        if not length_text.isdigit() or len(length_text) > 9:
            return FramingError(
                SipParseError("Malformed Content-Length header", partial=_partial(head))
            )
        length = int(length_text)
        if length > self._limits.max_body_bytes:
            return FramingError(
                SipParseError("Request Entity Too Large", 413, partial=_partial(head))
            )
        end = match.end() + length
        if len(buffer) < end:
            return None
        frame = bytes(buffer[:end])
        del buffer[:end]
        try:
            return Frame(parse_message(frame, self._limits))
        except SipParseError as exc:
            return MalformedFrame(exc)


def _partial(head: bytes) -> PartialRequest | None:
    """Headers of a head the framer gave up on, so that it can still be answered."""
    try:
        message = parse_message(head + b"\r\n\r\n")
    except SipParseError as exc:
        return exc.partial if isinstance(exc.partial, PartialRequest) else None
    return PartialRequest(message.headers) if isinstance(message, Request) else None
