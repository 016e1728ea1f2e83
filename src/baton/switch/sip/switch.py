"""The ``sip`` switch: Baton's own registrar and back-to-back user agent on real phones.

Every leg terminates here: a phone's call in is answered by Baton (its media anchored in the
:class:`~baton.switch.media.MediaEngine`), and a call out is a new INVITE from Baton. Flows move
users between calls by changing the media graph alone; phones never re-negotiate for that.

Rules (the port's contract, :mod:`baton.core.port`, on SIP)
--------------------------------------------------------------
* **Events after commands.** An outbound leg's events (ringing, answered, failed) are emitted
  from the transport's callbacks, which run only after :meth:`SipSwitch.originate` returned;
  a failure found *during* the command (no registered contact, a send error) is deferred to
  the next loop turn.
* **One owner of the wire per leg.** Each leg knows its INVITE transaction, its dialog and,
  outbound, its forked branches (:class:`_Branch`, one :class:`OutgoingInvite` each). Every
  message is routed to the leg by Call-ID, dialog id or transaction key, synchronously.
* **Always answer.** The server INVITE transaction waits forever for the TU: an inbound call is
  answered (200), refused (4xx/6xx) or, if nobody decides, ended with 480 after
  ``inbound_ring_timeout``. A 2xx that is never ACKed (timer L) ends the leg with BYE.
* **No fire-and-forget tasks.** The only task is the start-up; every timer is a loop handle
  kept on its leg (or in :attr:`SipSwitch._handles`); :meth:`SipSwitch.close` cancels them all,
  hangs up every live leg, then closes the media engine and the transport.

Theory of operation
-------------------
*Inbound.* INVITE → §8.2 checks → authentication (a static contact's address, else digest; a
source that fails too often is throttled with 403) → session timer (RFC 4028) → our SDP answer
(488 if nothing is acceptable) → 180 Ringing → :class:`InboundCall`. :meth:`answer` sends the 200
with our SDP and points the engine at the phone; the transaction repeats the 200 until the ACK,
nothing else is sent in the dialog before it, and no ACK at all ends the leg. BYE or CANCEL from
the phone is :class:`LegEnded` with ``by_user=True``.

*Identity.* A call comes from a user either by digest (the credentials' username is a user id or
number) or by address: a static contact's host and port are trusted like a trunk, and when one
address hosts several users the From user picks among them. The address is where the message
really came from (a UDP datagram's source, a TCP connection's remote end), never its Via.

*Outbound.* :meth:`originate` INVITEs every registered contact of the user (each its own call,
so that two contacts on one device never merge): the first 2xx wins, the others are cancelled
(a crossing 2xx is ACKed and ended with BYE by :class:`OutgoingInvite`). 180/183 is
:class:`LegRinging`; the 2xx is ACKed, its SDP answer given to the engine, and
:class:`LegAnswered` emitted; when every branch failed, :class:`LegFailed` carries the most
telling cause (:mod:`.b2bua`).

*Stale lines.* A phone that died mid-call leaves its leg connected until the RTP timeout. So
when a user's new INVITE or REGISTER arrives while a call of theirs has been quiet (no RTP for
:attr:`SipSwitch.quiet_before_probe` seconds), Baton probes that call's dialog with an in-dialog
OPTIONS first: a 481, or no answer within :attr:`SipSwitch.probe_wait`, means the phone no
longer knows the call, which is then ended (BYE, ``LegEnded(FAILURE)``); the new INVITE is
handled once every probe has settled (docs/sip.md, "Stale lines").

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
import enum
import functools
import itertools
import logging
import os
import secrets
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from baton.core.port import (
    Cause,
    DtmfReceived,
    InboundCall,
    LegAnswered,
    LegEnded,
    LegFailed,
    LegRinging,
    MeetingMode,
    Member,
    Prompt,
    Switch,
    SwitchError,
    SwitchEvent,
    Target,
    Tone,
)
from baton.switch.media import MediaEngine, MediaError, MediaEvent, MediaTimeout, srtp

from . import session_timer
from .b2bua import (
    cause_for_status,
    dtmf_from_info,
    hangup_reason,
    is_global_failure,
    merge_causes,
    parse_resource_priority,
    resource_priority_for,
    status_for_cause,
)
from .config import SipConfig, SipConfigError, SipUser, parse_sip_config
from .dialog import (
    Answered,
    AnsweredAfterCancel,
    Dialog,
    DialogId,
    DialogState,
    InviteOutcome,
    OutgoingInvite,
    Rejected,
    SendAck,
    SendRequest,
)
from .digest import AuthOutcome, DigestAuthenticator, Password, Secret
from .errors import LocalProtocolError, SipError
from .message import Headers, Request, Response, make_response, new_tag
from .registrar import AuthThrottle, Binding, Registrar, throttle_key
from .sdp import (
    Direction,
    LocalMedia,
    NegotiatedAudio,
    NotAcceptable,
    SdpParseError,
    SdpSession,
)
from .session_timer import SessionTimer
from .transaction import (
    AckReceived,
    Peer,
    RequestReceived,
    ResponseReceived,
    ServerTransaction,
    StrayResponse,
    Timer,
    TransactionFailed,
    TransactionKey,
    TransactionTerminated,
    TransactionTimedOut,
    new_branch,
)
from .transport import ParseFailed, SipTransport, TransportEvent
from .uas import UasPolicy, check_request
from .uri import SipUri

__all__ = ["SipSwitch", "TransportFactory", "create_switch"]

log = logging.getLogger("baton.switch.sip")

TransportFactory = Callable[[Sequence[str], Callable[[TransportEvent], None]], SipTransport]
MediaFactory = Callable[[SipConfig], MediaEngine]

#: What Baton implements as a UAS (RFC 3261 §8.2): the methods it answers, the option tags it
#: supports (session timers, RFC 4412 precedence) and the bodies it reads.
POLICY = UasPolicy(
    allowed=frozenset({"INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "REGISTER", "INFO", "UPDATE"}),
    supported=frozenset({"timer", "resource-priority"}),
    accept=frozenset({"application/sdp", "application/dtmf-relay", "application/dtmf"}),
)
SERVER = "Baton"
_SRTP_POLICIES = frozenset({"off", "optional", "required"})
_STALE_STATUSES = frozenset({408, 481})  # a probed phone that answers these lost the call
#: A BYE after a crash skips this many CSeq numbers past the last journaled one: requests sent
#: in the dialog after the last heartbeat (a session refresh, a probe) took some, and a phone
#: refuses a CSeq lower than one it saw (RFC 3261 §12.2.2), but accepts a jump.
_CRASH_CSEQ_SKIP = 100
_CANCEL_GRACE = 32.0  # seconds a cancelled INVITE may take to get its 487 (64*T1 / 2)


class _State(enum.Enum):
    RINGING = "ringing"  # inbound: not answered yet; outbound: INVITEs out, no 2xx
    CONNECTED = "connected"
    ENDED = "ended"


@dataclass(eq=False)
class _Branch:
    """One INVITE of a (possibly forked) outbound leg, to one registered contact."""

    leg: _Leg
    invite: Request
    peer: Peer
    call: OutgoingInvite
    key: TransactionKey | None = None  # its client transaction, once sent
    done: bool = False  # a final response (or timeout) arrived
    early_sdp: bytes = b""  # an SDP answer seen in a 183, if the 2xx has none


@dataclass(eq=False)
class _Probe:
    """An in-dialog OPTIONS asking a quiet leg's phone whether it still knows the call."""

    leg: _Leg
    waiting: list[Callable[[], None]]
    key: TransactionKey | None = None
    handle: asyncio.TimerHandle | None = None


@dataclass(eq=False)
class _Leg:
    """Everything the switch keeps about one leg."""

    id: str
    user: str
    inbound: bool
    state: _State = _State.RINGING
    sdp: SdpSession | None = None
    media: NegotiatedAudio | None = None  # the last negotiated audio
    dialog: Dialog | None = None
    peer: Peer | None = None  # where the phone talks to us from (TCP: the connection)
    handles: list[asyncio.Handle] = field(default_factory=list)
    session: SessionTimer | None = None
    session_handle: asyncio.TimerHandle | None = None
    refresh_key: TransactionKey | None = None  # our session-refresh re-INVITE in flight
    refresh_invite: Request | None = None
    last_ack: Request | None = None  # the ACK of our last re-INVITE's 2xx (to repeat)
    answer_in_ack: bool = False  # we put an offer in a 2xx: the phone's answer is in the ACK
    creating: bool = False  # inside originate(): events are deferred
    probe: _Probe | None = None  # a stale-line probe in flight
    deferred: list[SwitchEvent] = field(default_factory=list)
    # inbound
    invite: Request | None = None
    invite_key: TransactionKey | None = None
    local_tag: str = ""
    answer_sdp: bytes = b""  # our SDP answer to the INVITE's offer (empty: late offer)
    timer_headers: list[tuple[str, str]] = field(default_factory=list)
    acked: bool = False
    bye_after_ack: str | None = None  # hung up before the ACK: the Reason to send (or "")
    # outbound
    branches: list[_Branch] = field(default_factory=list)
    failures: list[Cause] = field(default_factory=list)
    rang: bool = False


class SipSwitch(Switch):
    """The ``sip`` adapter of the switch port. Build it with :func:`create_switch` (from the
    config) or directly; ``await start()`` binds the sockets (the first command, or installing
    the listener inside a running loop, starts it too). See the module docstring.

    ``transport_factory`` and ``media_factory`` let tests put a fake transport or a tuned
    engine in; ``secret`` keys the digest nonces (random per process by default).
    """

    #: Stale lines (see the module docstring): seconds without RTP before a user's call is
    #: probed when the user sends a new INVITE or REGISTER, and how long the probe waits.
    quiet_before_probe: float = 1.0
    probe_wait: float = 1.5

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
        self._users: dict[str, SipUser] = {}
        self._names: dict[str, str] = {}  # user id or number → user id
        self._static_sources: dict[tuple[str, int], list[str]] = {}
        self._srtp: dict[str, str] = {}  # user id → the user's own SRTP policy
        problems: list[str] = []
        for user in users:
            self._users[user.id] = user
            # ``srtp`` is optional on a user (the service's UserConfig has it): it overrides
            # ``[sip] srtp`` for that user's legs (docs/sip.md, "SRTP").
            policy = getattr(user, "srtp", None)
            if policy is not None:
                if policy not in _SRTP_POLICIES:
                    problems.append(f'users[{user.id}].srtp: expected "off", "optional" or '
                                    f'"required", not {policy!r}')  # fmt: skip
                else:
                    self._srtp[user.id] = policy
            self._names.setdefault(user.id, user.id)
            for number in user.numbers:
                self._names.setdefault(number, user.id)
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
        self.registrar = Registrar(
            authenticator=self.authenticator,
            lookup=self._secret_of,
            min_expires=config.min_expires,
            max_expires=config.max_expires,
            default_expires=config.default_expires,
            throttle=self.throttle,
            aor_of=self._aor_of,
            may_register=lambda username, aor: self._names.get(username) == aor,
        )
        for user in users:
            if user.contact is None:
                continue
            # A bare URI's ;params would be the header's, not the URI's: the config means
            # the URI (``sip:bob@10.0.0.5:5070;transport=tcp``).
            text = user.contact.strip()
            if "<" not in text:
                text = f"<{text}>"
            try:
                binding = self.registrar.add_static(user.id, text)
                peer = Peer.for_uri(binding.uri)
            except SipError as exc:
                problems.append(f"users[{user.id}].contact: {exc}")
                continue
            # A static contact is trusted by address, like a trunk: calls from there are its
            # user's without a digest challenge. One address may host several users (a gateway,
            # a test tool): the From user then says which of them calls.
            self._static_sources.setdefault((peer.host, peer.port), []).append(user.id)
        if problems:
            raise SipConfigError(problems)
        self._listener: Callable[[SwitchEvent], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._transport: SipTransport | None = None
        self._media: MediaEngine | None = None
        self._start_task: asyncio.Task[None] | None = None
        self._started = False
        self._closed = False
        self.legs: dict[str, _Leg] = {}  # live legs by id
        self._by_dialog: dict[DialogId, _Leg] = {}
        self._by_invite: dict[TransactionKey, _Leg] = {}  # inbound INVITE server transactions
        self._branches: dict[str, _Branch] = {}  # outbound INVITEs by Call-ID
        self._branch_keys: dict[TransactionKey, _Branch] = {}
        self._refreshes: dict[TransactionKey, _Leg] = {}  # our re-INVITEs in flight
        self._probes: dict[TransactionKey, _Probe] = {}  # stale-line OPTIONS in flight
        self._held: set[TransactionKey] = set()  # new INVITEs waiting for probes
        self._crash_byes: dict[TransactionKey, str] = {}  # end_dialogs' BYEs → Call-ID
        self._meeting_of: dict[str, str] = {}  # leg → the meeting it is in
        self._handles: set[asyncio.TimerHandle] = set()
        self._ids = itertools.count(1)
        self._last_expiry = 0.0
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

    # ------------------------------------------------------------------ life cycle

    @property
    def transport(self) -> SipTransport:
        """The SIP transport (after :meth:`start`)."""
        if self._transport is None:
            raise SwitchError("sip: the switch is not started")
        return self._transport

    @property
    def media(self) -> MediaEngine:
        """The media engine (after :meth:`start`)."""
        if self._media is None:
            raise SwitchError("sip: the switch is not started")
        return self._media

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
        self._loop = asyncio.get_running_loop()
        media = self._media_factory(self.config)
        transport = self._transport_factory(list(self.config.listen), self._on_transport)
        try:
            await transport.start()
        except OSError as exc:
            await media.close()
            raise SwitchError(f"sip: cannot listen on {list(self.config.listen)}: {exc}") from exc
        media.set_listener(self._on_media)
        self._media, self._transport = media, transport
        self._started = True
        log.info("sip switch listening on %s", ", ".join(map(str, transport.addresses)))

    async def _ready(self) -> None:
        if not self._started:
            await self.start()

    async def close(self) -> None:
        """Hang up every live leg, cancel every timer, close the engine and the transport."""
        if self._closed:
            return
        self._closed = True
        if self._start_task is not None and not self._start_task.done():
            self._start_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, SwitchError):
                await self._start_task
        if self._started:
            for leg in list(self.legs.values()):
                with contextlib.suppress(SipError, SwitchError):
                    self._hangup(leg, Cause.NORMAL, None)
        for leg in list(self._by_invite.values()):
            self._cancel_handles(leg)
        for handle in list(self._handles):
            handle.cancel()
        self._handles.clear()
        for probe in list(self._probes.values()):
            if probe.handle is not None:
                probe.handle.cancel()
        self._probes.clear()
        self._held.clear()
        if self._media is not None:
            await self._media.close()
        if self._transport is not None:
            await self._transport.close()
        self._started = False

    def set_listener(self, listener: Callable[[SwitchEvent], None]) -> None:
        """Install the core's listener; inside a running loop this also starts the switch, so
        that phones can register before the first command."""
        self._listener = listener
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
        now = self._now()
        registrations = sum(
            1
            for aor in self.registrar.aors()
            for b in self.registrar.contacts(aor, now)
            if not b.static
        )
        out: dict[str, float] = {
            "registrations": registrations,
            "legs": len(self.legs),
            "late_media_frames_total": 0,
        }
        out.update({k: float(v) for k, v in self.counters.items()})
        if self._media is not None:
            m = self._media.metrics
            out["late_media_frames_total"] = m.late_frames
            out["lost_media_frames_total"] = m.lost_frames
            out["rtp_packets_in_total"] = m.packets_in
            out["rtp_packets_out_total"] = m.packets_out
            out["rtp_packets_invalid_total"] = m.invalid
        if self._transport is not None:
            t = self._transport
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
        for leg in self.legs.values():
            dialog = leg.dialog
            if leg.state is not _State.CONNECTED or dialog is None or leg.peer is None:
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
            key = self._send_request(bye, peer)
            if key is None:
                continue
            self._crash_byes[key] = dialog.id.call_id
            sent += 1
            log.info("a crashed run's call %s: BYE sent to %s", dialog.id.call_id, peer)
        return sent

    # ------------------------------------------------------------------ helpers

    def _now(self) -> float:
        return self._loop.time() if self._loop is not None else 0.0

    def _emit(self, event: SwitchEvent) -> None:
        if self._listener is not None:
            self._listener(event)

    def _emit_for(self, leg: _Leg, event: SwitchEvent) -> None:
        """Emit an event about ``leg``: deferred while its creating command is running."""
        if leg.creating:
            leg.deferred.append(event)
        else:
            self._emit(event)

    def _later(self, delay: float, fn: Callable[[], None]) -> None:
        """A switch-wide timer (not tied to a leg), cancelled by :meth:`close`."""
        assert self._loop is not None
        handle: asyncio.TimerHandle | None = None

        def fire() -> None:
            assert handle is not None
            self._handles.discard(handle)
            fn()

        handle = self._loop.call_later(delay, fire)
        self._handles.add(handle)

    def _leg_later(self, leg: _Leg, delay: float, fn: Callable[[], None]) -> None:
        assert self._loop is not None
        leg.handles.append(self._loop.call_later(delay, fn))

    @staticmethod
    def _cancel_handles(leg: _Leg) -> None:
        for handle in leg.handles:
            handle.cancel()
        leg.handles.clear()
        if leg.session_handle is not None:
            leg.session_handle.cancel()
            leg.session_handle = None

    def _secret_of(self, username: str) -> Secret | None:
        user_id = self._names.get(username)
        if user_id is None:
            return None
        return Password(self._users[user_id].password)

    def _aor_of(self, uri: object) -> str | None:
        if not isinstance(uri, SipUri) or uri.user_text is None:
            return None
        return self._names.get(uri.user_text)

    def _leg(self, leg_id: str) -> _Leg:
        leg = self.legs.get(leg_id)
        if leg is None or leg.state is _State.ENDED:
            raise SwitchError(f"sip: no live leg {leg_id!r}")
        return leg

    def _connected(self, leg_id: str) -> _Leg:
        leg = self._leg(leg_id)
        if leg.state is not _State.CONNECTED:
            raise SwitchError(f"sip: leg {leg_id!r} is not connected")
        return leg

    def _contact(self, transport: str) -> str:
        return self.transport.contact("baton", transport)

    def _host(self) -> str:
        address = self.transport.addresses[0]
        return f"[{address.host}]" if ":" in address.host else address.host

    def _send_request(self, request: Request, peer: Peer) -> TransactionKey | None:
        """Send in a new client transaction; a local failure (no such transport) is logged
        and reported as ``None``."""
        try:
            return self.transport.send_request(request, peer)
        except LocalProtocolError as exc:
            log.warning("cannot send %s to %s: %s", request.method, peer, exc)
            return None

    def _respond(self, key: TransactionKey, response: Response) -> None:
        response.headers.add("Server", SERVER)
        try:
            self.transport.send_response(key, response)
        except LocalProtocolError as exc:
            # The transaction is gone (terminated by a timer) or already answered: nothing
            # more can be said in it.
            log.debug("response %s not sent: %s", response.status, exc)

    def _respond_stateless(self, key: TransactionKey, response: Response) -> None:
        """Answer a request that leaves nothing behind (a challenge, a refusal, OPTIONS) and
        forget its transaction at once: a flood of them costs no memory and no
        retransmissions. A phone that missed the answer sends the request again and gets a
        fresh one (docs/sip.md, "Bounds and overload")."""
        self._respond(key, response)
        with contextlib.suppress(LocalProtocolError):
            self.transport.terminate(key)

    def _dialog_peer(self, leg: _Leg, request: Request) -> Peer:
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

    def _send_in_dialog(self, leg: _Leg, request: Request) -> TransactionKey | None:
        try:
            peer = self._dialog_peer(leg, request)
        except SipError as exc:
            log.warning("leg %s: cannot route %s: %s", leg.id, request.method, exc)
            return None
        return self._send_request(request, peer)

    # ------------------------------------------------------------------ transport events

    def _on_transport(self, event: TransportEvent) -> None:
        if isinstance(event, RequestReceived):
            self._on_request(event)
        elif isinstance(event, ResponseReceived):
            self._on_response(event.response, event.key)
        elif isinstance(event, AckReceived):
            self._on_ack(event)
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

    def _on_request(self, event: RequestReceived) -> None:
        request = event.request
        error = check_request(request, POLICY)
        if error is not None:
            self._respond_stateless(event.key, error)
            return
        method = request.method
        if self._shed(event):
            return
        if method == "REGISTER":
            self._on_register(event)
        elif method == "CANCEL":
            self._on_cancel(event)
        elif request.to.tag is not None:
            self._in_dialog(event)
        elif method == "INVITE":
            self._on_invite(event)
        elif method == "OPTIONS":
            self._respond_stateless(event.key, self._options_ok(request))
        else:  # BYE, INFO, UPDATE outside a dialog
            self._respond_stateless(event.key, make_response(request, 481, to_tag=new_tag()))

    def _shed(self, event: RequestReceived) -> bool:
        """Load shedding: while the loop lags (:attr:`SipTransport.overloaded`), a new call,
        registration or OPTIONS is refused with 503 and ``Retry-After`` — unless it comes from
        a static contact's address or carries credentials (work already under way: finishing
        it is worth more than starting new). Requests within calls always go through."""
        request = event.request
        if request.to.tag is not None or request.method not in ("INVITE", "REGISTER", "OPTIONS"):
            return False
        transport = self.transport
        if not transport.overloaded:
            return False
        peer = event.peer
        if (peer.host, peer.port) in self._static_sources:
            return False
        if "Authorization" in request.headers or "Proxy-Authorization" in request.headers:
            return False
        self.counters["overload_503_total"] += 1
        retry = str(transport.bounds.retry_after)
        self._respond_stateless(event.key, make_response(
            request, 503, to_tag=new_tag(), headers=[("Retry-After", retry)]))  # fmt: skip
        return True

    def _options_ok(self, request: Request) -> Response:
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

    # ---- REGISTER

    def _on_register(self, event: RequestReceived) -> None:
        now = self._now()
        if now - self._last_expiry > 60.0:
            self._last_expiry = now
            self.registrar.expire(now)
        response = self.registrar.process(
            event.request, source=event.peer.host, now=now, flow=event.peer
        )
        if response.status == 401:
            self.counters["auth_challenges_total"] += 1
        elif response.status == 403:
            self.counters["auth_failures_total"] += 1
        elif response.status == 200:
            user = self._aor_of(event.request.to.uri)
            if user is not None:
                self._probe_quiet_legs(user, None)  # a phone back from the dead re-registers
        if response.status >= 300:
            self._respond_stateless(event.key, response)
        else:
            self._respond(event.key, response)

    # ---- a new INVITE

    def _authenticate(self, event: RequestReceived, to_tag: str) -> str | Response:
        """The caller's user id, or the response that refuses the INVITE (401 challenge,
        403 wrong credentials or throttled)."""
        request, peer = event.request, event.peer
        # The address the bytes really came from: over TCP the connection's remote address,
        # never the Via, which the sender writes itself (docs/sip.md, "Static contacts").
        hosted = self._static_sources.get((peer.host, peer.port))
        if hosted:
            uri = request.from_.uri
            named = self._names.get(uri.user_text or "") if isinstance(uri, SipUri) else None
            return named if named in hosted else hosted[0]
        now = self._now()
        result = self.authenticator.verify_request(request, now=now, lookup=self._secret_of,
                                                   source=peer.host)  # fmt: skip
        key = throttle_key(peer.host, result.username)
        if not self.throttle.allowed(key, now):
            retry = str(self.throttle.retry_after(key, now))
            return make_response(request, 403, "Too Many Failed Attempts", to_tag=to_tag,
                                 headers=[("Retry-After", retry)])  # fmt: skip
        if result.outcome is AuthOutcome.BAD_REQUEST:
            return make_response(request, 400, "Bad Credentials", to_tag=to_tag)
        if result.outcome is AuthOutcome.WRONG_CREDENTIALS:
            self.throttle.record_failure(key, now)
            self.counters["auth_failures_total"] += 1
            return make_response(request, 403, "Wrong Credentials", to_tag=to_tag)
        if not result.ok:
            self.counters["auth_challenges_total"] += 1
            return self.authenticator.challenge(
                request, now=now, stale=result.outcome is AuthOutcome.STALE, to_tag=to_tag,
                source=peer.host,
            )  # fmt: skip
        self.throttle.record_success(key)
        assert result.username is not None
        user_id = self._names.get(result.username)
        if user_id is None:  # the lookup found a secret, so this cannot happen; be safe
            return make_response(request, 403, to_tag=to_tag)
        return user_id

    def _on_invite(self, event: RequestReceived) -> None:
        key = event.key
        to_tag = new_tag()
        who = self._authenticate(event, to_tag)
        if isinstance(who, Response):
            self._respond_stateless(key, who)
            return
        if self._probe_quiet_legs(who, lambda: self._resume_invite(event, who, to_tag)):
            self._held.add(key)  # 100 Trying goes out by itself meanwhile
            return
        self._invite_from(event, who, to_tag)

    def _resume_invite(self, event: RequestReceived, who: str, to_tag: str) -> None:
        if event.key not in self._held or self._closed:
            return  # cancelled meanwhile, or shutting down
        self._held.discard(event.key)
        tx = self.transport.layer.transaction(event.key)
        if tx is None or tx.terminated:
            return
        self._invite_from(event, who, to_tag)

    # ---- stale lines

    def _probe_quiet_legs(self, user: str, then: Callable[[], None] | None) -> bool:
        """Probe every quiet connected leg of ``user``; call ``then`` once all have settled.
        Returns False (and calls nothing) if there is no quiet leg."""
        media = self._media
        quiet = [
            leg
            for leg in self.legs.values()
            if leg.user == user
            and leg.state is _State.CONNECTED
            and leg.dialog is not None
            and (media is None or media.quiet_for(leg.id) >= self.quiet_before_probe)
        ]
        if not quiet:
            return False
        pending = set(quiet)

        def settled(leg: _Leg) -> None:
            pending.discard(leg)
            if not pending and then is not None:
                then()

        for leg in quiet:
            self._probe(leg, functools.partial(settled, leg))
        return True

    def _probe(self, leg: _Leg, done: Callable[[], None]) -> None:
        if leg.probe is not None:
            leg.probe.waiting.append(done)
            return
        assert leg.dialog is not None and self._loop is not None
        probe = _Probe(leg, [done])
        leg.probe = probe
        log.info("leg %s: %s is calling again while the call is quiet: probing it", leg.id,
                 leg.user)  # fmt: skip
        probe.key = self._send_in_dialog(leg, leg.dialog.create_request("OPTIONS"))
        if probe.key is None:
            self._probe_settled(probe, 408)
            return
        self._probes[probe.key] = probe
        probe.handle = self._loop.call_later(self.probe_wait,
                                             lambda: self._probe_settled(probe, 408))  # fmt: skip

    def _probe_settled(self, probe: _Probe, status: int) -> None:
        leg = probe.leg
        if leg.probe is not probe:
            return
        leg.probe = None
        if probe.handle is not None:
            probe.handle.cancel()
        if probe.key is not None:
            self._probes.pop(probe.key, None)
        if status in _STALE_STATUSES and leg.state is _State.CONNECTED:
            self.counters["stale_lines_freed_total"] += 1
            log.info("leg %s: the phone no longer knows the call (%d): ended", leg.id, status)
            self._fail_connected(leg, Cause.FAILURE,
                                 f'SIP ;cause={status} ;text="stale call"')  # fmt: skip
        for done in probe.waiting:
            done()

    def _invite_from(self, event: RequestReceived, who: str, to_tag: str) -> None:
        request, key = event.request, event.key
        user = self._users[who]
        # The precedence asked for (RFC 4412), if the user may ask for it.
        headers: dict[str, str] = {"Call-ID": request.call_id, "From": str(request.from_)}
        agent = request.headers.get("User-Agent")
        if agent is not None:
            headers["User-Agent"] = agent
        priority: int | None = None
        rp_values = request.headers.get_all("Resource-Priority")
        if rp_values:
            asked = parse_resource_priority(rp_values, self.config.resource_priority)
            headers["Resource-Priority"] = ", ".join(rp_values)
            if asked.priority is None:
                if "resource-priority" in request.headers.get_all("Require"):
                    self._respond(key, make_response(
                        request, 417, to_tag=to_tag,
                        headers=[("Accept-Resource-Priority",
                                  ", ".join(self.config.resource_priority))],
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
        if self.config.session_expires:
            settled = session_timer.negotiate_uas(
                request, min_se=self.config.min_se, preferred=self.config.session_expires
            )
            if isinstance(settled, Response):
                self._respond(key, settled)
                return
            timer, timer_headers = settled
        leg_id = f"sip-in-{next(self._ids)}"
        try:
            host, port = self.media.allocate(leg_id)
        except MediaError as exc:
            log.error("no media for an inbound call: %s", exc)
            self._respond(key, make_response(request, 503, to_tag=to_tag,
                                             headers=[("Retry-After", "5")]))  # fmt: skip
            return
        sdp = SdpSession(self._local_media(who, host, port))
        answer_sdp = b""
        media: NegotiatedAudio | None = None
        if request.body:
            try:
                result = sdp.answer(request.body)
            except SdpParseError as exc:
                self.media.release(leg_id)
                self._respond(key, make_response(request, 400, exc.reason, to_tag=to_tag))
                return
            if isinstance(result, NotAcceptable):
                self.media.release(leg_id)
                log.info("INVITE from %s: 488 (%s)", who, result.reason)
                self._respond(key, make_response(request, 488, to_tag=to_tag,
                                                 headers=[("Warning", '304 baton "' +
                                                           result.reason.replace('"', "'") +
                                                           '"')]))  # fmt: skip
                return
            answer_sdp, media = result.answer.to_bytes(), result.media
        leg = _Leg(leg_id, who, inbound=True, sdp=sdp, media=media, peer=event.peer,
                   invite=request, invite_key=key, local_tag=to_tag, answer_sdp=answer_sdp,
                   timer_headers=timer_headers, session=timer)  # fmt: skip
        self.legs[leg_id] = leg
        self._by_invite[key] = leg
        self.counters["calls_in_total"] += 1
        ringing = make_response(request, 180, to_tag=to_tag,
                                headers=[("Contact", self._contact(event.peer.transport))])  # fmt: skip
        self._respond(key, ringing)
        self._leg_later(leg, self.config.inbound_ring_timeout, lambda: self._ring_timeout(leg))
        to = request.uri.user_text if isinstance(request.uri, SipUri) else None
        self._emit(InboundCall(leg_id, who, to or "", priority, headers))

    def _ring_timeout(self, leg: _Leg) -> None:
        if leg.state is _State.RINGING and leg.inbound:
            log.info("inbound leg %s: nobody answered in %.0f s", leg.id,
                     self.config.inbound_ring_timeout)  # fmt: skip
            self._refuse(leg, 480, None)
            self._emit(LegEnded(leg.id, Cause.NO_ANSWER, by_user=False))

    def _refuse(self, leg: _Leg, status: int, reason: str | None) -> None:
        """End a ringing inbound leg with a final error response."""
        assert leg.invite is not None and leg.invite_key is not None
        headers = [("Reason", reason)] if reason else []
        self._respond(leg.invite_key,
                      make_response(leg.invite, status, to_tag=leg.local_tag, headers=headers))  # fmt: skip
        self._by_invite.pop(leg.invite_key, None)
        self._drop(leg)

    def _drop(self, leg: _Leg) -> None:
        """The leg is over for the core: out of every room, media released, timers cancelled,
        forgotten (the dialog index is kept by whoever still needs it)."""
        if leg.state is _State.ENDED:
            return
        leg.state = _State.ENDED
        self._cancel_handles(leg)
        if self.legs.get(leg.id) is leg:
            del self.legs[leg.id]
        self._leave_room(leg.id)
        if self._media is not None:
            self._media.release(leg.id)
        if leg.dialog is not None:
            self._by_dialog.pop(leg.dialog.id, None)
        if leg.refresh_key is not None:
            self._refreshes.pop(leg.refresh_key, None)
        if leg.probe is not None:  # ended meanwhile (a BYE): whoever waits goes on
            self._probe_settled(leg.probe, 0)

    # ---- CANCEL

    def _on_cancel(self, event: RequestReceived) -> None:
        request = event.request
        if event.cancels is not None and event.cancels in self._held:
            # Cancelled while its caller's old call is being probed.
            self._held.discard(event.cancels)
            self._respond(event.key, make_response(request, 200, to_tag=new_tag()))
            tx = self.transport.layer.transaction(event.cancels)
            if isinstance(tx, ServerTransaction):
                self._respond_stateless(event.cancels, make_response(tx.request, 487,
                                                                     to_tag=new_tag()))  # fmt: skip
            return
        leg = self._by_invite.get(event.cancels) if event.cancels is not None else None
        tag = leg.local_tag if leg is not None else new_tag()
        self._respond(event.key, make_response(request, 200, to_tag=tag))
        if leg is None or leg.state is not _State.RINGING:
            return  # already answered (the 200 crossed the CANCEL) or already ended
        self._refuse(leg, 487, None)
        self._emit(LegEnded(leg.id, Cause.CANCELLED, by_user=True))

    # ---- answer

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
        entry = self._leg(leg)
        if not entry.inbound:
            raise SwitchError(f"sip: leg {leg!r} is outbound")
        if entry.state is _State.RINGING:
            self._send_answer(entry)

    def _send_answer(self, leg: _Leg) -> None:
        assert leg.invite is not None and leg.invite_key is not None and leg.sdp is not None
        request, peer = leg.invite, leg.peer
        assert peer is not None
        contact = self._contact(peer.transport)
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
            self._refuse(leg, 400, None)
            log.info("INVITE without usable Contact: %s", exc)
            self._emit(LegEnded(leg.id, Cause.FAILURE, by_user=False))
            return
        self._by_dialog[leg.dialog.id] = leg
        for handle in leg.handles:  # the ring timeout
            handle.cancel()
        leg.handles.clear()
        leg.state = _State.CONNECTED
        if leg.media is not None:
            self._apply_media(leg, leg.media, initial=True)
        self._respond(leg.invite_key, make_response(request, 200, to_tag=leg.local_tag,
                                                    headers=headers, body=body))  # fmt: skip
        self._arm_session_timer(leg)

    def _on_ack(self, event: AckReceived) -> None:
        leg = self._by_invite.pop(event.key, None) if event.key is not None else None
        if leg is None:
            return  # a late or stray ACK (for an ended call): nothing to do
        first = not leg.acked
        leg.acked = True
        if first and leg.bye_after_ack is not None:
            self._send_bye(leg, leg.bye_after_ack or None)
            return
        if leg.answer_in_ack:
            leg.answer_in_ack = False
            self._late_answer(leg, event.request)

    def _late_answer(self, leg: _Leg, ack: Request) -> None:
        """Our offer went in a 2xx (the phone's INVITE had none): its answer is in the ACK."""
        if leg.state is not _State.CONNECTED or leg.sdp is None:
            return
        if not ack.body:
            if leg.media is None:  # the initial offer was never answered: no media possible
                self._fail_connected(leg, Cause.FAILURE, 'SIP ;cause=488 ;text="no SDP answer"')
            return
        try:
            result = leg.sdp.accept_answer(ack.body)
        except SdpParseError:
            result = NotAcceptable("unreadable SDP")
        if isinstance(result, NotAcceptable):
            self._fail_connected(leg, Cause.FAILURE, 'SIP ;cause=488 ;text="' + result.reason + '"')
            return
        self._apply_media(leg, result, initial=leg.media is None)

    # ---- in-dialog requests

    def _in_dialog(self, event: RequestReceived) -> None:
        request, key = event.request, event.key
        leg = self._by_dialog.get(DialogId.for_received_request(request))
        if leg is None or leg.dialog is None:
            self._respond(key, make_response(request, 481, to_tag=None))
            return
        error = leg.dialog.receive_request(request)
        if error is not None:
            self._respond(key, error)
            return
        method = request.method
        if method == "BYE":
            self._respond(key, make_response(request, 200))
            self._by_dialog.pop(leg.dialog.id, None)
            if leg.state is _State.ENDED:
                return
            self._drop(leg)
            self._emit(LegEnded(leg.id, Cause.NORMAL, by_user=True))
        elif method in ("INVITE", "UPDATE"):
            self._on_refresh(leg, event)
        elif method == "INFO":
            self._respond(key, make_response(request, 200))
            digit = dtmf_from_info(request.content_type, request.body)
            if digit is not None and leg.state is _State.CONNECTED:
                self._emit(DtmfReceived(leg.id, digit))
        elif method == "OPTIONS":
            self._respond(key, self._options_ok(request))
        else:
            self._respond(key, make_response(request, 405,
                                             headers=[("Allow", POLICY.allow_header)]))  # fmt: skip

    def _on_refresh(self, leg: _Leg, event: RequestReceived) -> None:
        """A re-INVITE or UPDATE from the phone: hold, resume, a new address, or a session
        refresh. Answered at once; the media follows the new SDP."""
        request, key = event.request, event.key
        if leg.state is not _State.CONNECTED or leg.sdp is None:
            self._respond(key, make_response(request, 491 if leg.state is _State.RINGING else 481,
                                             headers=[("Retry-After", "1")]))  # fmt: skip
            return
        if request.method == "INVITE" and leg.refresh_key is not None:
            # Glare: our own re-INVITE is in flight (RFC 3261 §14.2).
            self._respond(key, make_response(request, 491))
            return
        headers: list[tuple[str, str]] = [("Contact", self._contact(event.peer.transport)),
                                          ("Allow", POLICY.allow_header),
                                          ("Supported", "timer")]  # fmt: skip
        if leg.session is not None:
            settled = session_timer.negotiate_uas(
                request, min_se=self.config.min_se, preferred=leg.session.interval
            )
            if isinstance(settled, Response):
                self._respond(key, settled)
                return
            leg.session, timer_headers = settled
            headers += timer_headers
        body = b""
        if request.body:
            wish = _wish(leg)
            try:
                result = leg.sdp.answer(request.body, wish)
            except SdpParseError as exc:
                self._respond(key, make_response(request, 400, exc.reason))
                return
            if isinstance(result, NotAcceptable):
                self._respond(key, make_response(request, 488))  # the old media stays
                return
            body = result.answer.to_bytes()
            self._apply_media(leg, result.media)
        elif request.method == "INVITE":
            # An offerless re-INVITE: our offer goes in the 200, the answer in the ACK.
            body = leg.sdp.offer(_wish(leg)).to_bytes()
            leg.answer_in_ack = True
            self._by_invite[key] = leg
        if body:
            headers.append(("Content-Type", "application/sdp"))
        self._respond(key, make_response(request, 200, headers=headers, body=body))
        self._arm_session_timer(leg)

    # ---- responses to what we sent

    def _on_response(self, response: Response, key: TransactionKey | None) -> None:
        if key is not None and response.status >= 200 and key in self._crash_byes:
            log.info("a crashed run's call %s: BYE answered %d",
                     self._crash_byes.pop(key), response.status)  # fmt: skip
            return
        if key is not None and response.status >= 200:
            probe = self._probes.get(key)
            if probe is not None:
                self._probe_settled(probe, response.status)
                return
        branch = self._branches.get(response.call_id)
        if (
            branch is not None
            and response.cseq.method == "INVITE"
            and response.cseq.number == branch.invite.cseq.number
        ):
            self._on_branch_response(branch, response)
            return
        if response.cseq.method != "INVITE":
            return  # BYE, CANCEL, INFO: nothing depends on their answers
        if key is not None:
            leg = self._refreshes.get(key)
            if leg is not None:
                self._on_refresh_response(leg, key, response)
                return
        # A retransmitted 2xx to one of our re-INVITEs: ACK it again.
        leg = self._by_dialog.get(DialogId.for_received_response(response))
        if (
            leg is not None
            and 200 <= response.status < 300
            and leg.last_ack is not None
            and leg.last_ack.cseq.number == response.cseq.number
        ):
            self._send_ack(leg, leg.last_ack)

    def _on_timeout(self, key: TransactionKey, request: Request, timer: Timer) -> None:
        call_id = self._crash_byes.pop(key, None)
        if call_id is not None:
            log.warning("a crashed run's call %s: BYE not answered", call_id)
            return
        probe = self._probes.get(key)
        if probe is not None:
            self._probe_settled(probe, 408)
            return
        if key.server:
            leg = self._by_invite.pop(key, None)
            if leg is not None and timer is Timer.L and not leg.acked:
                # Our 2xx was never ACKed: the phone is gone (RFC 3261 §13.3.1.4).
                leg.acked = True
                if leg.bye_after_ack is not None:
                    self._send_bye(leg, leg.bye_after_ack or None)
                elif leg.state is _State.CONNECTED:
                    self._fail_connected(leg, Cause.FAILURE, 'SIP ;cause=408 ;text="no ACK"')
            return
        if request.method == "INVITE":
            branch = self._branches.get(request.call_id)
            if branch is not None and branch.invite.cseq.number == request.cseq.number:
                self._act(branch, branch.call.timed_out())
                return
            leg = self._refreshes.pop(key, None)
            if leg is not None:
                leg.refresh_key = None
                if leg.state is _State.CONNECTED:
                    self.counters["session_timeouts_total"] += 1
                    self._fail_connected(leg, Cause.FAILURE,
                                         'SIP ;cause=408 ;text="session refresh timed out"')  # fmt: skip

    def _on_transport_failure(self, key: TransactionKey, request: Request) -> None:
        call_id = self._crash_byes.pop(key, None)
        if call_id is not None:
            log.warning("a crashed run's call %s: BYE not delivered", call_id)
            return
        probe = self._probes.get(key)
        if probe is not None:
            self._probe_settled(probe, 408)
            return
        if request.method != "INVITE" or key.server:
            return
        branch = self._branches.get(request.call_id)
        if branch is not None and branch.invite.cseq.number == request.cseq.number:
            if not branch.done:
                # RFC 3261 §8.1.3.1: a transport failure is a 503; the contact is unreachable.
                branch.call.timed_out()
                self._branch_failed(branch, 503)
            return
        self._on_timeout(key, request, Timer.B)

    def _on_terminated(self, key: TransactionKey) -> None:
        self._crash_byes.pop(key, None)
        if key.server:
            self._by_invite.pop(key, None)
            return
        branch = self._branch_keys.pop(key, None)
        if branch is not None:
            # Its 2xx can no longer be retransmitted (timer M has run): forget the branch.
            branch.done = True
            self._branches.pop(branch.invite.call_id, None)

    # ------------------------------------------------------------------ outbound legs

    async def originate(
        self, leg: str, user: str, *, caller: str | None = None, priority: int | None = None
    ) -> None:
        """INVITE every registered contact of ``user`` (see the module docstring).

        Raises :class:`SwitchError` for an unknown user, a leg id in use, or no free RTP
        port. A user with no contact fails later with ``LegFailed(UNREACHABLE)``.
        """
        await self._ready()
        if user not in self._users:
            raise SwitchError(f"sip: unknown user {user!r}")
        if leg in self.legs:
            raise SwitchError(f"sip: leg id {leg!r} in use")
        now = self._now()
        entry = _Leg(leg, user, inbound=False, creating=True)
        self.legs[leg] = entry
        self.counters["calls_out_total"] += 1
        try:
            contacts = self.registrar.contacts(user, now)
            if contacts:
                host, port = self.media.allocate(leg)
                entry.sdp = SdpSession(self._local_media(user, host, port))
                offer = entry.sdp.offer().to_bytes()
                for binding in contacts:
                    self._invite_contact(entry, binding, offer, caller, priority)
            if not entry.branches or all(b.done for b in entry.branches):
                self._fail(entry, merge_causes(entry.failures))
        except BaseException:
            self._drop(entry)
            raise
        finally:
            entry.creating = False
        if entry.deferred:
            events, entry.deferred = entry.deferred, []
            assert self._loop is not None
            self._loop.call_soon(self._emit_all, events)

    def _emit_all(self, events: list[SwitchEvent]) -> None:
        for event in events:
            self._emit(event)

    def _invite_contact(
        self,
        leg: _Leg,
        binding: Binding,
        offer: bytes,
        caller: str | None,
        priority: int | None,
    ) -> None:
        uri = binding.uri
        try:
            peer = Peer.for_uri(uri)
        except SipError as exc:
            log.warning("user %s: contact %s unusable: %s", leg.user, binding.contact_text, exc)
            leg.failures.append(Cause.UNREACHABLE)
            return
        if isinstance(binding.flow, Peer) and binding.flow.reliable and peer.reliable:
            peer = binding.flow  # reuse the connection the phone registered over
        if peer.transport not in {a.transport for a in self.transport.addresses}:
            log.warning("user %s: contact %s needs %s, which Baton does not listen on",
                        leg.user, binding.contact_text, peer.transport)  # fmt: skip
            leg.failures.append(Cause.UNREACHABLE)
            return
        host = self._host()
        headers = Headers()
        headers.add("Max-Forwards", "70")
        calling = self._users.get(caller) if caller is not None else None
        if calling is not None:
            number = calling.numbers[0] if calling.numbers else calling.id
            headers.add("From", f'"{calling.id}" <sip:{number}@{host}>;tag={new_tag()}')
        else:
            headers.add("From", f'"Baton" <sip:baton@{host}>;tag={new_tag()}')
        headers.add("To", f"<sip:{leg.user}@{host}>")
        headers.add("Call-ID", f"{secrets.token_hex(10)}@baton")
        headers.add("CSeq", "1 INVITE")
        contact = self._contact(peer.transport)
        headers.add("Contact", contact)
        headers.add("Allow", POLICY.allow_header)
        if self.config.session_expires:
            for name, value in session_timer.request_headers(
                self.config.session_expires, self.config.min_se
            ):
                headers.add(name, value)
        if priority is not None:
            precedence = resource_priority_for(priority, self.config.resource_priority)
            if precedence is not None:
                headers.add("Resource-Priority", precedence)
        headers.add("User-Agent", SERVER)
        headers.add("Content-Type", "application/sdp")
        # Our own top Via, so that the OutgoingInvite (which needs it for a CANCEL) exists
        # before the send: a send failure is reported synchronously, by Call-ID.
        address = self.transport.address(peer.transport)
        via_host = f"[{address.host}]" if ":" in address.host else address.host
        headers.prepend("Via", f"SIP/2.0/{peer.transport.upper()} {via_host}:{address.port}"
                               f";branch={new_branch()};rport")  # fmt: skip
        invite = Request("INVITE", uri, headers, offer)
        branch = _Branch(leg, invite, peer, OutgoingInvite(invite, local_contact=contact))
        self._branches[invite.call_id] = branch
        leg.branches.append(branch)
        key = self._send_request(invite, peer)
        if key is None:
            branch.done = True
            leg.failures.append(Cause.UNREACHABLE)
            self._branches.pop(invite.call_id, None)
            return
        branch.key = key
        if not branch.done:
            self._branch_keys[key] = branch

    def _on_branch_response(self, branch: _Branch, response: Response) -> None:
        leg = branch.leg
        if leg.state is _State.RINGING and not leg.rang and response.status in (180, 183):
            leg.rang = True
            self._emit_for(leg, LegRinging(leg.id))
        if 100 < response.status < 200 and response.body and not branch.early_sdp:
            branch.early_sdp = response.body
        self._act(branch, branch.call.on_response(response))

    def _act(self, branch: _Branch, outcomes: list[InviteOutcome]) -> None:
        for outcome in outcomes:
            if isinstance(outcome, SendAck):
                self._send_ack_for(branch, outcome.request)
            elif isinstance(outcome, SendRequest):
                request = outcome.request
                if request.method == "CANCEL":
                    self._send_request(request, branch.peer)
                    self._later(_CANCEL_GRACE, lambda b=branch: self._abandon(b))  # type: ignore[misc]
                else:  # the BYE ending a 2xx that came too late
                    peer = (
                        branch.peer
                        if branch.peer.reliable
                        else Peer.next_hop(request, branch.peer.transport)
                    )
                    self._send_request(request, peer)
            elif isinstance(outcome, Answered):
                branch.done = True
                self._branch_answered(branch, outcome)
            elif isinstance(outcome, AnsweredAfterCancel):
                branch.done = True
            elif isinstance(outcome, Rejected):
                self._branch_failed(branch, outcome.status)

    def _send_ack_for(self, branch: _Branch, ack: Request) -> None:
        peer = branch.peer if branch.peer.reliable else Peer.next_hop(ack, branch.peer.transport)
        with contextlib.suppress(LocalProtocolError):
            self.transport.send_stateless(ack, peer)

    def _abandon(self, branch: _Branch) -> None:
        """A cancelled INVITE that never got its final response: stop waiting for it."""
        if not branch.done:
            branch.done = True
            self._branches.pop(branch.invite.call_id, None)
            if branch.key is not None:
                self._branch_keys.pop(branch.key, None)
                self.transport.terminate(branch.key)

    def _branch_failed(self, branch: _Branch, status: int) -> None:
        branch.done = True
        leg = branch.leg
        if leg.state is not _State.RINGING or leg.inbound:
            return
        leg.failures.append(cause_for_status(status))
        if is_global_failure(status):
            self._cancel_branches(leg)
            self._fail(leg, cause_for_status(status))
        elif all(b.done for b in leg.branches):
            self._fail(leg, merge_causes(leg.failures))

    def _fail(self, leg: _Leg, cause: Cause) -> None:
        if leg.state is not _State.RINGING:
            return
        self._drop(leg)
        self._emit_for(leg, LegFailed(leg.id, cause))

    def _cancel_branches(self, leg: _Leg, keep: _Branch | None = None) -> None:
        for branch in leg.branches:
            if branch is not keep and not branch.done:
                self._act(branch, branch.call.cancel())

    def _branch_answered(self, branch: _Branch, outcome: Answered) -> None:
        leg = branch.leg
        dialog = outcome.dialog
        if leg.state is not _State.RINGING:
            # Hung up while the 2xx was on its way but after the CANCEL window: end it.
            bye = dialog.create_request("BYE")
            dialog.terminate()
            self._send_request(bye, branch.peer if branch.peer.reliable
                               else Peer.next_hop(bye, branch.peer.transport))  # fmt: skip
            return
        # First answer wins; the other branches are cancelled.
        leg.branches.remove(branch)
        leg.branches.insert(0, branch)
        self._cancel_branches(leg, keep=branch)
        leg.dialog = dialog
        leg.peer = branch.peer
        self._by_dialog[dialog.id] = leg
        assert leg.sdp is not None
        body = outcome.response.body or branch.early_sdp
        result: NegotiatedAudio | NotAcceptable
        try:
            result = leg.sdp.accept_answer(body) if body else NotAcceptable("no SDP answer")
        except SdpParseError:
            result = NotAcceptable("unreadable SDP answer")
        if isinstance(result, NotAcceptable):
            log.info("leg %s: answer not acceptable (%s): BYE", leg.id, result.reason)
            self._send_bye(leg, f'SIP ;cause=488 ;text="{result.reason}"')
            self._drop(leg)
            self._emit_for(leg, LegFailed(leg.id, Cause.FAILURE))
            return
        try:
            leg.session = session_timer.negotiate_uac(outcome.response)
        except SipError:
            leg.session = None
        if not self.config.session_expires:
            leg.session = None
        leg.state = _State.CONNECTED
        leg.acked = True
        self._apply_media(leg, result, initial=True)
        self._arm_session_timer(leg)
        self._emit_for(leg, LegAnswered(leg.id))

    # ------------------------------------------------------------------ media of a leg

    def _local_media(self, user: str, host: str, port: int) -> LocalMedia:
        """Our media for a leg of ``user``: the user's SRTP policy, else ``[sip] srtp``
        (docs/sip.md, "SRTP"), and, unless it is off, a fresh key for the leg."""
        policy = self._srtp.get(user, self.config.srtp)
        key = srtp.new_key() if policy != "off" else None
        return LocalMedia(host, port, srtp=policy, srtp_key=key)

    def _apply_media(self, leg: _Leg, media: NegotiatedAudio, *, initial: bool = False) -> None:
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
            )
        else:
            self.media.set_sending(leg.id, sends)

    def _on_media(self, event: MediaEvent) -> None:
        if isinstance(event, MediaTimeout):
            leg = self.legs.get(event.leg)
            if leg is not None and leg.state is _State.CONNECTED:
                log.info("leg %s: no RTP for %.0f s: the phone is gone", leg.id, event.idle)
                self.counters["media_timeouts_total"] += 1
                self._fail_connected(leg, Cause.MEDIA_TIMEOUT,
                                     'SIP ;cause=408 ;text="RTP timeout"')  # fmt: skip
            return
        self._emit(event)  # playbacks, recordings, RFC 4733 digits: the engine's ids are ours

    def _fail_connected(self, leg: _Leg, cause: Cause, reason: str) -> None:
        """A connected leg died on our side of the wire (no ACK, no RTP, no refresh)."""
        if leg.state is not _State.CONNECTED:
            return
        self._send_bye(leg, reason)
        self._drop(leg)
        self._emit(LegEnded(leg.id, cause, by_user=False))

    # ------------------------------------------------------------------ session timers

    def _arm_session_timer(self, leg: _Leg) -> None:
        if leg.session_handle is not None:
            leg.session_handle.cancel()
            leg.session_handle = None
        timer = leg.session
        if timer is None or leg.state is not _State.CONNECTED or self._loop is None:
            return
        now = self._now()
        refresh = timer.refresh_at(now)
        if refresh is not None:
            leg.session_handle = self._loop.call_at(refresh, lambda: self._refresh(leg))
        else:
            leg.session_handle = self._loop.call_at(
                timer.expire_at(now), lambda: self._session_expired(leg)
            )

    def _session_expired(self, leg: _Leg) -> None:
        leg.session_handle = None
        if leg.state is _State.CONNECTED:
            log.info("leg %s: no session refresh: the phone is gone", leg.id)
            self.counters["session_timeouts_total"] += 1
            self._fail_connected(leg, Cause.FAILURE, 'SIP ;cause=408 ;text="session expired"')

    def _refresh(self, leg: _Leg) -> None:
        """Send the session refresh (a re-INVITE with our current SDP, RFC 4028 §7.4)."""
        leg.session_handle = None
        if leg.state is not _State.CONNECTED or leg.dialog is None or leg.sdp is None:
            return
        timer = leg.session
        assert timer is not None
        if leg.refresh_key is not None:
            return
        headers = [("Supported", "timer"),
                   ("Session-Expires", f"{timer.interval};refresher=uac"),
                   ("Min-SE", str(self.config.min_se))]  # fmt: skip
        body = leg.sdp.offer(_wish(leg)).to_bytes()
        invite = leg.dialog.create_request("INVITE", body=body, content_type="application/sdp",
                                           headers=headers)  # fmt: skip
        key = self._send_in_dialog(leg, invite)
        if key is None:
            return
        # Unanswered, it times out (timer B) and the leg ends; see _on_timeout.
        leg.refresh_key = key
        leg.refresh_invite = invite
        self._refreshes[key] = leg

    def _on_refresh_response(self, leg: _Leg, key: TransactionKey, response: Response) -> None:
        if response.status < 200:
            return
        self._refreshes.pop(key, None)
        leg.refresh_key = None
        if leg.state is not _State.CONNECTED or leg.dialog is None:
            return
        if 200 <= response.status < 300 and leg.refresh_invite is not None:
            ack = leg.dialog.ack(leg.refresh_invite)
            leg.last_ack = ack
            self._send_ack(leg, ack)
            leg.dialog.response_to(response)
            if response.body and leg.sdp is not None:
                with contextlib.suppress(SdpParseError):
                    result = leg.sdp.accept_answer(response.body)
                    if not isinstance(result, NotAcceptable):
                        self._apply_media(leg, result)
            with contextlib.suppress(SipError):
                settled = session_timer.negotiate_uac(response)
                if settled is not None:
                    leg.session = settled
            self._arm_session_timer(leg)
        elif response.status in (408, 481):
            self.counters["session_timeouts_total"] += 1
            self._fail_connected(leg, Cause.FAILURE,
                                 f'SIP ;cause={response.status} ;text="session refresh failed"')  # fmt: skip
        else:
            # Any other refusal keeps the session (RFC 4028 §10): try again at the next half.
            self._arm_session_timer(leg)

    def _send_ack(self, leg: _Leg, ack: Request) -> None:
        try:
            peer = self._dialog_peer(leg, ack)
            self.transport.send_stateless(ack, peer)
        except SipError as exc:
            log.debug("leg %s: ACK not sent: %s", leg.id, exc)

    # ------------------------------------------------------------------ hangup

    async def hangup(
        self, leg: str, cause: Cause = Cause.NORMAL, reason: str | None = None
    ) -> None:
        """End a leg (idempotent): BYE when connected, CANCEL when ringing out, a final error
        (486/603/480/404) when ringing in — with ``Reason: preemption`` for a preempted leg."""
        await self._ready()
        entry = self.legs.get(leg)
        if entry is None or entry.state is _State.ENDED:
            return
        self._hangup(entry, cause, reason)

    def _hangup(self, leg: _Leg, cause: Cause, reason: str | None) -> None:
        header = hangup_reason(cause, reason)
        if leg.inbound and leg.state is _State.RINGING:
            self._refuse(leg, status_for_cause(cause), header)
            return
        if not leg.inbound and leg.state is _State.RINGING:
            self._drop(leg)
            self._cancel_branches(leg)
            return
        if leg.inbound and not leg.acked:
            leg.bye_after_ack = header or ""  # RFC 3261 §15: no BYE before the ACK
            self._drop(leg)
            return
        self._send_bye(leg, header)
        self._drop(leg)

    def _send_bye(self, leg: _Leg, reason: str | None) -> None:
        dialog = leg.dialog
        if dialog is None or dialog.terminated:
            return
        headers = [("Reason", reason)] if reason else []
        bye = dialog.create_request("BYE", headers=headers)
        dialog.terminate()
        self._by_dialog.pop(dialog.id, None)
        self._send_in_dialog(leg, bye)

    # ------------------------------------------------------------------ rooms

    def _leave_meeting(self, leg: str) -> None:
        meeting = self._meeting_of.pop(leg, None)
        if meeting is None or self._media is None:
            return
        try:
            members = self._media.mixer.meeting_members(meeting)
        except MediaError:
            return
        self._media.leave(meeting, leg)
        for other, member in members.items():
            if other != leg and member.whisper_to == leg:
                # Whispering to someone who left: heard by nobody, like a muted member.
                self._media.join(meeting, Member(other, MeetingMode.MUTED))

    def _leave_room(self, leg: str) -> None:
        self._leave_meeting(leg)
        if self._media is not None and self._media.mixer.has_port(leg):
            self._media.unbridge(leg)

    async def bridge(self, leg_a: str, leg_b: str) -> None:
        await self._ready()
        self._connected(leg_a)
        self._connected(leg_b)
        if leg_a == leg_b:
            raise SwitchError("sip: cannot bridge a leg to itself")
        # One synchronous step: no tick can run between leaving the old rooms and the bridge.
        self._leave_meeting(leg_a)
        self._leave_meeting(leg_b)
        self.media.bridge(leg_a, leg_b)

    async def create_meeting(self, meeting: str) -> None:
        await self._ready()
        self.media.create_meeting(meeting)

    async def join(self, meeting: str, member: Member) -> None:
        await self._ready()
        self._connected(member.leg)
        members = self.media.mixer.meeting_members(meeting)  # MediaError if unknown
        if member.whisper_to is not None and member.whisper_to not in members:
            raise SwitchError(f"sip: whisper target {member.whisper_to!r} is not a member")
        if self._meeting_of.get(member.leg) != meeting:
            self._leave_room(member.leg)
        self.media.join(meeting, member)
        self._meeting_of[member.leg] = meeting

    async def leave(self, meeting: str, leg: str) -> None:
        await self._ready()
        if self._meeting_of.get(leg) == meeting:
            self._leave_meeting(leg)

    async def destroy_meeting(self, meeting: str) -> None:
        await self._ready()
        for leg, mid in list(self._meeting_of.items()):
            if mid == meeting:
                del self._meeting_of[leg]
        self.media.destroy_meeting(meeting)

    async def clear(self, leg: str) -> None:
        await self._ready()
        if leg not in self.legs:
            return
        self._leave_meeting(leg)
        self.media.clear(leg)

    # ------------------------------------------------------------------ media operations

    def _check_target(self, target: Target) -> None:
        if target.leg is not None:
            self._connected(target.leg)
        else:
            assert target.meeting is not None
            self.media.mixer.meeting_members(target.meeting)  # MediaError if unknown

    async def play(self, target: Target, media: Tone | Prompt, *, loop: bool = False) -> str:
        await self._ready()
        self._check_target(target)
        return await self.media.play(target, media, loop=loop)

    async def stop_play(self, playback: str) -> None:
        await self._ready()
        self.media.stop_play(playback)

    async def record(self, target: Target, path: str) -> str:
        await self._ready()
        self._check_target(target)
        return self.media.record(target, path)

    async def stop_record(self, recording: str) -> None:
        await self._ready()
        self.media.stop_record(recording)

    async def send_dtmf(self, leg: str, digits: str) -> None:
        """Send RFC 4733 digits to a connected leg's phone (not part of the port)."""
        await self._ready()
        self._connected(leg)
        self.media.send_dtmf(leg, digits)

    # ------------------------------------------------------------------ queries (tests, API)

    def leg_state(self, leg: str) -> str | None:
        """``"ringing"``, ``"connected"`` or ``None`` (unknown or ended)."""
        entry = self.legs.get(leg)
        return None if entry is None else entry.state.value

    def leg_of(self, user: str) -> str | None:
        """The id of ``user``'s live leg, if any."""
        for leg in self.legs.values():
            if leg.user == user:
                return leg.id
        return None

    def meeting_of(self, leg: str) -> str | None:
        return self._meeting_of.get(leg)

    def bridged_to(self, leg: str) -> str | None:
        """The leg ``leg`` is bridged to in the engine, if any."""
        if self._media is None or not self._media.mixer.has_port(leg):
            return None
        return self._media.mixer.bridged_to(leg)

    def registered(self, user: str) -> list[Binding]:
        """``user``'s live bindings (registered and static)."""
        return self.registrar.contacts(user, self._now())


def _wish(leg: _Leg) -> Direction:
    """What we want of a leg's media when answering or offering: always both ways — Baton
    holds a party by changing the graph, never by re-INVITE."""
    return Direction.SENDRECV


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
        raise SipConfigError([f"sip.tls: {exc}"]) from exc
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
