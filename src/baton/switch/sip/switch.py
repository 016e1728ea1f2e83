"""The ``sip`` switch: Baton's own registrar and back-to-back user agent on real phones.

Every leg terminates here: a phone's call in is answered by Baton (its media anchored in the
:class:`~baton.switch.media.MediaEngine`), and a call out is a new INVITE from Baton. Flows move
users between calls by changing the media graph alone; phones never re-negotiate for that.

:class:`SipSwitch` is the façade that implements the port (:mod:`baton.core.port`); the work
is done by parts that each own one concern, over a shared book of legs:

* :mod:`.legs` — what is kept per leg, one type per direction (:class:`~.legs.InboundLeg`,
  :class:`~.legs.OutboundLeg`) over a common :class:`~.legs.Leg`;
* :mod:`.book` — the users, the live legs and their indexes, the wire every call uses, and the
  end of a leg;
* :mod:`.inbound` — INVITEs from phones: identity, checks, ringing, CANCEL, the 200;
* :mod:`.outbound` — calls to a user's contacts, forking, first answer wins, CANCEL of the rest;
* :mod:`.in_dialog` — inside a call either way: BYE, re-INVITE/UPDATE, INFO, ACKs of our 2xx,
  session timers;
* :mod:`.stale` — probing a quiet call when its user calls or registers again;
* :mod:`.rooms` — bridges and meetings on the media graph.

Rules (the port's contract, :mod:`baton.core.port`, on SIP)
--------------------------------------------------------------
* **Events after commands.** An outbound leg's events (ringing, answered, failed) are emitted
  from the transport's callbacks, which run only after :meth:`SipSwitch.originate` returned;
  a failure found *during* the command (no registered contact, a send error) is deferred to
  the next loop turn.
* **One owner of the wire per leg.** Each leg knows its INVITE transaction, its dialog and,
  outbound, its forked branches. Every message is routed to its part, and by the part to the
  leg (by Call-ID, dialog id or transaction key), synchronously: :meth:`SipSwitch._on_transport`
  is the one switchboard.
* **Always answer.** The server INVITE transaction waits forever for the TU: an inbound call is
  answered (200), refused (4xx/6xx) or, if nobody decides, ended with 480 after
  ``inbound_ring_timeout``. A 2xx that is never ACKed (timer L) ends the leg with BYE.
* **No fire-and-forget tasks.** The only task is the start-up; every timer is a loop handle
  kept on its leg (or in the book); :meth:`SipSwitch.close` cancels them all, hangs up every
  live leg, then closes the media engine and the transport.

Theory of operation
-------------------
*Requests* pass the §8.2 checks (:mod:`.uas`) and load shedding here, then go by kind:
REGISTER to the :class:`~.registrar.Registrar` (here), a new INVITE and CANCEL to
:mod:`.inbound`, anything with a To tag to :mod:`.in_dialog`; OPTIONS and strays outside a
dialog are answered statelessly. *Responses* go to the first part that knows their transaction:
a crashed run's BYE (here), a stale-line probe, an outbound branch, our own re-INVITE.
*Timeouts and transport failures* follow the same order.

*Ending.* :meth:`hangup` sends BYE to a connected leg (after the ACK, RFC 3261 §15), CANCEL to a
ringing outbound one and a final error to a ringing inbound one, with ``Reason: preemption``
(RFC 4411) for a preempted leg. Dead phones are found by the engine's RTP timeout and by
session timers; both end the leg with BYE and ``by_user=False``.

*After a crash.* :meth:`dialogs` gives each confirmed dialog as JSON-ready data (the service's
heartbeat journals it); at the next start :meth:`end_dialogs` sends each a BYE from the new
process, so the phones of the dead run leave their calls (docs/sip.md, "After a crash").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from baton.core.port import (
    Cause,
    EndReason,
    LegEnded,
    Member,
    Prompt,
    Switch,
    SwitchError,
    SwitchEvent,
    Target,
    Tone,
)
from baton.switch.media import MediaEngine, MediaEvent, MediaTimeout, opus

from .b2bua import hangup_reason, status_for_cause
from .book import POLICY, Directory, LegBook, options_ok
from .config import SipConfig, SipConfigError, SipUser, parse_sip_config, tls_error_text
from .dialog import Dialog, DialogState
from .digest import DigestAuthenticator
from .errors import LocalProtocolError, SipError
from .in_dialog import InDialog
from .inbound import Inbound
from .legs import InboundLeg, Leg, LegState, OutboundLeg
from .message import Request, Response, make_response, new_tag
from .outbound import Outbound
from .peers import PeerLines, line_ids
from .registrar import AuthThrottle, Binding, Registrar
from .rooms import Rooms
from .stale import StaleLines
from .transaction import (
    AckReceived,
    Peer,
    RequestReceived,
    ResponseReceived,
    StrayResponse,
    Timer,
    TransactionFailed,
    TransactionKey,
    TransactionTerminated,
    TransactionTimedOut,
)
from .transport import (
    ConnectionClosed,
    ListenAddress,
    ParseFailed,
    SipTransport,
    TransportEvent,
)
from .uas import check_request
from .uri import parse_name_addr

__all__ = ["SipSwitch", "TransportFactory", "create_switch"]

log = logging.getLogger("baton.switch.sip")

TransportFactory = Callable[[Sequence[str], Callable[[TransportEvent], None]], SipTransport]
MediaFactory = Callable[[SipConfig], MediaEngine]

_SRTP_POLICIES = frozenset({"off", "optional", "required"})
#: A BYE after a crash skips this many CSeq numbers past the last journaled one: requests sent
#: in the dialog after the last heartbeat (a session refresh, a probe) took some, and a phone
#: refuses a CSeq lower than one it saw (RFC 3261 §12.2.2), but accepts a jump.
_CRASH_CSEQ_SKIP = 100


class SipSwitch(Switch):
    """The ``sip`` adapter of the switch port. Build it with :func:`create_switch` (from the
    config) or directly; ``await start()`` binds the sockets (the first command, or installing
    the listener inside a running loop, starts it too). See the module docstring.

    ``transport_factory`` and ``media_factory`` let tests put a fake transport or a tuned
    engine in; ``secret`` keys the digest nonces (random per process by default).
    """

    def __init__(
        self,
        config: SipConfig,
        users: Sequence[SipUser],
        *,
        transport_factory: TransportFactory | None = None,
        media_factory: MediaFactory | None = None,
        secret: bytes | None = None,
    ) -> None:
        self.config = config
        self._directory = directory = Directory()
        tls_server, tls_client = _tls_contexts(config)
        self._transport_factory: TransportFactory = transport_factory or (
            lambda listen, on_event: SipTransport(listen, on_event, bounds=config.limits,
                                                  tls=tls_server, tls_client=tls_client)
        )  # fmt: skip
        self._media_factory: MediaFactory = media_factory or _default_media
        self.authenticator = DigestAuthenticator(
            config.realm,
            secret or os.urandom(32),
            algorithms=config.digest_algorithms,
            nonce_lifetime=config.nonce_lifetime,
        )
        self.throttle = AuthThrottle(
            max_failures=config.max_auth_failures,
            window=config.auth_failure_window,
            block=config.auth_block,
        )
        #: ``[sip.peers]``: calls with the other tenants of a cluster (:mod:`.peers`)
        self.peers: PeerLines | None = None
        if config.peers is not None:
            edge, key, count, prefixes = config.peers
            at = ListenAddress.parse(edge)
            self.peers = PeerLines(at.host, at.port, at.transport, key, tuple(line_ids(count)),
                                   prefixes, config.peer_tenant)  # fmt: skip
        names = directory.names
        self.registrar = Registrar(
            authenticator=self.authenticator,
            lookup=directory.secret_of,
            min_expires=config.min_expires,
            max_expires=config.max_expires,
            default_expires=config.default_expires,
            throttle=self.throttle,
            aor_of=directory.aor_of,
            may_register=lambda username, aor: names.get(username) == aor,
        )
        self.set_users(users)
        self._rooms = Rooms()
        self._book = book = LegBook(config, directory, self._rooms)
        self._in_dialog = InDialog(book)
        self._stale = StaleLines(book)
        self._inbound = Inbound(book, self._in_dialog, self._stale, self.authenticator,
                                self.throttle, self.peers)  # fmt: skip
        self._outbound = Outbound(book, self._in_dialog, self.registrar, self.peers)
        #: live legs by id (the book's, shared)
        self.legs: dict[str, Leg] = book.legs
        #: operational counts for ``/metrics`` (the book's, shared)
        self.counters: dict[str, int] = book.counters
        self._start_task: asyncio.Task[None] | None = None
        self._started = False
        self._closed = False
        self._crash_byes: dict[TransactionKey, str] = {}  # end_dialogs' BYEs → Call-ID
        self._last_expiry = 0.0

    # ------------------------------------------------------------------ users

    def set_users(self, users: Sequence[SipUser], *, dry_run: bool = False) -> None:
        """The users from now on (the service's provisioning changed them): their passwords,
        numbers, SRTP policies and static contacts. A user no longer among them loses its
        registrations (its phones can no longer be called, and must register again if it comes
        back); calls in progress are not touched. Raises :class:`SipConfigError` naming every
        bad user, changing nothing; ``dry_run`` only checks."""
        names: dict[str, str] = {}
        srtp_policies: dict[str, str] = {}
        problems: list[str] = []
        for user in users:
            # ``srtp`` is optional on a user (the service's UserConfig has it): it overrides
            # ``[sip] srtp`` for that user's legs (docs/sip.md, "SRTP").
            policy = getattr(user, "srtp", None)
            if policy is not None:
                if policy not in _SRTP_POLICIES:
                    problems.append(f'users[{user.id}].srtp: expected "off", "optional" or '
                                    f'"required", not {policy!r}')  # fmt: skip
                else:
                    srtp_policies[user.id] = policy
            names.setdefault(user.id, user.id)
            for number in user.numbers:
                names.setdefault(number, user.id)
        statics: list[tuple[str, str, Peer]] = []
        for user in users:
            if user.contact is None:
                continue
            # A bare URI's ;params would be the header's, not the URI's: the config means
            # the URI (``sip:bob@10.0.0.5:5070;transport=tcp``).
            text = user.contact.strip()
            if "<" not in text:
                text = f"<{text}>"
            try:
                peer = Peer.for_uri(parse_name_addr(text, "Contact").uri)
            except SipError as exc:
                problems.append(f"users[{user.id}].contact: {exc}")
                continue
            statics.append((user.id, text, peer))
        if problems:
            raise SipConfigError(problems)
        if dry_run:
            return
        ids = {user.id for user in users}
        for aor in self.registrar.aors():
            self.registrar.forget(aor, static_only=aor in ids)
        # In place: the leg book, the inbound side and the registrar share these maps.
        d = self._directory
        d.users.clear()
        d.users.update((user.id, user) for user in users)
        d.names.clear()
        d.names.update(names)
        d.srtp.clear()
        d.srtp.update(srtp_policies)
        d.static_sources.clear()
        for user_id, text, peer in statics:
            self.registrar.add_static(user_id, text)
            # A static contact is trusted by address, like a trunk: calls from there are its
            # user's without a digest challenge. One address may host several users (a gateway,
            # a test tool): the From user then says which of them calls.
            d.static_sources.setdefault((peer.host, peer.port), []).append(user_id)
        if self.peers is not None:
            # Users of the switch, not of the config: no name maps to them (no digest, no
            # REGISTER); their contact is set per call (:meth:`dial_peer`).
            d.users.update((line.id, line) for line in self.peers.users())

    # ------------------------------------------------------------------ peer lines

    @property
    def peer_lines(self) -> tuple[str, ...]:
        """The peer lines' user ids (docs/cluster.md, "Calls between tenants")."""
        return () if self.peers is None else self.peers.lines

    @property
    def peer_numbers(self) -> tuple[str, ...]:
        """The prefixes of the numbers other tenants own (the dial plan's)."""
        return () if self.peers is None else self.peers.numbers

    def dial_peer(self, line: str, number: str) -> None:
        """The next call to peer line ``line`` goes to ``number`` of another tenant, through
        the edge."""
        if self.peers is None or line not in self.peers.lines:
            raise SwitchError(f"sip: {line!r} is no peer line")
        self.registrar.forget(line)
        self.registrar.add_static(line, self.peers.contact(number))

    # ------------------------------------------------------------------ stale lines

    @property
    def quiet_before_probe(self) -> float:
        """Seconds without RTP before a user's call is probed when the user sends a new
        INVITE or REGISTER (docs/sip.md, "Stale lines")."""
        return self._stale.quiet_before_probe

    @quiet_before_probe.setter
    def quiet_before_probe(self, seconds: float) -> None:
        self._stale.quiet_before_probe = seconds

    @property
    def probe_wait(self) -> float:
        """How long a stale-line probe waits for the phone's answer."""
        return self._stale.probe_wait

    @probe_wait.setter
    def probe_wait(self, seconds: float) -> None:
        self._stale.probe_wait = seconds

    # ------------------------------------------------------------------ life cycle

    @property
    def transport(self) -> SipTransport:
        """The SIP transport (after :meth:`start`)."""
        return self._book.transport

    @property
    def media(self) -> MediaEngine:
        """The media engine (after :meth:`start`)."""
        return self._book.media

    async def start(self) -> None:
        """Create the media engine and bind every listen address. Idempotent; safe to await
        from several tasks. Raises :class:`SwitchError` if an address cannot be bound."""
        if self._started:
            return
        if self._closed:
            raise SwitchError("sip: the switch is closed")
        if self._start_task is None:
            self._start_task = asyncio.get_running_loop().create_task(
                self._start(), name="sip-switch-start"
            )
            self._start_task.add_done_callback(_log_start_failure)
        await asyncio.shield(self._start_task)

    async def _start(self) -> None:
        book = self._book
        book.loop = asyncio.get_running_loop()
        media = self._media_factory(self.config)
        transport = self._transport_factory(list(self.config.listen), self._on_transport)
        try:
            await transport.start()
        except OSError as exc:
            await media.close()
            raise SwitchError(f"sip: cannot listen on {list(self.config.listen)}: {exc}") from exc
        media.set_listener(self._on_media)
        book.media_or_none, book.transport_or_none = media, transport
        self._rooms.engine = media
        self._started = True
        log.info("sip switch listening on %s", ", ".join(map(str, transport.addresses)))
        if not opus.AVAILABLE:
            log.warning("libopus not found (Debian package libopus0): Opus is not offered")

    async def _ready(self) -> None:
        if not self._started:
            await self.start()

    async def close(self) -> None:
        """Hang up every live leg, cancel every timer, close the engine and the transport."""
        if self._closed:
            return
        self._closed = True
        book = self._book
        self._inbound.close()
        if self._start_task is not None and not self._start_task.done():
            self._start_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, SwitchError):
                await self._start_task
        if self._started:
            for leg in list(book.legs.values()):
                with contextlib.suppress(SipError, SwitchError):
                    self._hangup(leg, Cause.NORMAL, None)
        for leg in list(book.by_invite.values()):
            book.cancel_handles(leg)
        for handle in list(book.handles):
            handle.cancel()
        book.handles.clear()
        self._stale.close()
        if book.media_or_none is not None:
            await book.media_or_none.close()
        if book.transport_or_none is not None:
            await book.transport_or_none.close()
        self._started = False

    def set_listener(self, listener: Callable[[SwitchEvent], None]) -> None:
        """Install the core's listener; inside a running loop this also starts the switch, so
        that phones can register before the first command."""
        self._book.listener = listener
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._start_task is None and not self._closed:
            self._start_task = asyncio.get_running_loop().create_task(
                self._start(), name="sip-switch-start"
            )
            self._start_task.add_done_callback(_log_start_failure)

    def metrics(self) -> dict[str, float]:
        """Operational figures for ``/metrics`` (exported as ``baton_switch_<name>``)."""
        book = self._book
        now = book.now()
        registrations = sum(
            1
            for aor in self.registrar.aors()
            for b in self.registrar.contacts(aor, now)
            if not b.static
        )
        out: dict[str, float] = {
            "registrations": registrations,
            "legs": len(book.legs),
            "late_media_frames_total": 0,
        }
        out.update({k: float(v) for k, v in book.counters.items()})
        if book.media_or_none is not None:
            m = book.media_or_none.metrics
            out["late_media_frames_total"] = m.late_frames
            out["lost_media_frames_total"] = m.lost_frames
            out["rtp_packets_in_total"] = m.packets_in
            out["rtp_packets_out_total"] = m.packets_out
            out["rtp_packets_invalid_total"] = m.invalid
        if book.transport_or_none is not None:
            t = book.transport_or_none
            out["tcp_connections"] = t.tcp_connections
            out["unanswered_transactions"] = t.unanswered
            out["loop_lag_seconds"] = t.lag
            for reason, count in t.refused.items():
                out[f"refused_{reason}_total"] = count
        return out

    # ------------------------------------------------------------------ after a crash

    def dialogs(self) -> list[dict[str, Any]]:
        """Every confirmed dialog now, JSON-ready: what :meth:`end_dialogs` needs to BYE it
        from another process (the dialog's state, the transport and the phone's address)."""
        out: list[dict[str, Any]] = []
        for leg in self._book.legs.values():
            dialog = leg.dialog
            if leg.state is not LegState.CONNECTED or dialog is None or leg.peer is None:
                continue
            if dialog.state is not DialogState.CONFIRMED:
                continue
            peer = leg.peer
            out.append({**dialog.to_json(), "transport": peer.transport,
                        "host": peer.host, "port": peer.port})  # fmt: skip
        return out

    async def end_dialogs(self, dialogs: list[Any]) -> int:
        """BYE each dialog of :meth:`dialogs`' data (a crashed run's calls); return how many
        BYEs went out. Fire and forget: the non-INVITE transaction retransmits each until it
        is answered or times out (64*T1), and the outcome is only logged; a dialog that cannot
        be rebuilt or routed is logged and skipped."""
        await self._ready()
        sent = 0
        for data in dialogs:
            try:
                if not isinstance(data, Mapping):
                    raise LocalProtocolError(f"not a saved dialog: {data!r}")
                dialog = Dialog.from_json(data)
                dialog.local_cseq += _CRASH_CSEQ_SKIP
                bye = dialog.create_request(
                    "BYE", headers=[("Reason", 'SIP ;cause=500 ;text="server restarted"')]
                )
                saved = Peer(str(data["transport"]), str(data["host"]), int(data["port"]))
                try:
                    # Like any in-dialog request: to the remote target (or first route). The
                    # dead run's TCP connection is gone, so that holds for TCP and TLS too.
                    peer = Peer.next_hop(bye, saved.transport)
                except SipError:
                    peer = saved
            except (SipError, KeyError, TypeError, ValueError) as exc:
                log.warning("cannot end a crashed run's call: %s", exc)
                continue
            key = self._book.send_request(bye, peer)
            if key is None:
                continue
            self._crash_byes[key] = dialog.id.call_id
            sent += 1
            log.info("a crashed run's call %s: BYE sent to %s", dialog.id.call_id, peer)
        return sent

    # ------------------------------------------------------------------ the switchboard

    def _on_transport(self, event: TransportEvent) -> None:
        if isinstance(event, RequestReceived):
            self._on_request(event)
        elif isinstance(event, ResponseReceived):
            self._on_response(event.response, event.key)
        elif isinstance(event, AckReceived):
            self._in_dialog.on_ack(event.key, event.request)
        elif isinstance(event, StrayResponse):
            self._on_response(event.response, None)
        elif isinstance(event, TransactionTimedOut):
            self._on_timeout(event.key, event.request, event.timer)
        elif isinstance(event, TransactionFailed):
            self._on_transport_failure(event.key, event.request)
        elif isinstance(event, TransactionTerminated):
            self._on_terminated(event.key)
        elif isinstance(event, ParseFailed):
            log.debug("unparsable message from %s: %s", event.peer, event.error)
        elif isinstance(event, ConnectionClosed):
            for binding in self.registrar.drop_flow(event.peer):
                log.info("%s's browser phone went away: registration %s dropped",
                         binding.aor, binding.contact_text)  # fmt: skip
            self._calls_gone_with(event.peer)

    def _calls_gone_with(self, peer: Peer) -> None:
        """A browser's connection closed (docs/sip.md, "WebRTC"): Baton opens no WebSocket, so
        nothing reaches the calls made over it any more — no BYE, CANCEL or re-INVITE — and
        their media went with the page. Each ends now rather than at the RTP timeout (the other
        party would hear nothing meanwhile): a call up ends as a stale line does
        (``LegEnded(FAILURE)``), one the browser was placing as if cancelled, one ringing
        there fails as unreachable."""
        self._outbound.connection_closed(peer)
        book = self._book
        for leg in [leg for leg in book.legs.values() if leg.peer == peer]:
            if leg.state is LegState.CONNECTED:
                log.info("leg %s: %s's browser went away mid-call: ended", leg.id, leg.user)
                if leg.dialog is not None:
                    leg.dialog.terminate()  # no BYE: there is no way to the browser
                book.drop(leg)
                book.emit(LegEnded(leg.id, Cause.FAILURE, by_user=False))
            elif isinstance(leg, InboundLeg) and leg.state is LegState.RINGING:
                log.info("leg %s: %s's browser went away while calling", leg.id, leg.user)
                self._inbound.refuse(leg, 487, None)
                book.emit(LegEnded(leg.id, Cause.CANCELLED, by_user=True))

    def _on_request(self, event: RequestReceived) -> None:
        request = event.request
        error = check_request(request, POLICY)
        if error is not None:
            self._book.respond_stateless(event.key, error)
            return
        method = request.method
        if self._shed(event):
            return
        if method == "REGISTER":
            self._on_register(event)
        elif method == "CANCEL":
            self._inbound.on_cancel(event)
        elif request.to.tag is not None:
            self._in_dialog.on_request(event)
        elif method == "INVITE":
            self._inbound.on_invite(event)
        elif method == "OPTIONS":
            self._book.respond_stateless(event.key, options_ok(request))
        else:  # BYE, INFO, UPDATE outside a dialog
            self._book.respond_stateless(event.key,
                                         make_response(request, 481, to_tag=new_tag()))  # fmt: skip

    def _shed(self, event: RequestReceived) -> bool:
        """Load shedding: while the loop lags (:attr:`SipTransport.overloaded`), a new call,
        registration or OPTIONS is refused with 503 and ``Retry-After`` — unless it comes from
        a static contact's address or carries credentials (work already under way: finishing
        it is worth more than starting new). Requests within calls always go through."""
        request = event.request
        if request.to.tag is not None or request.method not in ("INVITE", "REGISTER", "OPTIONS"):
            return False
        transport = self._book.transport
        if not transport.overloaded:
            return False
        peer = event.peer
        if (peer.host, peer.port) in self._directory.static_sources:
            return False
        if "Authorization" in request.headers or "Proxy-Authorization" in request.headers:
            return False
        self._book.counters["overload_503_total"] += 1
        retry = str(transport.bounds.retry_after)
        self._book.respond_stateless(event.key, make_response(
            request, 503, to_tag=new_tag(), headers=[("Retry-After", retry)]))  # fmt: skip
        return True

    def _on_register(self, event: RequestReceived) -> None:
        book = self._book
        now = book.now()
        if now - self._last_expiry > 60.0:
            self._last_expiry = now
            self.registrar.expire(now)
        response = self.registrar.process(
            event.request, source=event.peer.host, now=now, flow=event.peer
        )
        if response.status == 401:
            book.counters["auth_challenges_total"] += 1
        elif response.status == 403:
            book.counters["auth_failures_total"] += 1
        elif response.status == 200:
            user = self._directory.aor_of(event.request.to.uri)
            if user is not None:
                # A phone back from the dead re-registers.
                self._stale.probe_quiet_legs(user, None)
        if response.status >= 300:
            book.respond_stateless(event.key, response)
        else:
            book.respond(event.key, response)

    def _on_response(self, response: Response, key: TransactionKey | None) -> None:
        if key is not None and response.status >= 200:
            call_id = self._crash_byes.pop(key, None)
            if call_id is not None:
                log.info("a crashed run's call %s: BYE answered %d", call_id, response.status)
                return
            if self._stale.on_final(key, response.status):
                return
        if self._outbound.on_response(response):
            return
        if response.cseq.method != "INVITE":
            return  # BYE, CANCEL, INFO: nothing depends on their answers
        self._in_dialog.on_response(response, key)

    def _on_timeout(self, key: TransactionKey, request: Request, timer: Timer) -> None:
        call_id = self._crash_byes.pop(key, None)
        if call_id is not None:
            log.warning("a crashed run's call %s: BYE not answered", call_id)
            return
        if self._stale.on_final(key, 408):
            return
        if key.server:
            self._in_dialog.on_server_timeout(key, timer)
            return
        if request.method == "INVITE" and not self._outbound.on_timeout(request):
            self._in_dialog.on_refresh_timeout(key)

    def _on_transport_failure(self, key: TransactionKey, request: Request) -> None:
        call_id = self._crash_byes.pop(key, None)
        if call_id is not None:
            log.warning("a crashed run's call %s: BYE not delivered", call_id)
            return
        if self._stale.on_final(key, 408):
            return
        if request.method != "INVITE" or key.server:
            return
        if not self._outbound.on_transport_failure(request):
            self._on_timeout(key, request, Timer.B)

    def _on_terminated(self, key: TransactionKey) -> None:
        self._crash_byes.pop(key, None)
        if key.server:
            self._book.by_invite.pop(key, None)
            return
        self._outbound.on_terminated(key)

    def _on_media(self, event: MediaEvent) -> None:
        book = self._book
        if isinstance(event, MediaTimeout):
            leg = book.legs.get(event.leg)
            if leg is not None and leg.state is LegState.CONNECTED:
                log.info("leg %s: no RTP for %.0f s: the phone is gone", leg.id, event.idle)
                book.counters["media_timeouts_total"] += 1
                book.fail_connected(leg, Cause.MEDIA_TIMEOUT,
                                    'SIP ;cause=408 ;text="RTP timeout"')  # fmt: skip
            return
        book.emit(event)  # playbacks, recordings, RFC 4733 digits: the engine's ids are ours

    # ------------------------------------------------------------------ calls

    async def answer(self, leg: str) -> None:
        """Answer an inbound leg: 200 OK with our SDP answer (or our offer, if the INVITE had
        none), the engine pointed at the phone. Returns once the 200 is sent: the transaction
        retransmits it until the phone's ACK, nothing else is sent in the dialog before that
        ACK (a hang-up meanwhile waits for it, RFC 3261 §15), and a 200 never ACKed (timer L)
        ends the leg with BYE and ``LegEnded(FAILURE)``. Not waiting for the ACK here keeps a
        flow from failing on a lost ACK that the phone repairs by itself.

        Raises :class:`SwitchError` for an unknown, ended or outbound leg.
        """
        await self._ready()
        entry = self._book.leg(leg)
        if not isinstance(entry, InboundLeg):
            raise SwitchError(f"sip: leg {leg!r} is outbound")
        self._inbound.answer(entry)

    async def originate(
        self, leg: str, user: str, *, caller: str | None = None, priority: int | None = None
    ) -> None:
        """INVITE every registered contact of ``user``: the first 2xx wins, the others are
        cancelled (docs/sip.md, "Calls to a phone").

        Raises :class:`SwitchError` for an unknown user, a leg id in use, or no free RTP
        port. A user with no contact fails later with ``LegFailed(UNREACHABLE)``.
        """
        await self._ready()
        self._outbound.originate(leg, user, caller, priority)

    async def hangup(
        self, leg: str, cause: Cause = Cause.NORMAL, reason: EndReason | None = None
    ) -> None:
        """End a leg (idempotent): BYE when connected, CANCEL when ringing out, a final error
        (486/603/480/404) when ringing in — with ``Reason: preemption`` for a preempted leg."""
        await self._ready()
        entry = self._book.legs.get(leg)
        if entry is None or entry.state is LegState.ENDED:
            return
        self._hangup(entry, cause, reason)

    def _hangup(self, leg: Leg, cause: Cause, reason: EndReason | None) -> None:
        book = self._book
        header = hangup_reason(cause, reason)
        if isinstance(leg, InboundLeg) and leg.state is LegState.RINGING:
            self._inbound.refuse(leg, status_for_cause(cause), header)
            return
        if isinstance(leg, OutboundLeg) and leg.state is LegState.RINGING:
            book.drop(leg)
            self._outbound.cancel_branches(leg)
            return
        if isinstance(leg, InboundLeg) and not leg.acked:
            leg.bye_after_ack = header or ""  # RFC 3261 §15: no BYE before the ACK
            book.drop(leg)
            return
        book.send_bye(leg, header)
        book.drop(leg)

    # ------------------------------------------------------------------ rooms

    async def bridge(self, leg_a: str, leg_b: str) -> None:
        await self._ready()
        self._book.connected(leg_a)
        self._book.connected(leg_b)
        self._rooms.bridge(leg_a, leg_b)

    async def create_meeting(self, meeting: str) -> None:
        await self._ready()
        self._book.media.create_meeting(meeting)

    async def join(self, meeting: str, member: Member) -> None:
        await self._ready()
        self._book.connected(member.leg)
        self._rooms.join(meeting, member)

    async def leave(self, meeting: str, leg: str) -> None:
        await self._ready()
        self._rooms.leave(meeting, leg)

    async def destroy_meeting(self, meeting: str) -> None:
        await self._ready()
        self._rooms.destroy_meeting(meeting)

    async def clear(self, leg: str) -> None:
        await self._ready()
        if leg not in self._book.legs:
            return
        self._rooms.leave_meeting(leg)
        self._book.media.clear(leg)

    # ------------------------------------------------------------------ media operations

    def _check_target(self, target: Target) -> None:
        if target.leg is not None:
            self._book.connected(target.leg)
        else:
            assert target.meeting is not None
            self._book.media.mixer.meeting_members(target.meeting)  # MediaError if unknown

    async def play(self, target: Target, media: Tone | Prompt, *, loop: bool = False) -> str:
        await self._ready()
        self._check_target(target)
        return await self._book.media.play(target, media, loop=loop)

    async def stop_play(self, playback: str) -> None:
        await self._ready()
        self._book.media.stop_play(playback)

    async def record(self, target: Target, path: str) -> str:
        await self._ready()
        self._check_target(target)
        return self._book.media.record(target, path)

    async def stop_record(self, recording: str) -> None:
        await self._ready()
        self._book.media.stop_record(recording)

    async def send_dtmf(self, leg: str, digits: str) -> None:
        """Send RFC 4733 digits to a connected leg's phone (not part of the port)."""
        await self._ready()
        self._book.connected(leg)
        self._book.media.send_dtmf(leg, digits)

    # ------------------------------------------------------------------ queries (tests, API)

    def leg_state(self, leg: str) -> str | None:
        """``"ringing"``, ``"connected"`` or ``None`` (unknown or ended)."""
        entry = self._book.legs.get(leg)
        return None if entry is None else entry.state.value

    def leg_of(self, user: str) -> str | None:
        """The id of ``user``'s live leg, if any."""
        for leg in self._book.legs.values():
            if leg.user == user:
                return leg.id
        return None

    def meeting_of(self, leg: str) -> str | None:
        return self._rooms.meeting_of.get(leg)

    def bridged_to(self, leg: str) -> str | None:
        """The leg ``leg`` is bridged to in the engine, if any."""
        return self._rooms.bridged_to(leg)

    def registered(self, user: str) -> list[Binding]:
        """``user``'s live bindings (registered and static)."""
        return self.registrar.contacts(user, self._book.now())

    def bindings(self) -> list[dict[str, object]]:
        """The phones' registrations now, JSON-ready, for a standby to restore
        (docs/cluster.md): a phone keeps its registration across a fail-over."""
        return self.registrar.snapshot(self._book.now())

    def restore_bindings(self, entries: list[dict[str, object]], *, age: float = 0.0) -> int:
        """Re-create registrations :meth:`bindings` gave another process ``age`` s ago."""
        return self.registrar.restore(entries, self._book.now(), age=age)


def _tls_contexts(config: SipConfig) -> tuple[ssl.SSLContext | None, ssl.SSLContext | None]:
    """The server and client TLS contexts of ``[sip.tls]`` (docs/sip.md, "SIP over TLS").

    Server: our certificate; with ``ca``, phones must present a certificate it signed. Client
    (connections we open to ``;transport=tls`` contacts): our certificate too, and the phone's
    verified against ``ca`` when given — phones rarely have a certificate an authority signed,
    so without ``ca`` it is not verified (the channel is still encrypted)."""
    if config.tls_certificate is None or config.tls_key is None:
        return None, None
    try:
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.minimum_version = ssl.TLSVersion.TLSv1_2
        server.load_cert_chain(config.tls_certificate, config.tls_key)
        client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client.minimum_version = ssl.TLSVersion.TLSv1_2
        client.load_cert_chain(config.tls_certificate, config.tls_key)
        if config.tls_ca is not None:
            server.load_verify_locations(config.tls_ca)
            server.verify_mode = ssl.CERT_REQUIRED
            client.load_verify_locations(config.tls_ca)
        else:
            client.check_hostname = False
            client.verify_mode = ssl.CERT_NONE
    except (OSError, ssl.SSLError) as exc:
        raise SipConfigError([f"sip.tls: {tls_error_text(exc)}"]) from exc
    return server, client


def _default_media(config: SipConfig) -> MediaEngine:
    return MediaEngine(
        host=config.media_host, port_range=config.rtp_ports, rtp_timeout=config.rtp_timeout
    )


def _log_start_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("sip switch failed to start: %s", task.exception())


def create_switch(sip: Mapping[str, Any], users: Sequence[SipUser]) -> SipSwitch:
    """The ``sip`` switch from the config's ``[sip]`` table (untouched) and its users.

    Raises :class:`~baton.switch.sip.config.SipConfigError` (a ``ValueError``) naming every bad
    key. Sockets are bound by :meth:`SipSwitch.start` (or the first command).
    """
    return SipSwitch(parse_sip_config(sip), users)
