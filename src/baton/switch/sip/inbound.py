"""Calls from phones: a new INVITE becomes an :class:`~baton.core.port.InboundCall`.

Rules
-----
* **Check before ringing.** Everything that can refuse the call is decided before the 180:
  who is calling (a static contact's address, else digest; a source that fails too often is
  throttled with 403), the precedence asked for (RFC 4412; 417 only with
  ``Require: resource-priority``), the session interval (422, RFC 4028), a free RTP port (503)
  and an acceptable SDP offer (488). Challenges and refusals before that point leave no state
  (:meth:`.book.LegBook.respond_stateless`).
* **Always answer.** The server INVITE transaction waits forever for the TU: the call is
  answered (200), refused (4xx/6xx) or, if nobody decides, ended with 480 after
  ``inbound_ring_timeout``. A 2xx that is never ACKed is :mod:`.in_dialog`'s (timer L).
* **The identity is the address the bytes came from** (a UDP datagram's source, a TCP
  connection's remote end), never the Via, which the sender writes (docs/sip.md, "Static
  contacts"). When one address hosts several users the From user picks among them.
* **A stale line first.** If the caller has a quiet call, the INVITE waits (100 Trying goes out
  by itself) until :mod:`.stale` has probed it; a CANCEL meanwhile gets its 487 at once.

Theory of operation
-------------------
INVITE → §8.2 checks (in :class:`~.switch.SipSwitch`) → :meth:`Inbound.on_invite`:
authentication → stale-line probes → :meth:`Inbound._invite_from`: precedence → session timer →
our SDP answer → 180 Ringing → an :class:`~.legs.InboundLeg` and :class:`InboundCall` for the
core. :meth:`Inbound.answer` sends the 200 with our SDP (or our offer, if the INVITE had
none; the answer then comes in the ACK) and points the engine at the phone; the transaction
repeats the 200 until the ACK. A CANCEL from the phone, or :meth:`Inbound.refuse` for the flow's
hang-up, ends the ringing leg with a final response.
"""

from __future__ import annotations

import logging

from baton.core.port import Cause, InboundCall, LegEnded
from baton.switch.media import MediaError

from . import session_timer
from .b2bua import parse_resource_priority
from .book import POLICY, LegBook
from .dialog import Dialog
from .digest import AuthOutcome, DigestAuthenticator
from .errors import LocalProtocolError
from .in_dialog import InDialog
from .legs import InboundLeg, LegState
from .message import Response, make_response, new_tag
from .peers import TENANT_HEADER, PeerLines
from .registrar import AuthThrottle, throttle_key
from .sdp import NegotiatedAudio, NotAcceptable, SdpParseError, SdpSession
from .session_timer import SessionTimer
from .stale import StaleLines
from .transaction import RequestReceived, ServerTransaction, TransactionKey
from .uri import SipUri

__all__ = ["Inbound"]

log = logging.getLogger("baton.switch.sip")


class Inbound:
    """Phones' INVITEs: authenticated, checked, rung, answered, cancelled or refused."""

    def __init__(
        self,
        book: LegBook,
        in_dialog: InDialog,
        stale: StaleLines,
        authenticator: DigestAuthenticator,
        throttle: AuthThrottle,
        peers: PeerLines | None = None,
    ) -> None:
        self._book = book
        self._in_dialog = in_dialog
        self._stale = stale
        self._authenticator = authenticator
        self._throttle = throttle
        self._peers = peers
        self.held: set[TransactionKey] = set()  # new INVITEs waiting for probes
        self.closed = False

    # ---- a new INVITE

    def _authenticate(self, event: RequestReceived, to_tag: str) -> str | Response:
        """The caller's user id, or the response that refuses the INVITE (401 challenge,
        403 wrong credentials or throttled)."""
        book = self._book
        directory = book.directory
        request, peer = event.request, event.peer
        peers = self._peers
        if peers is not None and peers.from_edge(peer.host, peer.port):
            # Another tenant's call, signed by the edge (docs/cluster.md, "Calls between
            # tenants"); without the header it is a phone's call through the edge.
            proven = peers.proven(request)
            if proven is False:
                log.warning("INVITE from the edge with a wrong peer proof: refused")
                return make_response(request, 403, "Bad Peer Proof", to_tag=to_tag)
            if proven:
                line = peers.free({leg.user for leg in book.legs.values()})
                if line is None:
                    return make_response(request, 486, "All Peer Lines Busy", to_tag=to_tag)
                return line
        # The address the bytes really came from: over TCP the connection's remote address,
        # never the Via, which the sender writes itself (docs/sip.md, "Static contacts").
        hosted = directory.static_sources.get((peer.host, peer.port))
        if hosted:
            uri = request.from_.uri
            named = directory.names.get(uri.user_text or "") if isinstance(uri, SipUri) else None
            return named if named in hosted else hosted[0]
        now = book.now()
        result = self._authenticator.verify_request(
            request, now=now, lookup=directory.secret_of, source=peer.host
        )
        key = throttle_key(peer.host, result.username)
        if not self._throttle.allowed(key, now):
            retry = str(self._throttle.retry_after(key, now))
            return make_response(request, 403, "Too Many Failed Attempts", to_tag=to_tag,
                                 headers=[("Retry-After", retry)])  # fmt: skip
        if result.outcome is AuthOutcome.BAD_REQUEST:
            return make_response(request, 400, "Bad Credentials", to_tag=to_tag)
        if result.outcome is AuthOutcome.WRONG_CREDENTIALS:
            self._throttle.record_failure(key, now)
            book.counters["auth_failures_total"] += 1
            return make_response(request, 403, "Wrong Credentials", to_tag=to_tag)
        if not result.ok:
            book.counters["auth_challenges_total"] += 1
            return self._authenticator.challenge(
                request, now=now, stale=result.outcome is AuthOutcome.STALE, to_tag=to_tag,
                source=peer.host,
            )  # fmt: skip
        self._throttle.record_success(key)
        assert result.username is not None
        user_id = directory.names.get(result.username)
        if user_id is None:  # the lookup found a secret, so this cannot happen; be safe
            return make_response(request, 403, to_tag=to_tag)
        return user_id

    def on_invite(self, event: RequestReceived) -> None:
        key = event.key
        to_tag = new_tag()
        who = self._authenticate(event, to_tag)
        if isinstance(who, Response):
            self._book.respond_stateless(key, who)
            return
        if self._stale.probe_quiet_legs(who, lambda: self._resume_invite(event, who, to_tag)):
            self.held.add(key)  # 100 Trying goes out by itself meanwhile
            return
        self._invite_from(event, who, to_tag)

    def _resume_invite(self, event: RequestReceived, who: str, to_tag: str) -> None:
        if event.key not in self.held or self.closed:
            return  # cancelled meanwhile, or shutting down
        self.held.discard(event.key)
        tx = self._book.transport.layer.transaction(event.key)
        if tx is None or tx.terminated:
            return
        self._invite_from(event, who, to_tag)

    def _invite_from(self, event: RequestReceived, who: str, to_tag: str) -> None:
        book = self._book
        config = book.config
        request, key = event.request, event.key
        user = book.directory.users[who]
        # The precedence asked for (RFC 4412), if the user may ask for it.
        headers: dict[str, str] = {"Call-ID": request.call_id, "From": str(request.from_)}
        agent = request.headers.get("User-Agent")
        if agent is not None:
            headers["User-Agent"] = agent
        if self._peers is not None and who in self._peers.lines:  # a proven peer call
            tenant = request.headers.get(TENANT_HEADER)
            if tenant is not None:
                headers[TENANT_HEADER] = tenant
        priority: int | None = None
        rp_values = request.headers.get_all("Resource-Priority")
        if rp_values:
            asked = parse_resource_priority(rp_values, config.resource_priority)
            headers["Resource-Priority"] = ", ".join(rp_values)
            if asked.priority is None:
                if "resource-priority" in request.headers.get_all("Require"):
                    book.respond(key, make_response(
                        request, 417, to_tag=to_tag,
                        headers=[("Accept-Resource-Priority",
                                  ", ".join(config.resource_priority))],
                    ))  # fmt: skip
                    return
                headers["Resource-Priority-Ignored"] = "no known namespace.value"
            elif user.max_priority is not None and asked.priority > user.max_priority:
                headers["Resource-Priority-Ignored"] = (
                    f"asked {asked.priority}, above the user's max_priority {user.max_priority}"
                )
            else:
                priority = asked.priority
        # Session timer (RFC 4028): a 422 here is better than after ringing the callee.
        timer: SessionTimer | None = None
        timer_headers: list[tuple[str, str]] = []
        if config.session_expires:
            settled = session_timer.negotiate_uas(
                request, min_se=config.min_se, preferred=config.session_expires
            )
            if isinstance(settled, Response):
                book.respond(key, settled)
                return
            timer, timer_headers = settled
        leg_id = f"sip-in-{next(book.ids)}"
        try:
            host, port = book.media.allocate(leg_id)
        except MediaError as exc:
            log.error("no media for an inbound call: %s", exc)
            book.respond(key, make_response(request, 503, to_tag=to_tag,
                                            headers=[("Retry-After", "5")]))  # fmt: skip
            return
        sdp = SdpSession(book.local_media(who, host, port))
        answer_sdp = b""
        media: NegotiatedAudio | None = None
        if request.body:
            try:
                result = sdp.answer(request.body)
            except SdpParseError as exc:
                book.media.release(leg_id)
                book.respond(key, make_response(request, 400, exc.reason, to_tag=to_tag))
                return
            if isinstance(result, NotAcceptable):
                book.media.release(leg_id)
                log.info("INVITE from %s: 488 (%s)", who, result.reason)
                book.respond(key, make_response(request, 488, to_tag=to_tag,
                                                headers=[("Warning", '304 baton "' +
                                                          result.reason.replace('"', "'") +
                                                          '"')]))  # fmt: skip
                return
            answer_sdp, media = result.answer.to_bytes(), result.media
        leg = InboundLeg(leg_id, who, sdp=sdp, media=media, peer=event.peer, invite=request,
                         invite_key=key, local_tag=to_tag, answer_sdp=answer_sdp,
                         timer_headers=timer_headers, session=timer)  # fmt: skip
        book.add_leg(leg)
        book.by_invite[key] = leg
        book.counters["calls_in_total"] += 1
        ringing = make_response(request, 180, to_tag=to_tag,
                                headers=[("Contact", book.contact(event.peer.transport))])  # fmt: skip
        book.respond(key, ringing)
        book.leg_later(leg, config.inbound_ring_timeout, lambda: self._ring_timeout(leg))
        to = request.uri.user_text if isinstance(request.uri, SipUri) else None
        book.emit(InboundCall(leg_id, who, to or "", priority, headers))

    def _ring_timeout(self, leg: InboundLeg) -> None:
        if leg.state is LegState.RINGING:
            log.info("inbound leg %s: nobody answered in %.0f s", leg.id,
                     self._book.config.inbound_ring_timeout)  # fmt: skip
            self.refuse(leg, 480, None)
            self._book.emit(LegEnded(leg.id, Cause.NO_ANSWER, by_user=False))

    def refuse(self, leg: InboundLeg, status: int, reason: str | None) -> None:
        """End a ringing inbound leg with a final error response."""
        book = self._book
        assert leg.invite is not None and leg.invite_key is not None
        headers = [("Reason", reason)] if reason else []
        book.respond(leg.invite_key,
                     make_response(leg.invite, status, to_tag=leg.local_tag, headers=headers))  # fmt: skip
        book.by_invite.pop(leg.invite_key, None)
        book.drop(leg)

    # ---- CANCEL

    def on_cancel(self, event: RequestReceived) -> None:
        book = self._book
        request = event.request
        if event.cancels is not None and event.cancels in self.held:
            # Cancelled while its caller's old call is being probed.
            self.held.discard(event.cancels)
            book.respond(event.key, make_response(request, 200, to_tag=new_tag()))
            tx = book.transport.layer.transaction(event.cancels)
            if isinstance(tx, ServerTransaction):
                book.respond_stateless(event.cancels, make_response(tx.request, 487,
                                                                    to_tag=new_tag()))  # fmt: skip
            return
        leg = book.by_invite.get(event.cancels) if event.cancels is not None else None
        tag = leg.local_tag if isinstance(leg, InboundLeg) else new_tag()
        book.respond(event.key, make_response(request, 200, to_tag=tag))
        if not isinstance(leg, InboundLeg) or leg.state is not LegState.RINGING:
            return  # already answered (the 200 crossed the CANCEL) or already ended
        self.refuse(leg, 487, None)
        book.emit(LegEnded(leg.id, Cause.CANCELLED, by_user=True))

    # ---- answer

    def answer(self, leg: InboundLeg) -> None:
        """Send the 200 for a ringing inbound leg (see :meth:`.switch.SipSwitch.answer`)."""
        if leg.state is LegState.RINGING:
            self._send_answer(leg)

    def _send_answer(self, leg: InboundLeg) -> None:
        book = self._book
        assert leg.invite is not None and leg.invite_key is not None and leg.sdp is not None
        request, peer = leg.invite, leg.peer
        assert peer is not None
        contact = book.contact(peer.transport)
        body = leg.answer_sdp
        if not body:  # the INVITE had no offer: ours goes in the 200, the answer in the ACK
            body = leg.sdp.offer().to_bytes()
            leg.answer_in_ack = True
        headers = [("Contact", contact), ("Allow", POLICY.allow_header),
                   ("Supported", "timer"), *leg.timer_headers,
                   ("Content-Type", "application/sdp")]  # fmt: skip
        try:
            leg.dialog = Dialog.from_request(request, local_tag=leg.local_tag,
                                             local_contact=contact, confirmed=True)  # fmt: skip
        except LocalProtocolError as exc:  # no Contact: we could never reach the phone again
            self.refuse(leg, 400, None)
            log.info("INVITE without usable Contact: %s", exc)
            book.emit(LegEnded(leg.id, Cause.FAILURE, by_user=False))
            return
        book.by_dialog[leg.dialog.id] = leg
        for handle in leg.handles:  # the ring timeout
            handle.cancel()
        leg.handles.clear()
        leg.state = LegState.CONNECTED
        if leg.media is not None:
            book.apply_media(leg, leg.media, initial=True)
        book.respond(leg.invite_key, make_response(request, 200, to_tag=leg.local_tag,
                                                   headers=headers, body=body))  # fmt: skip
        self._in_dialog.arm_session_timer(leg)

    def close(self) -> None:
        """The switch is closing: a held INVITE is no longer taken up."""
        self.closed = True
        self.held.clear()
