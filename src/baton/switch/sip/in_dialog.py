"""Inside a call, whichever side placed it: the phone's requests, ACKs, and session timers.

Once a leg has a dialog, inbound and outbound legs behave alike; this module is that common
life (RFC 3261 §12–§15, RFC 4028).

Rules
-----
* **Answer at once.** A re-INVITE or UPDATE (hold, resume, a new address, a session refresh) is
  answered when it arrives; the media follows the new SDP. An unacceptable offer keeps the old
  media (488); one that arrives while our own re-INVITE is in flight gets 491 (glare, §14.2).
* **No BYE before the ACK** of our 200 (§15): a hang-up meanwhile is kept on the inbound leg
  and sent when the ACK arrives — or when timer L says it never will.
* **A dead phone ends its leg**, with BYE and ``LegEnded(FAILURE)`` and a ``Reason`` saying
  why: no ACK for our 200, no session refresh in time, our refresh unanswered or refused with
  408/481. Any other refusal of our refresh keeps the session (RFC 4028 §10).

Theory of operation
-------------------
:meth:`InDialog.on_request` finds the leg by dialog id (481 if none), lets the
:class:`~.dialog.Dialog` check the CSeq, then answers BYE (the leg ends, ``by_user=True``),
re-INVITE/UPDATE (:meth:`InDialog.on_refresh`), INFO (DTMF for the flows) and OPTIONS.
:meth:`InDialog.on_ack` handles the ACK of a 200 of ours — the first one of an inbound call, or
one carrying the answer to an offer we put in a 2xx. Session timers are loop handles on the
leg: :meth:`InDialog.arm_session_timer` schedules our refresh (when we refresh) or the
expiry (when the phone does); a refresh is a re-INVITE with our current SDP, whose 2xx is
ACKed (and ACKed again if it is retransmitted).
"""

from __future__ import annotations

import contextlib
import logging

from baton.core.port import Cause, DtmfReceived, LegEnded

from . import session_timer
from .b2bua import dtmf_from_info
from .book import POLICY, LegBook, options_ok, wish
from .dialog import DialogId
from .errors import SipError
from .legs import InboundLeg, Leg, LegState
from .message import Request, Response, make_response
from .sdp import NotAcceptable, SdpParseError
from .transaction import RequestReceived, Timer, TransactionKey

__all__ = ["InDialog"]

log = logging.getLogger("baton.switch.sip")


class InDialog:
    """Requests, ACKs and session refreshes within the switch's calls."""

    def __init__(self, book: LegBook) -> None:
        self._book = book

    # ---- the phone's requests

    def on_request(self, event: RequestReceived) -> None:
        book = self._book
        request, key = event.request, event.key
        leg = book.by_dialog.get(DialogId.for_received_request(request))
        if leg is None or leg.dialog is None:
            book.respond(key, make_response(request, 481, to_tag=None))
            return
        error = leg.dialog.receive_request(request)
        if error is not None:
            book.respond(key, error)
            return
        method = request.method
        if method == "BYE":
            book.respond(key, make_response(request, 200))
            book.by_dialog.pop(leg.dialog.id, None)
            if leg.state is LegState.ENDED:
                return
            book.drop(leg)
            book.emit(LegEnded(leg.id, Cause.NORMAL, by_user=True))
        elif method in ("INVITE", "UPDATE"):
            self.on_refresh(leg, event)
        elif method == "INFO":
            book.respond(key, make_response(request, 200))
            digit = dtmf_from_info(request.content_type, request.body)
            if digit is not None and leg.state is LegState.CONNECTED:
                book.emit(DtmfReceived(leg.id, digit))
        elif method == "OPTIONS":
            book.respond(key, options_ok(request))
        else:
            book.respond(key, make_response(request, 405,
                                            headers=[("Allow", POLICY.allow_header)]))  # fmt: skip

    def on_refresh(self, leg: Leg, event: RequestReceived) -> None:
        """A re-INVITE or UPDATE from the phone: hold, resume, a new address, or a session
        refresh. Answered at once; the media follows the new SDP."""
        book = self._book
        request, key = event.request, event.key
        if leg.state is not LegState.CONNECTED or leg.sdp is None:
            book.respond(key, make_response(request, 491 if leg.state is LegState.RINGING else 481,
                                            headers=[("Retry-After", "1")]))  # fmt: skip
            return
        if request.method == "INVITE" and leg.refresh_key is not None:
            # Glare: our own re-INVITE is in flight (RFC 3261 §14.2).
            book.respond(key, make_response(request, 491))
            return
        headers: list[tuple[str, str]] = [("Contact", book.contact(event.peer.transport)),
                                          ("Allow", POLICY.allow_header),
                                          ("Supported", "timer")]  # fmt: skip
        if leg.session is not None:
            settled = session_timer.negotiate_uas(
                request, min_se=book.config.min_se, preferred=leg.session.interval
            )
            if isinstance(settled, Response):
                book.respond(key, settled)
                return
            leg.session, timer_headers = settled
            headers += timer_headers
        body = b""
        if request.body:
            try:
                result = leg.sdp.answer(request.body, wish(leg))
            except SdpParseError as exc:
                book.respond(key, make_response(request, 400, exc.reason))
                return
            if isinstance(result, NotAcceptable):
                book.respond(key, make_response(request, 488))  # the old media stays
                return
            body = result.answer.to_bytes()
            book.apply_media(leg, result.media)
        elif request.method == "INVITE":
            # An offerless re-INVITE: our offer goes in the 200, the answer in the ACK.
            body = leg.sdp.offer(wish(leg)).to_bytes()
            leg.answer_in_ack = True
            book.by_invite[key] = leg
        if body:
            headers.append(("Content-Type", "application/sdp"))
        book.respond(key, make_response(request, 200, headers=headers, body=body))
        self.arm_session_timer(leg)

    # ---- ACKs of our 2xx

    def on_ack(self, key: TransactionKey | None, ack: Request) -> None:
        book = self._book
        leg = book.by_invite.pop(key, None) if key is not None else None
        if leg is None:
            return  # a late or stray ACK (for an ended call): nothing to do
        if isinstance(leg, InboundLeg):
            first = not leg.acked
            leg.acked = True
            if first and leg.bye_after_ack is not None:
                book.send_bye(leg, leg.bye_after_ack or None)
                return
        if leg.answer_in_ack:
            leg.answer_in_ack = False
            self._late_answer(leg, ack)

    def _late_answer(self, leg: Leg, ack: Request) -> None:
        """Our offer went in a 2xx (the phone's INVITE had none): its answer is in the ACK."""
        book = self._book
        if leg.state is not LegState.CONNECTED or leg.sdp is None:
            return
        if not ack.body:
            if leg.media is None:  # the initial offer was never answered: no media possible
                book.fail_connected(leg, Cause.FAILURE, 'SIP ;cause=488 ;text="no SDP answer"')
            return
        try:
            result = leg.sdp.accept_answer(ack.body)
        except SdpParseError:
            result = NotAcceptable("unreadable SDP")
        if isinstance(result, NotAcceptable):
            book.fail_connected(leg, Cause.FAILURE, 'SIP ;cause=488 ;text="' + result.reason + '"')
            return
        book.apply_media(leg, result, initial=leg.media is None)

    def on_server_timeout(self, key: TransactionKey, timer: Timer) -> None:
        """A server INVITE transaction of ours timed out: timer L means our 2xx was never
        ACKed, so the phone is gone (RFC 3261 §13.3.1.4)."""
        book = self._book
        leg = book.by_invite.pop(key, None)
        if isinstance(leg, InboundLeg) and timer is Timer.L and not leg.acked:
            leg.acked = True
            if leg.bye_after_ack is not None:
                book.send_bye(leg, leg.bye_after_ack or None)
            elif leg.state is LegState.CONNECTED:
                book.fail_connected(leg, Cause.FAILURE, 'SIP ;cause=408 ;text="no ACK"')

    # ---- session timers (RFC 4028)

    def arm_session_timer(self, leg: Leg) -> None:
        book = self._book
        if leg.session_handle is not None:
            leg.session_handle.cancel()
            leg.session_handle = None
        timer = leg.session
        if timer is None or leg.state is not LegState.CONNECTED or book.loop is None:
            return
        now = book.now()
        refresh = timer.refresh_at(now)
        if refresh is not None:
            leg.session_handle = book.loop.call_at(refresh, lambda: self._refresh(leg))
        else:
            leg.session_handle = book.loop.call_at(
                timer.expire_at(now), lambda: self._session_expired(leg)
            )

    def _session_expired(self, leg: Leg) -> None:
        leg.session_handle = None
        if leg.state is LegState.CONNECTED:
            log.info("leg %s: no session refresh: the phone is gone", leg.id)
            self._book.counters["session_timeouts_total"] += 1
            self._book.fail_connected(leg, Cause.FAILURE,
                                      'SIP ;cause=408 ;text="session expired"')  # fmt: skip

    def _refresh(self, leg: Leg) -> None:
        """Send the session refresh (a re-INVITE with our current SDP, RFC 4028 §7.4)."""
        book = self._book
        leg.session_handle = None
        if leg.state is not LegState.CONNECTED or leg.dialog is None or leg.sdp is None:
            return
        timer = leg.session
        assert timer is not None
        if leg.refresh_key is not None:
            return
        headers = [("Supported", "timer"),
                   ("Session-Expires", f"{timer.interval};refresher=uac"),
                   ("Min-SE", str(book.config.min_se))]  # fmt: skip
        body = leg.sdp.offer(wish(leg)).to_bytes()
        invite = leg.dialog.create_request("INVITE", body=body, content_type="application/sdp",
                                           headers=headers)  # fmt: skip
        key = book.send_in_dialog(leg, invite)
        if key is None:
            return
        # Unanswered, it times out (timer B) and the leg ends; see on_refresh_timeout.
        leg.refresh_key = key
        leg.refresh_invite = invite
        book.refreshes[key] = leg

    def on_response(self, response: Response, key: TransactionKey | None) -> None:
        """A response to an INVITE of ours within a dialog: our refresh's answer, or a
        retransmitted 2xx of it (ACKed again)."""
        book = self._book
        if key is not None:
            leg = book.refreshes.get(key)
            if leg is not None:
                self._on_refresh_response(leg, key, response)
                return
        # A retransmitted 2xx to one of our re-INVITEs: ACK it again.
        leg = book.by_dialog.get(DialogId.for_received_response(response))
        if (
            leg is not None
            and 200 <= response.status < 300
            and leg.last_ack is not None
            and leg.last_ack.cseq.number == response.cseq.number
        ):
            book.send_ack(leg, leg.last_ack)

    def _on_refresh_response(self, leg: Leg, key: TransactionKey, response: Response) -> None:
        book = self._book
        if response.status < 200:
            return
        book.refreshes.pop(key, None)
        leg.refresh_key = None
        if leg.state is not LegState.CONNECTED or leg.dialog is None:
            return
        if 200 <= response.status < 300 and leg.refresh_invite is not None:
            ack = leg.dialog.ack(leg.refresh_invite)
            leg.last_ack = ack
            book.send_ack(leg, ack)
            leg.dialog.response_to(response)
            if response.body and leg.sdp is not None:
                with contextlib.suppress(SdpParseError):
                    result = leg.sdp.accept_answer(response.body)
                    if not isinstance(result, NotAcceptable):
                        book.apply_media(leg, result)
            with contextlib.suppress(SipError):
                settled = session_timer.negotiate_uac(response)
                if settled is not None:
                    leg.session = settled
            self.arm_session_timer(leg)
        elif response.status in (408, 481):
            book.counters["session_timeouts_total"] += 1
            book.fail_connected(leg, Cause.FAILURE,
                                f'SIP ;cause={response.status} ;text="session refresh failed"')  # fmt: skip
        else:
            # Any other refusal keeps the session (RFC 4028 §10): try again at the next half.
            self.arm_session_timer(leg)

    def on_refresh_timeout(self, key: TransactionKey) -> None:
        """Our refresh went unanswered (timer B, or a transport failure): the phone is gone."""
        book = self._book
        leg = book.refreshes.pop(key, None)
        if leg is not None:
            leg.refresh_key = None
            if leg.state is LegState.CONNECTED:
                book.counters["session_timeouts_total"] += 1
                book.fail_connected(leg, Cause.FAILURE,
                                    'SIP ;cause=408 ;text="session refresh timed out"')  # fmt: skip
