"""SIP dialogs (RFC 3261 §12–§15), sans-IO: state, in-dialog requests, CANCEL and its race.

Rules
-----
* A dialog is identified by Call-ID, local tag and remote tag (:class:`DialogId`). The UAC
  makes one from a response with a To tag — early from a 1xx, confirmed from a 2xx
  (:meth:`Dialog.from_response`); the UAS from the request it answers (:meth:`Dialog.from_request`).
* The route set comes from Record-Route (reversed on the UAC side), the remote target from
  Contact; both are refreshed by target-refresh requests and their 2xx (re-INVITE, UPDATE).
* Requests we send in a dialog get the next local CSeq (ACK and CANCEL excepted), the dialog's
  tags, Route headers and Request-URI (loose routing, and strict routing when the first route
  lacks ``;lr``). They carry **no Via**: the transport adds the top Via with a fresh branch.
* Requests we receive in a dialog are checked by :meth:`Dialog.receive_request`: a CSeq lower
  than the last one is out of order (500); a request for a dialog we do not know gets 481
  (:meth:`DialogSet.no_such_dialog`).
* Nothing here sends or keeps time; the helpers return messages and outcomes.

Theory of operation
-------------------
:class:`DialogSet` indexes the dialogs of an endpoint. :class:`OutgoingInvite` follows one
INVITE we sent to its end and encodes the two rules a TU most often gets wrong: a CANCEL may
only be sent once a provisional response arrived (RFC 3261 §9.1), and a 2xx that crosses our
CANCEL (or a second 2xx from another fork) must still be ACKed and then ended with BYE
(§15, §13.2.2.4). Its outcomes (:class:`SendRequest`, :class:`SendAck`, :class:`EarlyDialog`,
:class:`Answered`, :class:`AnsweredAfterCancel`, :class:`Rejected`) tell the TU exactly what
to send and what happened.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from .errors import LocalProtocolError
from .message import Headers, Request, Response, make_response, new_tag, random_int
from .uri import NameAddress, SipUri, Uri, parse_name_addr, parse_uri

__all__ = [
    "Answered",
    "AnsweredAfterCancel",
    "Dialog",
    "DialogId",
    "DialogSet",
    "DialogState",
    "EarlyDialog",
    "InviteOutcome",
    "OutgoingInvite",
    "Rejected",
    "SendAck",
    "SendRequest",
    "cancel_responses",
    "make_cancel",
    "reason_value",
]

_TARGET_REFRESH = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"})
_WITH_CONTACT = _TARGET_REFRESH


class DialogState(enum.Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class DialogId(NamedTuple):
    """A dialog's key (RFC 3261 §12): a named tuple, hashed for every in-dialog message."""

    call_id: str
    local_tag: str
    remote_tag: str

    @classmethod
    def for_received_request(cls, request: Request) -> DialogId:
        """The id of the dialog a request we received belongs to (ours is the To tag)."""
        return cls(request.call_id, request.to.tag or "", request.from_.tag or "")

    @classmethod
    def for_received_response(cls, response: Response) -> DialogId:
        """The id of the dialog a response to our request belongs to (ours is the From tag)."""
        return cls(response.call_id, response.from_.tag or "", response.to.tag or "")


def reason_value(protocol: str, cause: int, text: str | None = None) -> str:
    """A Reason header value (RFC 3326), e.g. ``reason_value("preemption", 1, "UA preemption")``
    for a BYE ending a preempted call (RFC 4411)."""
    value = f"{protocol} ;cause={cause}"
    if text is not None:
        value += ' ;text="' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


class Dialog:
    """One dialog, from our side. Create it with :meth:`from_response` (UAC) or
    :meth:`from_request` (UAS)."""

    def __init__(
        self,
        *,
        dialog_id: DialogId,
        state: DialogState,
        local: NameAddress,
        remote: NameAddress,
        remote_target: Uri,
        route_set: list[NameAddress],
        local_cseq: int,
        remote_cseq: int | None,
        local_contact: str,
        secure: bool = False,
    ) -> None:
        self.id = dialog_id
        self.state = state
        self.local = local  # our From (UAC) or To (UAS), with our tag
        self.remote = remote  # theirs, with their tag
        self.remote_target = remote_target
        self.route_set = route_set
        self.local_cseq = local_cseq
        self.remote_cseq = remote_cseq
        self.local_contact = local_contact
        self.secure = secure

    def __repr__(self) -> str:
        return f"<Dialog {self.id.call_id} {self.state.value}>"

    # -- creation
    @classmethod
    def from_response(cls, request: Request, response: Response, *, local_contact: str) -> Dialog:
        """The UAC's dialog from a 1xx (early) or 2xx (confirmed) with a To tag (§12.1.2)."""
        if response.to.tag is None:
            raise LocalProtocolError("a response without a To tag creates no dialog")
        if not 101 <= response.status < 300:
            raise LocalProtocolError(f"a {response.status} response creates no dialog")
        contacts = response.contacts
        target = contacts[0].uri if contacts else request.uri
        return cls(
            dialog_id=DialogId.for_received_response(response),
            state=DialogState.CONFIRMED if response.status >= 200 else DialogState.EARLY,
            local=request.from_,
            remote=response.to,
            remote_target=target,
            route_set=list(reversed(response.record_route)),
            local_cseq=request.cseq.number,
            remote_cseq=None,
            local_contact=local_contact,
            secure=isinstance(request.uri, SipUri) and request.uri.scheme == "sips",
        )

    @classmethod
    def from_request(
        cls,
        request: Request,
        *,
        local_tag: str,
        local_contact: str,
        confirmed: bool = False,
        initial_cseq: int | None = None,
    ) -> Dialog:
        """The UAS's dialog for a request it answers with ``local_tag`` in To (§12.1.1).

        Early until :meth:`confirm` (when our 2xx is sent) unless ``confirmed``.
        """
        contacts = request.contacts
        if not contacts:
            raise LocalProtocolError("a request without Contact creates no dialog")
        return cls(
            dialog_id=DialogId(request.call_id, local_tag, request.from_.tag or ""),
            state=DialogState.CONFIRMED if confirmed else DialogState.EARLY,
            local=request.to.with_tag(local_tag),
            remote=request.from_,
            remote_target=contacts[0].uri,
            route_set=request.record_route,
            local_cseq=initial_cseq if initial_cseq is not None else random_int(2) + 1,
            remote_cseq=request.cseq.number,
            local_contact=local_contact,
            secure=isinstance(request.uri, SipUri) and request.uri.scheme == "sips",
        )

    # -- saving (to end the dialog from another process, after a crash)
    def to_json(self) -> dict[str, Any]:
        """What :meth:`from_json` needs to rebuild this dialog, as plain JSON-ready data."""
        return {
            "call_id": self.id.call_id,
            "local_tag": self.id.local_tag,
            "remote_tag": self.id.remote_tag,
            "local": str(self.local),
            "remote": str(self.remote),
            "remote_target": str(self.remote_target),
            "route_set": [str(r) for r in self.route_set],
            "local_cseq": self.local_cseq,
            "local_contact": self.local_contact,
            "secure": self.secure,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Dialog:
        """A confirmed dialog from :meth:`to_json`'s data. Raises :class:`LocalProtocolError`
        (or a :class:`~baton.switch.sip.errors.SipParseError`) for data that is not one."""
        try:
            cseq = data["local_cseq"]
            if not isinstance(cseq, int) or isinstance(cseq, bool) or cseq < 0:
                raise LocalProtocolError(f"bad local_cseq {cseq!r}")
            return cls(
                dialog_id=DialogId(
                    str(data["call_id"]), str(data["local_tag"]), str(data["remote_tag"])
                ),
                state=DialogState.CONFIRMED,
                local=parse_name_addr(str(data["local"]), "From"),
                remote=parse_name_addr(str(data["remote"]), "To"),
                remote_target=parse_uri(str(data["remote_target"])),
                route_set=[parse_name_addr(str(r), "Route") for r in data["route_set"]],
                local_cseq=cseq,
                remote_cseq=None,
                local_contact=str(data["local_contact"]),
                secure=bool(data.get("secure", False)),
            )
        except (KeyError, TypeError) as exc:
            raise LocalProtocolError(f"not a saved dialog: {exc!r}") from exc

    # -- state
    @property
    def terminated(self) -> bool:
        return self.state is DialogState.TERMINATED

    def confirm(self, response: Response | None = None) -> None:
        """Early → confirmed. For the UAC pass the 2xx: the route set and remote target are
        recomputed from it (§13.2.2.4)."""
        if self.terminated:
            raise LocalProtocolError("dialog already terminated")
        if response is not None:
            self.route_set = list(reversed(response.record_route))
            contacts = response.contacts
            if contacts:
                self.remote_target = contacts[0].uri
            if response.to.tag is not None:
                self.remote = response.to
        self.state = DialogState.CONFIRMED

    def terminate(self) -> None:
        self.state = DialogState.TERMINATED

    # -- requests we send
    def create_request(
        self,
        method: str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> Request:
        """The next request in this dialog (BYE, re-INVITE, INFO, OPTIONS, UPDATE, …).

        Takes the next local CSeq. ACK has its own method (:meth:`ack`); CANCEL is not an
        in-dialog request (:func:`make_cancel`).
        """
        if method in ("ACK", "CANCEL"):
            raise LocalProtocolError(f"use {'ack()' if method == 'ACK' else 'make_cancel()'}")
        if self.terminated and method != "BYE":
            raise LocalProtocolError("dialog terminated")
        self.local_cseq += 1
        return self._request(method, self.local_cseq, body, content_type, headers)

    def ack(
        self, invite: Request, *, body: bytes = b"", content_type: str | None = None
    ) -> Request:
        """The ACK for a 2xx to ``invite`` (§13.2.2.4): the INVITE's CSeq number, the dialog's
        route, and the INVITE's credentials. Send it without a transaction."""
        ack = self._request("ACK", invite.cseq.number, body, content_type, ())
        for name in ("Authorization", "Proxy-Authorization"):
            for value in invite.headers.get_all(name):
                ack.headers.add(name, value)
        return ack

    def _request(
        self,
        method: str,
        cseq: int,
        body: bytes,
        content_type: str | None,
        extra: Iterable[tuple[str, str]],
    ) -> Request:
        headers = Headers()
        uri: Uri = self.remote_target
        routes = [str(r) for r in self.route_set]
        if self.route_set:
            first = self.route_set[0].uri
            if isinstance(first, SipUri) and not first.lr:
                # Strict routing (§12.2.1.1): the first route becomes the Request-URI and the
                # remote target the last Route.
                uri = first.without_headers()
                routes = [*routes[1:], f"<{self.remote_target}>"]
        for route in routes:
            headers.add("Route", route)
        headers.add("Max-Forwards", "70")
        headers.add("From", str(self.local))
        headers.add("To", str(self.remote))
        headers.add("Call-ID", self.id.call_id)
        headers.add("CSeq", f"{cseq} {method}")
        if method in _WITH_CONTACT:
            headers.add("Contact", self.local_contact)
        for name, value in extra:
            headers.add(name, value)
        if body and content_type is None:
            raise LocalProtocolError("a body needs a content type")
        if content_type is not None:
            headers.add("Content-Type", content_type)
        return Request(method, uri, headers, body)

    def response_to(self, response: Response) -> None:
        """Update the dialog from the final response to a request we sent in it (§12.2.1.2):
        a 2xx to a target refresh replaces the remote target; 481 or 408 end the dialog."""
        if response.status in (481, 408):
            self.terminate()
        elif 200 <= response.status < 300 and response.cseq.method in _TARGET_REFRESH:
            contacts = response.contacts
            if contacts:
                self.remote_target = contacts[0].uri

    # -- requests we receive
    def receive_request(self, request: Request) -> Response | None:
        """Check and absorb an in-dialog request (§12.2.2).

        Returns the error response to send (500 for an out-of-order CSeq) or ``None`` when
        the TU should process the request. Updates the remote CSeq and, for target refresh
        requests, the remote target. A BYE terminates the dialog (the TU still answers 200).
        ACK and CANCEL are not checked here.
        """
        cseq = request.cseq.number
        if request.method not in ("ACK", "CANCEL"):
            if self.remote_cseq is not None and cseq < self.remote_cseq:
                return make_response(request, 500, "Out Of Order CSeq",
                                     headers=[("Retry-After", "1")])  # fmt: skip
            self.remote_cseq = cseq
        if request.method in _TARGET_REFRESH:
            contacts = request.contacts
            if contacts:
                self.remote_target = contacts[0].uri
        if request.method == "BYE":
            self.terminate()
        return None


class DialogSet:
    """The dialogs of one endpoint, by :class:`DialogId`."""

    def __init__(self) -> None:
        self._dialogs: dict[DialogId, Dialog] = {}

    def __len__(self) -> int:
        return len(self._dialogs)

    def __iter__(self) -> Iterator[Dialog]:
        return iter(list(self._dialogs.values()))

    def add(self, dialog: Dialog) -> None:
        self._dialogs[dialog.id] = dialog

    def remove(self, dialog: Dialog) -> None:
        self._dialogs.pop(dialog.id, None)

    def get(self, dialog_id: DialogId) -> Dialog | None:
        return self._dialogs.get(dialog_id)

    def for_request(self, request: Request) -> Dialog | None:
        """The dialog a received request belongs to, if any."""
        return self._dialogs.get(DialogId.for_received_request(request))

    def for_response(self, response: Response) -> Dialog | None:
        """The dialog a received response belongs to, if any."""
        return self._dialogs.get(DialogId.for_received_response(response))

    @staticmethod
    def no_such_dialog(request: Request) -> Response:
        """481 for an in-dialog request (To tag present) that matches no dialog (§12.2.2)."""
        return make_response(request, 481, to_tag=new_tag())


# ---- CANCEL --------------------------------------------------------------------------------


def make_cancel(invite: Request) -> Request:
    """The CANCEL for an INVITE we sent (§9.1): same Request-URI, Call-ID, To, From and CSeq
    number, and only the INVITE's top Via (same branch) — send it in a new client transaction.
    """
    via = invite.headers.get("Via")
    if via is None:
        raise LocalProtocolError("the INVITE has no Via yet: CANCEL only an INVITE that was sent")
    headers = Headers()
    headers.add("Via", via)
    for route in invite.headers.get_all("Route"):
        headers.add("Route", route)
    headers.add("Max-Forwards", "70")
    for name in ("From", "To", "Call-ID"):
        headers.add(name, invite.headers.get(name) or "")
    headers.add("CSeq", f"{invite.cseq.number} CANCEL")
    return Request("CANCEL", invite.uri, headers)


def cancel_responses(cancel: Request, invite: Request, to_tag: str) -> tuple[Response, Response]:
    """The UAS's answers to a CANCEL that matched a pending INVITE (§9.2): 200 for the CANCEL
    and 487 Request Terminated for the INVITE (send the 487 only if the INVITE has no final
    response yet)."""
    return make_response(cancel, 200, to_tag=to_tag), make_response(invite, 487, to_tag=to_tag)


# ---- the UAC side of an INVITE -------------------------------------------------------------

# The outcomes are not frozen, for the cost of building them (see the actions of
# transaction.py); nothing changes them after they are built.


@dataclass(slots=True, unsafe_hash=True)
class SendRequest:
    """Send this request in a new client transaction (a CANCEL, or a BYE)."""

    request: Request


@dataclass(slots=True, unsafe_hash=True)
class SendAck:
    """Send this ACK for a 2xx, without a transaction."""

    request: Request


@dataclass(slots=True, unsafe_hash=True)
class EarlyDialog:
    """A provisional response with a To tag made (or refreshed) an early dialog."""

    dialog: Dialog
    response: Response


@dataclass(slots=True, unsafe_hash=True)
class Answered:
    """The INVITE was answered: the dialog is confirmed (the ACK is in a :class:`SendAck`)."""

    dialog: Dialog
    response: Response


@dataclass(slots=True, unsafe_hash=True)
class AnsweredAfterCancel:
    """A 2xx crossed our CANCEL (or came from a second fork): it was ACKed and a BYE is on
    its way (in a :class:`SendRequest`). For the TU the call did not happen."""

    dialog: Dialog
    response: Response


@dataclass(slots=True, unsafe_hash=True)
class Rejected:
    """The INVITE failed: a 300-699 (487 after our CANCEL), or a timeout as 408."""

    response: Response | None
    status: int


InviteOutcome = SendRequest | SendAck | EarlyDialog | Answered | AnsweredAfterCancel | Rejected


class _Phase(enum.Enum):
    CALLING = "calling"
    EARLY = "early"
    CANCELLING = "cancelling"
    ANSWERED = "answered"
    DONE = "done"


class OutgoingInvite:
    """Follows one INVITE we sent, from its first response to its end, for the TU.

    Feed it every response to the INVITE (including 2xx retransmissions, which arrive as
    :class:`~baton.switch.sip.transaction.StrayResponse` once the transaction is gone) and the
    transaction's timeout; call :meth:`cancel` to give up. Each call returns the outcomes to act
    on, in order.
    """

    def __init__(self, invite: Request, *, local_contact: str) -> None:
        if invite.method != "INVITE":
            raise LocalProtocolError("OutgoingInvite follows an INVITE")
        if "Via" not in invite.headers:  # fail early: make_cancel() would, later
            raise LocalProtocolError(
                "the INVITE has no Via yet: CANCEL only an INVITE that was sent"
            )
        self.invite = invite
        self.local_contact = local_contact
        self._phase = _Phase.CALLING
        self._cancel_wanted = False
        self._dialogs: dict[DialogId, Dialog] = {}
        self._acks: dict[DialogId, Request] = {}
        self.dialog: Dialog | None = None  # the dialog of the answer we kept

    @property
    def phase(self) -> str:
        return self._phase.value

    @property
    def answered(self) -> bool:
        return self._phase is _Phase.ANSWERED

    def cancel(self) -> list[InviteOutcome]:
        """Give up on the call. Sends CANCEL once a provisional has arrived (RFC 3261 §9.1);
        before that the wish is remembered. After an answer it is too late: end the call with
        a BYE from the :attr:`dialog` instead (returns nothing)."""
        if self._phase is _Phase.CALLING:
            self._cancel_wanted = True
            return []
        if self._phase is _Phase.EARLY:
            self._phase = _Phase.CANCELLING
            return [SendRequest(make_cancel(self.invite))]
        return []

    def timed_out(self) -> list[InviteOutcome]:
        """The INVITE transaction timed out (timer B) or failed: the call failed with 408."""
        if self._phase in (_Phase.ANSWERED, _Phase.DONE):
            return []
        self._phase = _Phase.DONE
        return [Rejected(None, 408)]

    def on_response(self, response: Response) -> list[InviteOutcome]:
        if response.cseq.method != "INVITE":
            return []
        if response.status < 200:
            return self._provisional(response)
        if response.status < 300:
            return self._success(response)
        if self._phase in (_Phase.ANSWERED, _Phase.DONE):
            return []
        self._phase = _Phase.DONE
        return [Rejected(response, response.status)]

    def _provisional(self, response: Response) -> list[InviteOutcome]:
        out: list[InviteOutcome] = []
        if self._phase is _Phase.CALLING:
            self._phase = _Phase.EARLY
            if self._cancel_wanted:
                self._phase = _Phase.CANCELLING
                out.append(SendRequest(make_cancel(self.invite)))
        if response.to.tag is not None and response.status > 100 and self._phase is _Phase.EARLY:
            dialog_id = DialogId.for_received_response(response)
            dialog = self._dialogs.get(dialog_id)
            if dialog is None:
                dialog = Dialog.from_response(
                    self.invite, response, local_contact=self.local_contact
                )
                self._dialogs[dialog_id] = dialog
            out.append(EarlyDialog(dialog, response))
        return out

    def _success(self, response: Response) -> list[InviteOutcome]:
        dialog_id = DialogId.for_received_response(response)
        ack = self._acks.get(dialog_id)
        if ack is not None:
            return [SendAck(ack)]  # a retransmitted 2xx: ACK it again, nothing else
        dialog = self._dialogs.get(dialog_id)
        if dialog is None:
            dialog = Dialog.from_response(self.invite, response, local_contact=self.local_contact)
            self._dialogs[dialog_id] = dialog
        else:
            dialog.confirm(response)
        ack = dialog.ack(self.invite)
        self._acks[dialog_id] = ack
        if self._phase in (_Phase.CALLING, _Phase.EARLY) and not self._cancel_wanted:
            self._phase = _Phase.ANSWERED
            self.dialog = dialog
            return [SendAck(ack), Answered(dialog, response)]
        # We cancelled (or meant to), or another fork already answered: ACK, then BYE.
        if self._phase is not _Phase.ANSWERED:
            self._phase = _Phase.DONE
        bye = dialog.create_request("BYE")
        dialog.terminate()
        return [SendAck(ack), SendRequest(bye), AnsweredAfterCancel(dialog, response)]
