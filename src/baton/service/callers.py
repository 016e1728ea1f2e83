"""Who is calling on a peer line (docs/cluster.md, "Calls between tenants").

A call from another tenant arrives on an anonymous peer line (``peer-3``): to the core it is
that line's leg. The caller is in the INVITE — the calling shard writes the caller's number as
the From user, the caller's id as its display name, and its tenant in ``X-Baton-Tenant`` — and
the edge's proof covers the From number, so what the headers say was said by a shard, not a
phone. The router reads them (:func:`caller_from`) and presents the caller:

* in the journal, as a ``leg.caller`` event (:class:`CallerPresented`), which the records'
  projection writes on the line's leg record (``caller_number``, ``caller_name``,
  ``caller_tenant``);
* in the users API, as the line's ``caller`` while that leg lives (:class:`Callers`), which the
  console shows in place of the line's name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from baton.core.events import Event
from baton.switch.sip.errors import SipError
from baton.switch.sip.peers import TENANT_HEADER
from baton.switch.sip.uri import SipUri, parse_name_addr

__all__ = ["Caller", "CallerPresented", "Callers", "caller_from"]


@dataclass(frozen=True, slots=True)
class Caller:
    """A caller as the call presented them: a number, a name, a tenant (each if known)."""

    number: str | None
    name: str | None = None
    tenant: str | None = None

    def view(self) -> dict[str, Any]:
        return {"number": self.number, "name": self.name, "tenant": self.tenant}


@dataclass(slots=True, kw_only=True)
class CallerPresented(Event):
    """The leg ``leg`` of ``user`` (a peer line) is a call from this caller."""

    kind: ClassVar[str] = "leg.caller"
    user: str
    leg: str
    number: str | None
    name: str | None = None
    tenant: str | None = None

    @property
    def caller(self) -> Caller:
        return Caller(self.number, self.name, self.tenant)


def caller_from(headers: Mapping[str, str]) -> Caller | None:
    """The caller an inbound call's headers present (``None``: no From, or none to read)."""
    text = headers.get("From")
    if not text:
        return None
    try:
        address = parse_name_addr(text, "From")
    except SipError:
        return None
    uri = address.uri
    number = _short(uri.user_text if isinstance(uri, SipUri) else None)
    name = _short(address.display_name)
    if number is None and name is None:
        return None
    return Caller(number, name, _short(headers.get(TENANT_HEADER)))


def _short(text: str | None) -> str | None:
    """Stripped, empty as ``None``, and cut to the records' 64 characters."""
    text = (text or "").strip()[:64]
    return text or None


class Callers:
    """The caller presented on each line, for as long as the leg it came with lives (one entry
    a line: a line's next call replaces it)."""

    def __init__(self) -> None:
        self._by_user: dict[str, tuple[str, Caller]] = {}

    def present(self, user: str, leg: str, caller: Caller) -> None:
        self._by_user[user] = (leg, caller)

    def of(self, user: str, leg: str | None) -> Caller | None:
        """The caller on ``user``'s leg ``leg`` (its live leg), if one was presented."""
        held = self._by_user.get(user)
        if held is None or leg is None or held[0] != leg:
            return None
        return held[1]
