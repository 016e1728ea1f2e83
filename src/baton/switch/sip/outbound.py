"""Calls to phones: :meth:`Outbound.originate` INVITEs every contact of a user, first answer wins.

Rules
-----
* **Events after commands.** A leg's events (ringing, answered, failed) come from the
  transport's callbacks, which run only after :meth:`Outbound.originate` returned; a failure
  found *during* the command (no registered contact, a send error) is deferred to the next loop
  turn (:meth:`.book.LegBook.emit_for`).
* **One call per contact.** Each registered contact gets its own INVITE with its own Call-ID (a
  :class:`~.legs.Branch` with an :class:`~.dialog.OutgoingInvite`), so that two contacts on one
  device never merge. 180/183 from any is :class:`LegRinging`, once.
* **First 2xx wins**: it is ACKed, its SDP answer (or a 183's) given to the engine, and
  :class:`LegAnswered` emitted; every other branch is CANCELled, and a 2xx that crosses its
  CANCEL is ACKed and ended with BYE by the :class:`~.dialog.OutgoingInvite`, so no phone is
  left off-hook. A cancelled INVITE that never gets its 487 is abandoned after 32 s.
* **When every branch failed**, :class:`LegFailed` carries the most telling cause
  (:func:`~.b2bua.merge_causes`); a 6xx from any contact ends the whole call at once
  (RFC 3261 §16.7). A transport failure counts as 503: the contact is unreachable.

Theory of operation
-------------------
Responses to our INVITEs are routed here by Call-ID (:attr:`Outbound.branches`); the
:class:`~.dialog.OutgoingInvite` of the branch turns each into outcomes (send an ACK, send a
CANCEL or BYE, answered, answered after cancel, rejected), which :meth:`Outbound._act` carries
out. A branch is forgotten when its client transaction terminates (timer M: its 2xx can no
longer be retransmitted). Once answered, the leg lives like any other (:mod:`.in_dialog`).
"""

from __future__ import annotations

import logging

from baton.core.port import Cause, LegAnswered, LegFailed, LegRinging, SwitchError, SwitchEvent

from . import session_timer
from .b2bua import cause_for_status, is_global_failure, merge_causes, resource_priority_for
from .book import POLICY, SERVER, LegBook
from .dialog import (
    Answered,
    AnsweredAfterCancel,
    InviteOutcome,
    OutgoingInvite,
    Rejected,
    SendAck,
    SendRequest,
)
from .errors import LocalProtocolError, SipError
from .in_dialog import InDialog
from .legs import Branch, LegState, OutboundLeg
from .message import Headers, Request, Response, new_tag, random_hex
from .peers import TENANT_HEADER, PeerLines
from .registrar import Binding, Registrar
from .sdp import NegotiatedAudio, NotAcceptable, SdpParseError, SdpSession
from .transaction import Peer, TransactionKey, new_branch
from .uri import parse_name_addr

__all__ = ["Outbound"]

log = logging.getLogger("baton.switch.sip")

_CANCEL_GRACE = 32.0  # seconds a cancelled INVITE may take to get its 487 (64*T1 / 2)


class Outbound:
    """Baton's calls to users, forked to every registered contact."""

    def __init__(
        self,
        book: LegBook,
        in_dialog: InDialog,
        registrar: Registrar,
        peers: PeerLines | None = None,
    ) -> None:
        self._book = book
        self._in_dialog = in_dialog
        self._registrar = registrar
        self._peers = peers
        self.branches: dict[str, Branch] = {}  # outbound INVITEs by Call-ID
        self._branch_keys: dict[TransactionKey, Branch] = {}

    def originate(self, leg: str, user: str, caller: str | None, priority: int | None) -> None:
        """Create the leg and INVITE every registered contact of ``user`` (see
        :meth:`.switch.SipSwitch.originate`)."""
        book = self._book
        if user not in book.directory.users:
            raise SwitchError(f"sip: unknown user {user!r}")
        if leg in book.legs:
            raise SwitchError(f"sip: leg id {leg!r} in use")
        now = book.now()
        entry = OutboundLeg(leg, user, creating=True)
        book.add_leg(entry)
        book.counters["calls_out_total"] += 1
        try:
            contacts = self._registrar.contacts(user, now)
            if contacts:
                host, port = book.media.allocate(leg)
                browser = any((b.transport or "").lower() in ("ws", "wss") for b in contacts)
                entry.sdp = SdpSession(book.local_media(user, host, port, browser=browser))
                offer = entry.sdp.offer().to_bytes()
                for binding in contacts:
                    self._invite_contact(entry, binding, offer, caller, priority)
            if not entry.branches or all(b.done for b in entry.branches):
                self._fail(entry, merge_causes(entry.failures))
        except BaseException:
            book.drop(entry)
            raise
        finally:
            entry.creating = False
        if entry.deferred:
            events, entry.deferred = entry.deferred, []
            assert book.loop is not None
            book.loop.call_soon(self._emit_all, events)

    def _emit_all(self, events: list[SwitchEvent]) -> None:
        for event in events:
            self._book.emit(event)

    def _invite_contact(
        self,
        leg: OutboundLeg,
        binding: Binding,
        offer: bytes,
        caller: str | None,
        priority: int | None,
    ) -> None:
        book = self._book
        config = book.config
        uri = binding.uri
        try:
            # Through the proxies the phone registered by (RFC 3327 Path: a cluster's edge),
            # else straight to its contact.
            route = [parse_name_addr(p, "Path") for p in binding.path]
            peer = Peer.for_uri(route[0].uri if route else uri)
        except SipError as exc:
            log.warning("user %s: contact %s unusable: %s", leg.user, binding.contact_text, exc)
            leg.failures.append(Cause.UNREACHABLE)
            return
        if not route and isinstance(binding.flow, Peer) and binding.flow.reliable and peer.reliable:
            peer = binding.flow  # reuse the connection the phone registered over
        if peer.transport not in book.transport.transports:
            log.warning("user %s: contact %s needs %s, which Baton does not listen on",
                        leg.user, binding.contact_text, peer.transport)  # fmt: skip
            leg.failures.append(Cause.UNREACHABLE)
            return
        host = book.host()
        headers = Headers()
        headers.add("Max-Forwards", "70")
        for hop in binding.path:
            headers.add("Route", hop)
        calling = book.directory.users.get(caller) if caller is not None else None
        if calling is not None:
            number = calling.numbers[0] if calling.numbers else calling.id
            headers.add("From", f'"{calling.id}" <sip:{number}@{host}>;tag={new_tag()}')
        else:
            headers.add("From", f'"Baton" <sip:baton@{host}>;tag={new_tag()}')
        headers.add("To", f"<sip:{leg.user}@{host}>")
        peers = self._peers
        if peers is not None and peers.tenant is not None and leg.user in peers.lines:
            headers.add(TENANT_HEADER, peers.tenant)  # the other tenant shows whose caller
        headers.add("Call-ID", f"{random_hex(10)}@baton")
        headers.add("CSeq", "1 INVITE")
        contact = book.contact(peer.transport)
        headers.add("Contact", contact)
        headers.add("Allow", POLICY.allow_header)
        if config.session_expires:
            for name, value in session_timer.request_headers(config.session_expires, config.min_se):
                headers.add(name, value)
        if priority is not None:
            precedence = resource_priority_for(priority, config.resource_priority)
            if precedence is not None:
                headers.add("Resource-Priority", precedence)
        headers.add("User-Agent", SERVER)
        headers.add("Content-Type", "application/sdp")
        # Our own top Via, so that the OutgoingInvite (which needs it for a CANCEL) exists
        # before the send: a send failure is reported synchronously, by Call-ID.
        address = book.transport.address(peer.transport)
        via_host = f"[{address.host}]" if ":" in address.host else address.host
        headers.prepend("Via", f"SIP/2.0/{peer.transport.upper()} {via_host}:{address.port}"
                               f";branch={new_branch()};rport")  # fmt: skip
        invite = Request("INVITE", uri, headers, offer)
        branch = Branch(leg, invite, peer, OutgoingInvite(invite, local_contact=contact))
        self.branches[invite.call_id] = branch
        leg.branches.append(branch)
        key = book.send_request(invite, peer)
        if key is None:
            branch.done = True
            leg.failures.append(Cause.UNREACHABLE)
            self.branches.pop(invite.call_id, None)
            return
        branch.key = key
        if not branch.done:
            self._branch_keys[key] = branch

    # ---- what comes back

    def on_response(self, response: Response) -> bool:
        """A response to one of our INVITEs; False if it is not a branch's."""
        branch = self.branches.get(response.call_id)
        if (
            branch is None
            or response.cseq.method != "INVITE"
            or response.cseq.number != branch.invite.cseq.number
        ):
            return False
        leg = branch.leg
        if leg.state is LegState.RINGING and not leg.rang and response.status in (180, 183):
            leg.rang = True
            self._book.emit_for(leg, LegRinging(leg.id))
        if 100 < response.status < 200 and response.body and not branch.early_sdp:
            branch.early_sdp = response.body
        self._act(branch, branch.call.on_response(response))
        return True

    def _branch_of(self, request: Request) -> Branch | None:
        branch = self.branches.get(request.call_id)
        if branch is not None and branch.invite.cseq.number == request.cseq.number:
            return branch
        return None

    def on_timeout(self, request: Request) -> bool:
        """An INVITE of ours timed out; False if it is not a branch's."""
        branch = self._branch_of(request)
        if branch is None:
            return False
        self._act(branch, branch.call.timed_out())
        return True

    def on_transport_failure(self, request: Request) -> bool:
        """An INVITE of ours could not be delivered; False if it is not a branch's."""
        branch = self._branch_of(request)
        if branch is None:
            return False
        if not branch.done:
            # RFC 3261 §8.1.3.1: a transport failure is a 503; the contact is unreachable.
            branch.call.timed_out()
            self._branch_failed(branch, 503)
        return True

    def connection_closed(self, peer: Peer) -> None:
        """The browser connection ``peer`` is gone: each INVITE ringing over it can neither be
        answered nor cancelled any more, so it fails as a transport failure would (503: the
        contact is unreachable) — at once, not after the ring timeout."""
        for branch in [b for b in self.branches.values() if b.peer == peer and not b.done]:
            self.branches.pop(branch.invite.call_id, None)
            if branch.key is not None:
                self._branch_keys.pop(branch.key, None)
                try:  # (not contextlib.suppress: see _send_ack_for)
                    self._book.transport.terminate(branch.key)
                except LocalProtocolError:
                    pass
            branch.call.timed_out()
            self._branch_failed(branch, 503)

    def on_terminated(self, key: TransactionKey) -> None:
        branch = self._branch_keys.pop(key, None)
        if branch is not None:
            # Its 2xx can no longer be retransmitted (timer M has run): forget the branch.
            branch.done = True
            self.branches.pop(branch.invite.call_id, None)

    def _act(self, branch: Branch, outcomes: list[InviteOutcome]) -> None:
        book = self._book
        for outcome in outcomes:
            if isinstance(outcome, SendAck):
                self._send_ack_for(branch, outcome.request)
            elif isinstance(outcome, SendRequest):
                request = outcome.request
                if request.method == "CANCEL":
                    book.send_request(request, branch.peer)
                    book.later(_CANCEL_GRACE, lambda b=branch: self._abandon(b))  # type: ignore[misc]
                else:  # the BYE ending a 2xx that came too late
                    peer = (
                        branch.peer
                        if branch.peer.reliable
                        else Peer.next_hop(request, branch.peer.transport)
                    )
                    book.send_request(request, peer)
            elif isinstance(outcome, Answered):
                branch.done = True
                self._branch_answered(branch, outcome)
            elif isinstance(outcome, AnsweredAfterCancel):
                branch.done = True
            elif isinstance(outcome, Rejected):
                self._branch_failed(branch, outcome.status)

    def _send_ack_for(self, branch: Branch, ack: Request) -> None:
        peer = branch.peer if branch.peer.reliable else Peer.next_hop(ack, branch.peer.transport)
        try:  # (not contextlib.suppress: this runs once a call)
            self._book.transport.send_stateless(ack, peer)
        except LocalProtocolError:
            pass

    def _abandon(self, branch: Branch) -> None:
        """A cancelled INVITE that never got its final response: stop waiting for it."""
        if not branch.done:
            branch.done = True
            self.branches.pop(branch.invite.call_id, None)
            if branch.key is not None:
                self._branch_keys.pop(branch.key, None)
                self._book.transport.terminate(branch.key)

    def _branch_failed(self, branch: Branch, status: int) -> None:
        branch.done = True
        leg = branch.leg
        if leg.state is not LegState.RINGING:
            return
        leg.failures.append(cause_for_status(status))
        if is_global_failure(status):
            self.cancel_branches(leg)
            self._fail(leg, cause_for_status(status))
        elif all(b.done for b in leg.branches):
            self._fail(leg, merge_causes(leg.failures))

    def _fail(self, leg: OutboundLeg, cause: Cause) -> None:
        if leg.state is not LegState.RINGING:
            return
        self._book.drop(leg)
        self._book.emit_for(leg, LegFailed(leg.id, cause))

    def cancel_branches(self, leg: OutboundLeg, keep: Branch | None = None) -> None:
        """CANCEL every branch still ringing (but ``keep``)."""
        for branch in leg.branches:
            if branch is not keep and not branch.done:
                self._act(branch, branch.call.cancel())

    def _branch_answered(self, branch: Branch, outcome: Answered) -> None:
        book = self._book
        leg = branch.leg
        dialog = outcome.dialog
        if leg.state is not LegState.RINGING:
            # Hung up while the 2xx was on its way but after the CANCEL window: end it.
            bye = dialog.create_request("BYE")
            dialog.terminate()
            book.send_request(bye, branch.peer if branch.peer.reliable
                              else Peer.next_hop(bye, branch.peer.transport))  # fmt: skip
            return
        # First answer wins; the other branches are cancelled.
        leg.branches.remove(branch)
        leg.branches.insert(0, branch)
        self.cancel_branches(leg, keep=branch)
        leg.dialog = dialog
        leg.peer = branch.peer
        book.by_dialog[dialog.id] = leg
        assert leg.sdp is not None
        body = outcome.response.body or branch.early_sdp
        result: NegotiatedAudio | NotAcceptable
        try:
            result = leg.sdp.accept_answer(body) if body else NotAcceptable("no SDP answer")
        except SdpParseError:
            result = NotAcceptable("unreadable SDP answer")
        if isinstance(result, NotAcceptable):
            log.info("leg %s: answer not acceptable (%s): BYE", leg.id, result.reason)
            book.send_bye(leg, f'SIP ;cause=488 ;text="{result.reason}"')
            book.drop(leg)
            book.emit_for(leg, LegFailed(leg.id, Cause.FAILURE))
            return
        try:
            leg.session = session_timer.negotiate_uac(outcome.response)
        except SipError:
            leg.session = None
        if not book.config.session_expires:
            leg.session = None
        leg.state = LegState.CONNECTED
        book.apply_media(leg, result, initial=True)
        self._in_dialog.arm_session_timer(leg)
        book.emit_for(leg, LegAnswered(leg.id))
