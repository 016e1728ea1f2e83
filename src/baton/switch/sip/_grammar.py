"""RFC 3261 §25 character classes and a small scanner shared by the SIP parsers.

Rules kept here:

* Every function either returns a value or raises :class:`~baton.switch.sip.errors.SipParseError`
  — never ``IndexError``, ``ValueError`` or anything else — so the message parser can promise
  that arbitrary bytes produce a message or a :class:`SipParseError`.
* Inputs are header values that were already unfolded (every ``CRLF 1*WSP`` replaced by one
  space), so "linear white space" here is just spaces and tabs.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Iterator

from .errors import SipParseError

ALNUM = frozenset(string.ascii_letters + string.digits)
MARK = frozenset("-_.!~*'()")
UNRESERVED = ALNUM | MARK
TOKEN = ALNUM | frozenset("-.!%*_+`'~")
# word (Call-ID): token plus a few separators that have no grouping meaning there.
WORD = TOKEN | frozenset('()<>:\\"/[]?{}')
WS = frozenset(" \t")
HEXDIG = frozenset(string.hexdigits)


# The same classes as regular expressions, for the checks run on every header of every
# message (a character-by-character loop costs several times more). ``[A-Za-z0-9]`` is ASCII.
_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_WORD_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]+")
_CTL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def is_token(text: str) -> bool:
    return _TOKEN_RE.fullmatch(text) is not None


def is_word(text: str) -> bool:
    return _WORD_RE.fullmatch(text) is not None


def has_ctl(text: str) -> bool:
    """True if ``text`` holds a control character (other than HTAB) that is not quoted-pair.

    RFC 3261 allows CTLs in a header value only as a quoted-pair (``\\`` then the octet) inside
    a quoted string; RFC 4475's ``intmeth`` has ``\\`` NUL and ``\\`` DEL in a display name.
    """
    if _CTL_RE.search(text) is None:
        return False
    escaped = False
    for c in text:
        if escaped:
            escaped = False
            continue
        if c == "\\":
            escaped = True
            continue
        if (c < " " and c != "\t") or c == "\x7f":
            return True
    return False


def quote(text: str) -> str:
    """Render ``text`` as a quoted-string, escaping ``"``, ``\\`` and control characters.

    CR and LF cannot be carried in a quoted-string at all; they become spaces (a display name is
    not the place for a line break, and letting one through would inject a header).
    """
    out = ['"']
    for c in text:
        if c in "\r\n":
            out.append(" ")
        elif c in '"\\' or c < " " or c == "\x7f":
            out.append("\\" + c)
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


class Scanner:
    """A cursor over one string, with the few moves a SIP grammar needs."""

    __slots__ = ("pos", "text", "what")

    def __init__(self, text: str, what: str) -> None:
        self.text = text
        self.pos = 0
        self.what = what  # names the element in error messages: "Via", "Contact", "URI"

    def error(self, problem: str) -> SipParseError:
        return SipParseError(f"Malformed {self.what}: {problem}")

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip_ws(self) -> bool:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in WS:
            self.pos += 1
        return self.pos > start

    def accept(self, char: str) -> bool:
        if self.peek() == char:
            self.pos += 1
            return True
        return False

    def expect(self, char: str) -> None:
        if not self.accept(char):
            found = repr(self.peek()) if self.peek() else "end of value"
            raise self.error(f"expected {char!r}, found {found}")

    def take_while(self, allowed: frozenset[str]) -> str:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in allowed:
            self.pos += 1
        return self.text[start : self.pos]

    def take_until(self, stops: str) -> str:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in stops:
            self.pos += 1
        return self.text[start : self.pos]

    def token(self, what: str) -> str:
        value = self.take_while(TOKEN)
        if not value:
            raise self.error(f"expected a {what}")
        return value

    def quoted_string(self) -> str:
        """Consume a quoted-string at the cursor; return its *unquoted* content."""
        self.expect('"')
        out: list[str] = []
        while True:
            if self.at_end():
                raise self.error("unterminated quoted string")
            c = self.text[self.pos]
            self.pos += 1
            if c == '"':
                return "".join(out)
            if c == "\\":
                if self.at_end():
                    raise self.error("unterminated quoted string")
                out.append(self.text[self.pos])
                self.pos += 1
            else:
                out.append(c)

    def quoted_string_raw(self) -> str:
        """Consume a quoted-string; return it *with* its quotes and escapes, as on the wire."""
        start = self.pos
        self.quoted_string()
        return self.text[start : self.pos]


# A param value: token / host (IPv6 reference included) / quoted-string.
_GEN_VALUE = TOKEN | frozenset(":[]")


class Params:
    """Ordered ``;name[=value]`` parameters with case-insensitive names.

    Values are kept exactly as on the wire (a quoted value keeps its quotes); ``None`` is a
    parameter without a value (``;lr``). Immutable: the ``with_``/``without`` methods copy.
    """

    __slots__ = ("_index", "_items", "_text")

    def __init__(self, items: Iterable[tuple[str, str | None]] = ()) -> None:
        self._items: tuple[tuple[str, str | None], ...] = tuple(items)
        # Lower-cased name → the first value, and the rendering: built on first use (a tag, a
        # branch or rport is read several times per message, a Via or To rendered as often).
        self._index: dict[str, str | None] | None = None
        self._text: str | None = None

    def _lookup(self) -> dict[str, str | None]:
        index = self._index
        if index is None:
            index = {}
            for n, v in self._items:
                index.setdefault(n.lower(), v)
            self._index = index
        return index

    def __iter__(self) -> Iterator[tuple[str, str | None]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        index = self._index
        return name.lower() in (self._lookup() if index is None else index)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Params):
            return NotImplemented
        return [(n.lower(), v) for n, v in self._items] == [(n.lower(), v) for n, v in other._items]

    def __hash__(self) -> int:
        return hash(tuple((n.lower(), v) for n, v in self._items))

    def __repr__(self) -> str:
        return f"Params({list(self._items)!r})"

    def get(self, name: str, default: str | None = None) -> str | None:
        """The value of the first parameter called ``name`` (``None`` if it has no value)."""
        index = self._index
        return (self._lookup() if index is None else index).get(name.lower(), default)

    def with_(self, name: str, value: str | None) -> Params:
        """A copy with ``name`` set to ``value`` (replacing it in place, or appended)."""
        key = name.lower()
        items = list(self._items)
        for i, (n, _) in enumerate(items):
            if n.lower() == key:
                items[i] = (n, value)
                return Params(items)
        items.append((name, value))
        return Params(items)

    def without(self, name: str) -> Params:
        key = name.lower()
        return Params((n, v) for n, v in self._items if n.lower() != key)

    def render(self) -> str:
        text = self._text
        if text is None:
            text = self._text = "".join(
                f";{n}" if v is None else f";{n}={v}" for n, v in self._items
            )
        return text


def parse_params(scanner: Scanner, *, stop: str = "") -> Params:
    """Parse ``*( SEMI generic-param )`` at the cursor, up to the end or a ``stop`` character.

    ``SEMI`` and ``EQUAL`` may be surrounded by white space (RFC 3261 §25.1). An empty name
    (``;;``) or a value that is neither token, host nor quoted-string is an error.
    """
    items: list[tuple[str, str | None]] = []
    while True:
        scanner.skip_ws()
        if scanner.at_end() or scanner.peek() in stop:
            return Params(items)
        scanner.expect(";")
        scanner.skip_ws()
        name = scanner.token("parameter name")
        scanner.skip_ws()
        value: str | None = None
        if scanner.accept("="):
            scanner.skip_ws()
            if scanner.peek() == '"':
                value = scanner.quoted_string_raw()
            else:
                value = scanner.take_while(_GEN_VALUE)
                if not value:
                    raise scanner.error(f"parameter {name!r} has an empty value")
        items.append((name, value))


def unquote(value: str | None) -> str | None:
    """The content of a quoted param value (``"a\\"b"`` → ``a"b``); other values unchanged."""
    if value is None or not value.startswith('"'):
        return value
    scanner = Scanner(value, "quoted string")
    result = scanner.quoted_string()
    if not scanner.at_end():
        raise scanner.error("text after closing quote")
    return result


def split_list(value: str) -> list[str]:
    """Split a header value on commas that are outside quotes and angle brackets.

    Elements are stripped. Raises :class:`SipParseError` on an unterminated quote or bracket.
    """
    parts: list[str] = []
    depth = 0
    in_quotes = False
    escaped = False
    start = 0
    for i, c in enumerate(value):
        if in_quotes:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_quotes = False
        elif c == '"':
            in_quotes = True
        elif c == "<":
            depth += 1
        elif c == ">":
            depth = max(0, depth - 1)
        elif c == "," and depth == 0:
            parts.append(value[start:i].strip(" \t"))
            start = i + 1
    if in_quotes:
        raise SipParseError("Unterminated quoted string in header value")
    if depth:
        raise SipParseError("Unterminated '<' in header value")
    parts.append(value[start:].strip(" \t"))
    return parts
