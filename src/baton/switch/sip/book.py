"""The ``sip`` switch's shared book: its users, its live legs, and the wire every call uses.

The switch's parts — inbound calls (:mod:`.inbound`), outbound calls and forking
(:mod:`.outbound`), requests within a call and session timers (:mod:`.in_dialog`), stale-line
probes (:mod:`.stale`), rooms (:mod:`.rooms`) — each own one concern; what they all need lives
here, once.

Rules
-----
* **One index per way in.** Every message is routed to its leg synchronously: by leg id
  (:attr:`LegBook.legs`), by dialog id (:attr:`LegBook.by_dialog`), by the server INVITE
  transaction still waiting for an ACK (:attr:`LegBook.by_invite`), by our re-INVITE in
  flight (:attr:`LegBook.refreshes`) or by a probe's OPTIONS (:attr:`LegBook.probes`).
  Outbound branches have their own indexes in :mod:`.outbound`.
* **A leg ends once**, in :meth:`LegBook.drop`: out of its room, media released, timers
  cancelled, out of the indexes (the dialog index is kept by whoever still needs it), and
  whoever waited on its probe goes on.
* **Events after commands.** An outbound leg's events are deferred while the command that
  created it runs (:meth:`LegBook.emit_for`).
* **Timers are handles kept** on their leg or in :attr:`LegBook.handles`, so that closing the
  switch cancels every one; there is no fire-and-forget task.
* **Sending never raises for the wire's sake**: a send that fails locally is logged and
  reported as ``None``; a response on a transaction that is gone is dropped.

Theory of operation
-------------------
:class:`Directory` answers "who is this?" from the configured users (ids, numbers, static
contacts' addresses, SRTP policies). :class:`LegBook` holds the transport and the media engine
once the switch has started, the leg indexes and the counters, and offers the operations more
than one part needs: respond, send in a dialog, point the engine at a leg's negotiated media
(:meth:`LegBook.apply_media`), end a connected leg on our side (:meth:`LegBook.fail_connected`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from baton.core.port import Cause, LegEnded, LegGone, SwitchError, SwitchEvent
from baton.switch.media import MediaEngine, srtp
from baton.switch.media.webrtc import new_ice_credentials

from .config import SipConfig, SipUser
from .dialog import DialogId
from .digest import Password, Secret
from .errors import LocalProtocolError, SipError
from .legs import Leg, LegState, OutboundLeg, Probe
from .message import Request, Response, make_response, new_tag
from .rooms import Rooms
from .sdp import Direction, LocalMedia, NegotiatedAudio, WebRtcLocal
from .transaction import Peer, TransactionKey
from .transport import SipTransport
from .uas import UasPolicy
from .uri import SipUri

__all__ = ["POLICY", "SERVER", "Directory", "LegBook", "options_ok", "wish"]

log = logging.getLogger("baton.switch.sip")

#: What Baton implements as a UAS (RFC 3261 §8.2): the methods it answers, the option tags it
#: supports (session timers, RFC 4412 precedence) and the bodies it reads.
POLICY = UasPolicy(
    allowed=frozenset({"INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "REGISTER", "INFO", "UPDATE"}),
    supported=frozenset({"timer", "resource-priority"}),
    accept=frozenset({"application/sdp", "application/dtmf-relay", "application/dtmf"}),
)
SERVER = "Baton"


def wish(leg: Leg) -> Direction:
    """What we want of a leg's media when answering or offering: always both ways — Baton
    holds a party by changing the graph, never by re-INVITE."""
    return Direction.SENDRECV


def options_ok(request: Request) -> Response:
    """Our answer to OPTIONS, inside a call or not: what Baton allows, accepts and supports."""
    return make_response(
        request,
        200,
        to_tag=new_tag(),
        headers=[
            ("Allow", POLICY.allow_header),
            ("Accept", "application/sdp"),
            ("Supported", "timer, resource-priority"),
        ],
    )


@dataclass
class Directory:
    """The configured users, looked up by what a message carries."""

    users: dict[str, SipUser] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)  # user id or number → user id
    #: a static contact's (host, port) → the users it hosts (docs/sip.md, "Static contacts")
    static_sources: dict[tuple[str, int], list[str]] = field(default_factory=dict)
    srtp: dict[str, str] = field(default_factory=dict)  # user id → the user's own SRTP policy

    def secret_of(self, username: str) -> Secret | None:
        user_id = self.names.get(username)
        if user_id is None:
            return None
        return Password(self.users[user_id].password)

    def aor_of(self, uri: object) -> str | None:
        if not isinstance(uri, SipUri) or uri.user_text is None:
            return None
        return self.names.get(uri.user_text)


class LegBook:
    """The live legs, their indexes and the operations every part of the switch shares."""

    def __init__(self, config: SipConfig, directory: Directory, rooms: Rooms) -> None:
        self.config = config
        self.directory = directory
        self.rooms = rooms
        self.listener: Callable[[SwitchEvent], None] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.transport_or_none: SipTransport | None = None
        self.media_or_none: MediaEngine | None = None
        self.legs: dict[str, Leg] = {}  # live legs by id (add with add_leg)
        # The same legs by user: an inbound INVITE looks for its caller's quiet legs, and a
        # scan of every live leg per call grew with the load.
        self._legs_of: dict[str, dict[str, Leg]] = {}
        self.by_dialog: dict[DialogId, Leg] = {}
        self.by_invite: dict[TransactionKey, Leg] = {}  # INVITE server transactions, until ACK
        self.refreshes: dict[TransactionKey, Leg] = {}  # our re-INVITEs in flight
        self.probes: dict[TransactionKey, Probe] = {}  # stale-line OPTIONS in flight
        self.handles: set[asyncio.TimerHandle] = set()
        self.ids = itertools.count(1)
        self.counters: dict[str, int] = {
            "calls_in_total": 0,
            "calls_out_total": 0,
            "auth_failures_total": 0,
            "auth_challenges_total": 0,
            "media_timeouts_total": 0,
            "session_timeouts_total": 0,
            "overload_503_total": 0,
            "stale_lines_freed_total": 0,
        }

    # ---- the engines, once started

    @property
    def transport(self) -> SipTransport:
        if self.transport_or_none is None:
            raise SwitchError("sip: the switch is not started")
        return self.transport_or_none

    @property
    def media(self) -> MediaEngine:
        if self.media_or_none is None:
            raise SwitchError("sip: the switch is not started")
        return self.media_or_none

    def now(self) -> float:
        return self.loop.time() if self.loop is not None else 0.0

    # ---- events and timers

    def emit(self, event: SwitchEvent) -> None:
        if self.listener is not None:
            self.listener(event)

    def emit_for(self, leg: OutboundLeg, event: SwitchEvent) -> None:
        """Emit an event about ``leg``: deferred while its creating command is running."""
        if leg.creating:
            leg.deferred.append(event)
        else:
            self.emit(event)

    def later(self, delay: float, fn: Callable[[], None]) -> None:
        """A switch-wide timer (not tied to a leg), cancelled when the switch closes."""
        assert self.loop is not None
        handle: asyncio.TimerHandle | None = None

        def fire() -> None:
            assert handle is not None
            self.handles.discard(handle)
            fn()

        handle = self.loop.call_later(delay, fire)
        self.handles.add(handle)

    def leg_later(self, leg: Leg, delay: float, fn: Callable[[], None]) -> None:
        assert self.loop is not None
        leg.handles.append(self.loop.call_later(delay, fn))

    @staticmethod
    def cancel_handles(leg: Leg) -> None:
        for handle in leg.handles:
            handle.cancel()
        leg.handles.clear()
        if leg.session_handle is not None:
            leg.session_handle.cancel()
            leg.session_handle = None

    # ---- lookups

    def leg(self, leg_id: str) -> Leg:
        leg = self.legs.get(leg_id)
        if leg is None or leg.state is LegState.ENDED:
            raise LegGone(leg_id, f"sip: no live leg {leg_id!r}")
        return leg

    def connected(self, leg_id: str) -> Leg:
        leg = self.leg(leg_id)
        if leg.state is not LegState.CONNECTED:
            raise SwitchError(f"sip: leg {leg_id!r} is not connected")
        return leg

    def contact(self, transport: str) -> str:
        return self.transport.contact("baton", transport)

    def host(self) -> str:
        address = self.transport.addresses[0]
        return f"[{address.host}]" if ":" in address.host else address.host

    # ---- the wire

    def send_request(self, request: Request, peer: Peer) -> TransactionKey | None:
        """Send in a new client transaction; a local failure (no such transport) is logged
        and reported as ``None``."""
        try:
            return self.transport.send_request(request, peer)
        except LocalProtocolError as exc:
            log.warning("cannot send %s to %s: %s", request.method, peer, exc)
            return None

    def respond(self, key: TransactionKey, response: Response) -> None:
        response.headers.add("Server", SERVER)
        try:
            self.transport.send_response(key, response)
        except LocalProtocolError as exc:
            # The transaction is gone (terminated by a timer) or already answered: nothing
            # more can be said in it.
            log.debug("response %s not sent: %s", response.status, exc)

    def respond_stateless(self, key: TransactionKey, response: Response) -> None:
        """Answer a request that leaves nothing behind (a challenge, a refusal, OPTIONS) and
        forget its transaction at once: a flood of them costs no memory and no
        retransmissions. A phone that missed the answer sends the request again and gets a
        fresh one (docs/sip.md, "Bounds and overload")."""
        self.respond(key, response)
        with contextlib.suppress(LocalProtocolError):
            self.transport.terminate(key)

    def dialog_peer(self, leg: Leg, request: Request) -> Peer:
        """Where an in-dialog request goes: the phone's TCP connection if it has one, else
        its remote target (Contact)."""
        if leg.peer is not None and leg.peer.reliable:
            return leg.peer
        default = leg.peer.transport if leg.peer is not None else "udp"
        try:
            return Peer.next_hop(request, default)
        except SipError:
            if leg.peer is not None:
                return leg.peer
            raise

    def send_in_dialog(self, leg: Leg, request: Request) -> TransactionKey | None:
        try:
            peer = self.dialog_peer(leg, request)
        except SipError as exc:
            log.warning("leg %s: cannot route %s: %s", leg.id, request.method, exc)
            return None
        return self.send_request(request, peer)

    def send_ack(self, leg: Leg, ack: Request) -> None:
        try:
            peer = self.dialog_peer(leg, ack)
            self.transport.send_stateless(ack, peer)
        except SipError as exc:
            log.debug("leg %s: ACK not sent: %s", leg.id, exc)

    def send_bye(self, leg: Leg, reason: str | None) -> None:
        dialog = leg.dialog
        if dialog is None or dialog.terminated:
            return
        headers = [("Reason", reason)] if reason else []
        bye = dialog.create_request("BYE", headers=headers)
        dialog.terminate()
        self.by_dialog.pop(dialog.id, None)
        self.send_in_dialog(leg, bye)

    # ---- the end of a leg

    def add_leg(self, leg: Leg) -> None:
        """A new live leg."""
        self.legs[leg.id] = leg
        self._legs_of.setdefault(leg.user, {})[leg.id] = leg

    def legs_of(self, user: str) -> list[Leg]:
        """The live legs of ``user``."""
        legs = self._legs_of.get(user)
        return [] if legs is None else list(legs.values())

    def drop(self, leg: Leg) -> None:
        """The leg is over for the core: out of every room, media released, timers cancelled,
        forgotten (the dialog index is kept by whoever still needs it)."""
        if leg.state is LegState.ENDED:
            return
        leg.state = LegState.ENDED
        self.cancel_handles(leg)
        if self.legs.get(leg.id) is leg:
            del self.legs[leg.id]
            of_user = self._legs_of.get(leg.user)
            if of_user is not None and of_user.pop(leg.id, None) is not None and not of_user:
                del self._legs_of[leg.user]
        self.rooms.leave_room(leg.id)
        if self.media_or_none is not None:
            self.media_or_none.release(leg.id)
        if leg.dialog is not None:
            self.by_dialog.pop(leg.dialog.id, None)
        if leg.refresh_key is not None:
            self.refreshes.pop(leg.refresh_key, None)
        probe = leg.probe
        if probe is not None:  # ended meanwhile (a BYE): whoever waits goes on
            self.detach_probe(probe)
            for done in probe.waiting:
                done()

    def detach_probe(self, probe: Probe) -> None:
        """The probe is over: off its leg, its timer and its transaction forgotten."""
        probe.leg.probe = None
        if probe.handle is not None:
            probe.handle.cancel()
        if probe.key is not None:
            self.probes.pop(probe.key, None)

    def fail_connected(self, leg: Leg, cause: Cause, reason: str) -> None:
        """A connected leg died on our side of the wire (no ACK, no RTP, no refresh)."""
        if leg.state is not LegState.CONNECTED:
            return
        self.send_bye(leg, reason)
        self.drop(leg)
        self.emit(LegEnded(leg.id, cause, by_user=False))

    # ---- media of a leg

    def local_media(self, user: str, host: str, port: int, *, browser: bool = False) -> LocalMedia:
        """Our media for a leg of ``user``: the user's SRTP policy, else ``[sip] srtp``
        (docs/sip.md, "SRTP"), and, unless it is off, a fresh key for the leg. When Baton
        listens on WebSocket, fresh ICE credentials too (a browser's offer can be answered);
        ``browser``: our offer is for a browser (docs/sip.md, "WebRTC")."""
        policy = self.directory.srtp.get(user, self.config.srtp)
        key = srtp.new_key() if policy != "off" else None
        web = None
        transports = self.transport.transports
        if "ws" in transports or "wss" in transports:
            web = WebRtcLocal(*new_ice_credentials(), self.media.dtls_fingerprint)
        return LocalMedia(host, port, srtp=policy, srtp_key=key, webrtc=web, offer_webrtc=browser)

    def apply_media(self, leg: Leg, media: NegotiatedAudio, *, initial: bool = False) -> None:
        """Point the engine at what the phone's SDP says (again on every re-INVITE): a new
        address or codec resets the leg's RTP (:meth:`MediaEngine.set_remote`); a change of
        direction only (hold, resume) starts or stops our sending."""
        old = leg.media
        leg.media = media
        if media.remote_address is None:  # RFC 2543 hold (0.0.0.0): nowhere to send
            self.media.set_sending(leg.id, False)
            return
        sends = media.local_direction.sends
        changed = (
            initial
            or old is None
            or old.remote_address != media.remote_address
            or old.remote_port != media.remote_port
            or old.codec.payload_type != media.codec.payload_type
            or old.dtmf_payload_type != media.dtmf_payload_type
            or old.srtp_receive != media.srtp_receive
            or old.webrtc != media.webrtc
        )
        if changed:
            self.media.set_remote(
                leg.id,
                media.remote_address,
                media.remote_port,
                payload_type=media.codec.payload_type,
                codec=media.codec.name,
                telephone_event=media.dtmf_payload_type,
                send=sends,
                srtp_send=media.srtp_send,
                srtp_receive=media.srtp_receive,
                webrtc=media.webrtc,
            )
        else:
            self.media.set_sending(leg.id, sends)
