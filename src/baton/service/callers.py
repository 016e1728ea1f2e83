"""Who is at the far end of a peer line (docs/cluster.md, "Calls between tenants").

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

A call *to* another tenant goes out on a free line pointed at the number dialled: the router
keeps that number (:class:`PeerDialled`, ``leg.dialled``) the same way — on the line's leg
record (``dialled_number``), on the flow and CallInfo records (``dialled``), and as the line's
``dialled`` in the users API — so none of them says ``peer-3`` where a number was dialled.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from baton.core.events import Event
from baton.switch.sip.errors import SipError
from baton.switch.sip.peers import TENANT_HEADER
from baton.switch.sip.uri import SipUri, parse_name_addr

__all__ = ["Caller", "CallerPresented", "Callers", "PeerDialled", "caller_from"]


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


@dataclass(slots=True, kw_only=True)
class PeerDialled(Event):
    """The flow ``flow`` calls ``number`` of another tenant on the peer line ``user`` (its next
    outbound leg, which the flow has not placed yet)."""

    kind: ClassVar[str] = "leg.dialled"
    user: str
    number: str
    flow: str


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
    """The caller presented on each line, for as long as the leg it came with lives, or the
    number the line was pointed at for a call out (one entry a line: a line's next call
    replaces it)."""

    def __init__(self) -> None:
        self._by_user: dict[str, tuple[str, Caller]] = {}
        #: line → (its leg once placed, the number dialled)
        self._dialled: dict[str, tuple[str | None, str]] = {}

    def present(self, user: str, leg: str, caller: Caller) -> None:
        self._by_user[user] = (leg, caller)
        self._dialled.pop(user, None)

    def dial(self, user: str, number: str) -> None:
        """The line ``user`` (free: no call, no flow) is about to call ``number``: its next leg
        is that call."""
        self._dialled[user] = (None, number)
        self._by_user.pop(user, None)

    def dialled(self, user: str, leg: str | None) -> str | None:
        """The number ``user``'s leg ``leg`` (its live leg) called, if it is a call out."""
        held = self._dialled.get(user)
        if held is None or leg is None:
            return None
        if held[0] is None:  # the line's first leg since it was pointed at the number
            self._dialled[user] = (leg, held[1])
        elif held[0] != leg:
            return None
        return held[1]

    def of(self, user: str, leg: str | None) -> Caller | None:
        """The caller on ``user``'s leg ``leg`` (its live leg), if one was presented."""
        held = self._by_user.get(user)
        if held is None or leg is None or held[0] != leg:
            return None
        return held[1]
