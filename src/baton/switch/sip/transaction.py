"""SIP transactions (RFC 3261 §17, with the RFC 6026 Accepted state), sans-IO.

Rules
-----
* **Everything that affects a transaction's state lives in the four tables below.** A
  transition is data: ``(state, input) → (next state, steps)``. An input the table does not
  list is *absorbed* when it comes from the network or a timer (a late retransmission, a stale
  timer) and is a :class:`~baton.switch.sip.errors.LocalProtocolError` when it comes from the
  transaction user (a second final response, a provisional after a final).
* **Sans-IO.** A transaction never sends, sleeps or reads a clock. Each input — the TU's
  response, a received message, a timer firing, a transport error — returns a list of
  actions: :class:`Transmit`, :class:`StartTimer`, :class:`CancelTimer`, :class:`DeliverToTU`,
  :class:`Timeout`, :class:`TransportFailure`, :class:`Terminated`. Whoever owns the
  transaction carries them out.
* **Timers per RFC 3261 Table 4** with T1 = 0.5 s, T2 = 4 s, T4 = 5 s by default
  (:class:`TimerConfig`). On a reliable transport (TCP) the retransmission timers A, E and G
  are never started and D, I, J and K are zero, so their transitions happen at once.
* **RFC 6026.** A 2xx moves a client INVITE transaction to *Accepted* (timer M), where further
  2xx are still passed to the TU (which ACKs each one); a server INVITE transaction that sent a
  2xx waits in *Accepted* (timer L), absorbing retransmitted INVITEs. Baton's server INVITE
  transaction also retransmits its 2xx there (timer G, RFC 3261 §13.3.1.4 — a TU duty that
  needs the same timers) until the TU's :class:`TransactionLayer` matches the ACK to it; no ACK
  by timer L is reported as a :class:`Timeout` so that the TU can send BYE.
* **100 Trying.** A server INVITE transaction sends 100 Trying if the TU has not answered
  within ``trying_delay`` (200 ms, RFC 3261 §17.2.1); non-INVITE requests get none (§8.2.6.1).

Theory of operation
-------------------
A transaction is created with its request and the reliability of its transport, then started.
Inputs are methods (:meth:`ClientTransaction.receive`, :meth:`ServerTransaction.respond`,
:meth:`Transaction.timer_fired`, :meth:`Transaction.transport_error`); each looks the pair
``(state, input)`` up in its table and performs the steps in order. Entering *Terminated*
cancels every running timer and ends with :class:`Terminated`.

The :class:`TransactionLayer` owns the transactions of one SIP endpoint: it matches incoming
messages to them (RFC 3261 §17.1.3 and §17.2.3), creates server transactions for new requests,
stamps ``received``/``rport`` on the top Via of requests (RFC 3581), answers a request that
arrives a second time by another path with 482 (merged requests, §8.2.2.2), works out where
responses go (§18.2.2), keeps every timer in one heap keyed by transaction, and turns the actions into
:data:`LayerEvent` values for the transport (what to send where) and the TU (what happened).
Time enters only as ``now`` arguments; :meth:`TransactionLayer.advance` fires due timers.
"""

from __future__ import annotations

import enum
import heapq
import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

from .errors import LocalProtocolError, SipParseError
from .message import Headers, Request, Response, make_response, new_tag, random_hex
from .uri import SipUri, Uri, Via, parse_name_addr

__all__ = [
    "BRANCH_COOKIE",
    "AckReceived",
    "Action",
    "CancelTimer",
    "ClientInviteTransaction",
    "ClientNonInviteTransaction",
    "ClientTransaction",
    "DeliverToTU",
    "LayerEvent",
    "MessageDropped",
    "Peer",
    "RequestReceived",
    "ResponseReceived",
    "SendMessage",
    "ServerInviteTransaction",
    "ServerNonInviteTransaction",
    "ServerTransaction",
    "StartTimer",
    "State",
    "StrayResponse",
    "Terminated",
    "Timeout",
    "Timer",
    "TimerConfig",
    "Transaction",
    "TransactionFailed",
    "TransactionKey",
    "TransactionLayer",
    "TransactionTerminated",
    "TransactionTimedOut",
    "Transmit",
    "TransportFailure",
    "ack_for_failure",
    "new_branch",
]

BRANCH_COOKIE = "z9hG4bK"


def new_branch() -> str:
    """A fresh RFC 3261 branch: the magic cookie and 64 random bits."""
    return BRANCH_COOKIE + random_hex(8)


# ---- vocabulary ----------------------------------------------------------------------------


# The enums of the state machine hash by identity (a C slot) rather than Enum's hash of the
# name (a Python call): the tables, timers and transactions look them up about 140 times
# per call. Members are singletons and compare by identity, so nothing else changes.
_IDENTITY_HASH = object.__hash__


class State(enum.Enum):
    __hash__ = _IDENTITY_HASH

    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"


class Timer(enum.Enum):
    """RFC 3261 Table 4 (and RFC 6026 L, M), plus the 100 Trying delay."""

    __hash__ = _IDENTITY_HASH

    A = "A"  # client INVITE retransmission (T1, doubling)
    B = "B"  # client INVITE timeout (64*T1)
    D = "D"  # client INVITE wait for response retransmissions (32 s / 0)
    E = "E"  # client non-INVITE retransmission (T1, doubling to T2)
    F = "F"  # client non-INVITE timeout (64*T1)
    G = "G"  # server INVITE response retransmission (T1, doubling to T2)
    H = "H"  # server INVITE wait for ACK (64*T1)
    I = "I"  # noqa: E741 - the RFC's name; server INVITE wait for ACK retransmissions (T4 / 0)
    J = "J"  # server non-INVITE wait for request retransmissions (64*T1 / 0)
    K = "K"  # client non-INVITE wait for response retransmissions (T4 / 0)
    L = "L"  # server INVITE Accepted (64*T1), RFC 6026
    M = "M"  # client INVITE Accepted (64*T1), RFC 6026
    TRYING = "Trying"  # send 100 Trying if the TU is silent this long


@dataclass(frozen=True, slots=True)
class TimerConfig:
    """Timer base values (RFC 3261 §17.1.1.1). Change T1 for high-latency links only."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    trying_delay: float = 0.2
    d: float = 32.0  # timer D on unreliable transports (at least 32 s)

    def initial(self, timer: Timer, reliable: bool) -> float | None:
        """The first interval of ``timer``; ``None`` if it does not run on this transport."""
        return _initial_table(self)[timer, reliable]

    def _initial(self, timer: Timer, reliable: bool) -> float | None:
        t1 = self.t1
        if timer in (Timer.A, Timer.E, Timer.G):
            return None if reliable else t1
        if timer in (Timer.B, Timer.F, Timer.H, Timer.L, Timer.M):
            return 64 * t1
        if timer is Timer.D:
            return 0.0 if reliable else self.d
        if timer in (Timer.I, Timer.K):
            return 0.0 if reliable else self.t4
        if timer is Timer.J:
            return 0.0 if reliable else 64 * t1
        return self.trying_delay


# TimerConfig → its first intervals by (timer, reliable): every transaction starts a few timers,
# and a lookup beats the chain of comparisons. Few configs exist (one per switch, tests' own).
_INITIAL: dict[TimerConfig, dict[tuple[Timer, bool], float | None]] = {}


def _initial_table(config: TimerConfig) -> dict[tuple[Timer, bool], float | None]:
    table = _INITIAL.get(config)
    if table is None:
        table = {(t, r): config._initial(t, r) for t in Timer for r in (False, True)}
        if len(_INITIAL) < 64:
            _INITIAL[config] = table
    return table


class Input(enum.Enum):
    """What can happen to a transaction."""

    __hash__ = _IDENTITY_HASH

    RECV_1XX = "received 1xx"
    RECV_2XX = "received 2xx"
    RECV_FAILURE = "received 300-699"
    RECV_REQUEST = "received the request again"
    RECV_ACK = "received ACK"
    TU_1XX = "TU sends 1xx"
    TU_2XX = "TU sends 2xx"
    TU_FAILURE = "TU sends 300-699"
    TRANSPORT_ERROR = "transport error"
    TIMER_A = "timer A"
    TIMER_B = "timer B"
    TIMER_D = "timer D"
    TIMER_E = "timer E"
    TIMER_F = "timer F"
    TIMER_G = "timer G"
    TIMER_H = "timer H"
    TIMER_I = "timer I"
    TIMER_J = "timer J"
    TIMER_K = "timer K"
    TIMER_L = "timer L"
    TIMER_M = "timer M"
    TIMER_TRYING = "timer Trying"


_TIMER_INPUT = {timer: Input[f"TIMER_{timer.name}"] for timer in Timer}
_INPUT_TIMER = {event: timer for timer, event in _TIMER_INPUT.items()}
_TU_INPUTS = frozenset({Input.TU_1XX, Input.TU_2XX, Input.TU_FAILURE})


class Do(enum.Enum):
    """Steps that are not timer operations."""

    __hash__ = _IDENTITY_HASH

    DELIVER = "pass the received message to the TU"
    RETRANSMIT = "send the last message again"
    SEND = "send the TU's response and keep it for retransmission"
    ACK = "send an ACK for the received non-2xx final response"
    TRYING = "send 100 Trying unless a response was sent"
    TIMEOUT = "tell the TU the transaction timed out"
    TRANSPORT_ERROR = "tell the TU the transport failed"


class Interval(enum.Enum):
    INITIAL = "initial"
    DOUBLE = "double the last interval (capped at T2 except for timer A)"
    T2 = "T2"


@dataclass(frozen=True, slots=True)
class Start:
    timer: Timer
    interval: Interval = Interval.INITIAL


@dataclass(frozen=True, slots=True)
class Stop:
    timer: Timer


Step = Do | Start | Stop


@dataclass(frozen=True, slots=True)
class Transition:
    target: State
    steps: tuple[Step, ...] = ()


Table = Mapping[tuple[State, Input], Transition]

_S = State
_I = Input

# ---- the four tables -----------------------------------------------------------------------

CLIENT_INVITE: Table = {
    (_S.CALLING, _I.TIMER_A): Transition(_S.CALLING, (Do.RETRANSMIT, Start(Timer.A, Interval.DOUBLE))),
    (_S.CALLING, _I.TIMER_B): Transition(_S.TERMINATED, (Do.TIMEOUT,)),
    (_S.CALLING, _I.TRANSPORT_ERROR): Transition(_S.TERMINATED, (Do.TRANSPORT_ERROR,)),
    (_S.CALLING, _I.RECV_1XX): Transition(_S.PROCEEDING, (Stop(Timer.A), Stop(Timer.B), Do.DELIVER)),
    (_S.CALLING, _I.RECV_2XX): Transition(_S.ACCEPTED, (Stop(Timer.A), Stop(Timer.B), Do.DELIVER, Start(Timer.M))),
    (_S.CALLING, _I.RECV_FAILURE): Transition(_S.COMPLETED, (Stop(Timer.A), Stop(Timer.B), Do.DELIVER, Do.ACK, Start(Timer.D))),
    (_S.PROCEEDING, _I.RECV_1XX): Transition(_S.PROCEEDING, (Do.DELIVER,)),
    (_S.PROCEEDING, _I.RECV_2XX): Transition(_S.ACCEPTED, (Do.DELIVER, Start(Timer.M))),
    (_S.PROCEEDING, _I.RECV_FAILURE): Transition(_S.COMPLETED, (Do.DELIVER, Do.ACK, Start(Timer.D))),
    (_S.PROCEEDING, _I.TRANSPORT_ERROR): Transition(_S.TERMINATED, (Do.TRANSPORT_ERROR,)),
    (_S.COMPLETED, _I.RECV_FAILURE): Transition(_S.COMPLETED, (Do.ACK,)),
    (_S.COMPLETED, _I.TIMER_D): Transition(_S.TERMINATED),
    (_S.COMPLETED, _I.TRANSPORT_ERROR): Transition(_S.TERMINATED, (Do.TRANSPORT_ERROR,)),
    (_S.ACCEPTED, _I.RECV_2XX): Transition(_S.ACCEPTED, (Do.DELIVER,)),
    (_S.ACCEPTED, _I.TIMER_M): Transition(_S.TERMINATED),
}  # fmt: skip

CLIENT_NON_INVITE: Table = {
    (_S.TRYING, _I.TIMER_E): Transition(_S.TRYING, (Do.RETRANSMIT, Start(Timer.E, Interval.DOUBLE))),
    (_S.TRYING, _I.TIMER_F): Transition(_S.TERMINATED, (Do.TIMEOUT,)),
    (_S.TRYING, _I.TRANSPORT_ERROR): Transition(_S.TERMINATED, (Do.TRANSPORT_ERROR,)),
    (_S.TRYING, _I.RECV_1XX): Transition(_S.PROCEEDING, (Do.DELIVER,)),
    (_S.TRYING, _I.RECV_2XX): Transition(_S.COMPLETED, (Stop(Timer.E), Stop(Timer.F), Do.DELIVER, Start(Timer.K))),
    (_S.TRYING, _I.RECV_FAILURE): Transition(_S.COMPLETED, (Stop(Timer.E), Stop(Timer.F), Do.DELIVER, Start(Timer.K))),
    (_S.PROCEEDING, _I.TIMER_E): Transition(_S.PROCEEDING, (Do.RETRANSMIT, Start(Timer.E, Interval.T2))),
    (_S.PROCEEDING, _I.TIMER_F): Transition(_S.TERMINATED, (Do.TIMEOUT,)),
    (_S.PROCEEDING, _I.TRANSPORT_ERROR): Transition(_S.TERMINATED, (Do.TRANSPORT_ERROR,)),
    (_S.PROCEEDING, _I.RECV_1XX): Transition(_S.PROCEEDING, (Do.DELIVER,)),
    (_S.PROCEEDING, _I.RECV_2XX): Transition(_S.COMPLETED, (Stop(Timer.E), Stop(Timer.F), Do.DELIVER, Start(Timer.K))),
    (_S.PROCEEDING, _I.RECV_FAILURE): Transition(_S.COMPLETED, (Stop(Timer.E), Stop(Timer.F), Do.DELIVER, Start(Timer.K))),
    (_S.COMPLETED, _I.TIMER_K): Transition(_S.TERMINATED),
}  # fmt: skip

SERVER_INVITE: Table = {
    (_S.PROCEEDING, _I.RECV_REQUEST): Transition(_S.PROCEEDING, (Do.RETRANSMIT,)),
    (_S.PROCEEDING, _I.TIMER_TRYING): Transition(_S.PROCEEDING, (Do.TRYING,)),
    (_S.PROCEEDING, _I.TU_1XX): Transition(_S.PROCEEDING, (Stop(Timer.TRYING), Do.SEND)),
    (_S.PROCEEDING, _I.TU_2XX): Transition(_S.ACCEPTED, (Stop(Timer.TRYING), Do.SEND, Start(Timer.G), Start(Timer.L))),
    (_S.PROCEEDING, _I.TU_FAILURE): Transition(_S.COMPLETED, (Stop(Timer.TRYING), Do.SEND, Start(Timer.G), Start(Timer.H))),
    (_S.PROCEEDING, _I.TRANSPORT_ERROR): Transition(_S.TERMINATED, (Do.TRANSPORT_ERROR,)),
    (_S.COMPLETED, _I.RECV_REQUEST): Transition(_S.COMPLETED, (Do.RETRANSMIT,)),
    (_S.COMPLETED, _I.TIMER_G): Transition(_S.COMPLETED, (Do.RETRANSMIT, Start(Timer.G, Interval.DOUBLE))),
    (_S.COMPLETED, _I.RECV_ACK): Transition(_S.CONFIRMED, (Stop(Timer.G), Stop(Timer.H), Start(Timer.I))),
    (_S.COMPLETED, _I.TIMER_H): Transition(_S.TERMINATED, (Do.TIMEOUT,)),
    (_S.COMPLETED, _I.TRANSPORT_ERROR): Transition(_S.TERMINATED, (Do.TRANSPORT_ERROR,)),
    (_S.CONFIRMED, _I.TIMER_I): Transition(_S.TERMINATED),
    (_S.CONFIRMED, _I.TIMER_L): Transition(_S.TERMINATED),
    (_S.ACCEPTED, _I.TU_2XX): Transition(_S.ACCEPTED, (Do.SEND,)),
    (_S.ACCEPTED, _I.TIMER_G): Transition(_S.ACCEPTED, (Do.RETRANSMIT, Start(Timer.G, Interval.DOUBLE))),
    (_S.ACCEPTED, _I.RECV_ACK): Transition(_S.CONFIRMED, (Stop(Timer.G), Do.DELIVER)),
    (_S.ACCEPTED, _I.TIMER_L): Transition(_S.TERMINATED, (Do.TIMEOUT,)),
    (_S.ACCEPTED, _I.TRANSPORT_ERROR): Transition(_S.ACCEPTED, (Stop(Timer.G), Do.TRANSPORT_ERROR)),
}  # fmt: skip

SERVER_NON_INVITE: Table = {
    (_S.TRYING, _I.TU_1XX): Transition(_S.PROCEEDING, (Do.SEND,)),
    (_S.TRYING, _I.TU_2XX): Transition(_S.COMPLETED, (Do.SEND, Start(Timer.J))),
    (_S.TRYING, _I.TU_FAILURE): Transition(_S.COMPLETED, (Do.SEND, Start(Timer.J))),
    (_S.PROCEEDING, _I.RECV_REQUEST): Transition(_S.PROCEEDING, (Do.RETRANSMIT,)),
    (_S.PROCEEDING, _I.TU_1XX): Transition(_S.PROCEEDING, (Do.SEND,)),
    (_S.PROCEEDING, _I.TU_2XX): Transition(_S.COMPLETED, (Do.SEND, Start(Timer.J))),
    (_S.PROCEEDING, _I.TU_FAILURE): Transition(_S.COMPLETED, (Do.SEND, Start(Timer.J))),
    (_S.PROCEEDING, _I.TRANSPORT_ERROR): Transition(_S.TERMINATED, (Do.TRANSPORT_ERROR,)),
    (_S.COMPLETED, _I.RECV_REQUEST): Transition(_S.COMPLETED, (Do.RETRANSMIT,)),
    (_S.COMPLETED, _I.TIMER_J): Transition(_S.TERMINATED),
    (_S.COMPLETED, _I.TRANSPORT_ERROR): Transition(_S.TERMINATED, (Do.TRANSPORT_ERROR,)),
}  # fmt: skip


# ---- actions -------------------------------------------------------------------------------

# Actions and layer events are built by the dozen for every call: plain slotted dataclasses
# (hashable as before, not frozen), since a frozen dataclass's __init__ costs three times as
# much. Nothing changes them after they are built.


@dataclass(slots=True, unsafe_hash=True)
class Transmit:
    """Send this message to the transaction's peer."""

    message: Request | Response


@dataclass(slots=True, unsafe_hash=True)
class StartTimer:
    """(Re)start ``timer`` to fire in ``seconds`` (replacing a running one of that name)."""

    timer: Timer
    seconds: float


@dataclass(slots=True, unsafe_hash=True)
class CancelTimer:
    timer: Timer


@dataclass(slots=True, unsafe_hash=True)
class DeliverToTU:
    """Pass this received message up (a response, or the ACK of a 2xx)."""

    message: Request | Response


@dataclass(slots=True, unsafe_hash=True)
class Timeout:
    """The transaction timed out (timer B, F, H, or L without an ACK for our 2xx)."""

    timer: Timer


@dataclass(slots=True, unsafe_hash=True)
class TransportFailure:
    """The transport reported an error sending for this transaction."""


@dataclass(slots=True, unsafe_hash=True)
class Terminated:
    """The transaction is over; forget it."""


Action = Transmit | StartTimer | CancelTimer | DeliverToTU | Timeout | TransportFailure | Terminated


def ack_for_failure(invite: Request, response: Response) -> Request:
    """The ACK a client INVITE transaction sends for a 300-699 response (RFC 3261 §17.1.1.3).

    Same Request-URI, Call-ID, From and CSeq number as the INVITE, the To of the response, the
    INVITE's top Via only, and its Route headers.
    """
    headers = Headers()
    headers.add("Via", invite.headers.get("Via") or "")
    for route in invite.headers.get_all("Route"):
        headers.add("Route", route)
    headers.add("Max-Forwards", "70")
    headers.add("From", invite.headers.get("From") or "")
    headers.add("To", response.headers.get("To") or "")
    headers.add("Call-ID", invite.headers.get("Call-ID") or "")
    headers.add("CSeq", f"{invite.cseq.number} ACK")
    return Request("ACK", invite.uri, headers)


# ---- the engine ----------------------------------------------------------------------------


class Transaction:
    """What the four transaction kinds share: the table-driven engine."""

    TABLE: ClassVar[Table]
    INITIAL: ClassVar[State]
    NAME: ClassVar[str]
    #: the states in which the transaction only waits out a timer (see :attr:`quiet`)
    QUIET: ClassVar[frozenset[State]]

    def __init__(self, request: Request, *, reliable: bool, timers: TimerConfig) -> None:
        self.request = request
        self.reliable = reliable
        self.timers = timers
        self._initials = _initial_table(timers)
        self.state = self.INITIAL
        self._running: dict[Timer, float] = {}  # running timers and their current interval
        self._intervals: dict[Timer, float] = {}  # the last interval of each backed-off timer
        self._event: Input | None = None
        self._last: Request | Response | None = None
        self._received: Request | Response | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.request.method} {self.state.value}>"

    @property
    def terminated(self) -> bool:
        return self.state is State.TERMINATED

    @property
    def quiet(self) -> bool:
        """In a state where it only waits out a timer (and at most sends its last message
        again): the TU has done with its messages."""
        return self.state in self.QUIET

    def compact(self) -> None:
        """Drop what the kept messages can rebuild on a read (their header index and typed
        views, see :class:`~baton.switch.sip.message.Headers`): a quiet transaction lives
        up to 32 s, and the garbage collector scans everything it keeps
        (docs/benchmarks.md, "The third pass")."""
        self.request.headers.forget_views()
        if self._last is not None and self._last is not self.request:
            self._last.headers.forget_views()

    @property
    def running_timers(self) -> frozenset[Timer]:
        return frozenset(self._running)

    def timer_fired(self, timer: Timer) -> list[Action]:
        """A timer this transaction started has fired. Stale timers are ignored."""
        if timer not in self._running:
            return []
        del self._running[timer]
        return self._input(_TIMER_INPUT[timer])

    def transport_error(self) -> list[Action]:
        """The transport could not send for this transaction."""
        return self._input(Input.TRANSPORT_ERROR)

    def terminate(self) -> list[Action]:
        """End the transaction now (the TU gave up on it). Idempotent."""
        if self.terminated:
            return []
        self.state = State.TERMINATED
        return self._terminate_actions()

    # -- the engine
    def _input(self, event: Input, message: Request | Response | None = None) -> list[Action]:
        transition = self.TABLE.get((self.state, event))
        if transition is None:
            if event in _TU_INPUTS:
                raise LocalProtocolError(
                    f"{self.NAME} transaction in state {self.state.value} cannot accept: "
                    f"{event.value}"
                )
            return []  # absorbed: a retransmission, a late response, a stale timer
        self._received = message
        self._event = event
        self.state = transition.target
        actions: list[Action] = []
        fire_now: list[Timer] = []
        for step in transition.steps:
            self._step(step, actions, fire_now)
        # The input's message is needed only by this step's actions: a transaction waiting
        # out its timers (up to 32 s) must not keep the ACK or the 2xx it last received.
        self._received = None
        if self.state is State.TERMINATED:
            actions += self._terminate_actions()
            return actions
        for timer in fire_now:  # zero-length timers (reliable transports) fire at once
            actions += self.timer_fired(timer)
        return actions

    def _terminate_actions(self) -> list[Action]:
        actions: list[Action] = [CancelTimer(t) for t in self._running]
        self._running.clear()
        actions.append(Terminated())
        return actions

    def _step(self, step: Step, actions: list[Action], fire_now: list[Timer]) -> None:
        if isinstance(step, Start):
            seconds = self._interval(step)
            if seconds is None:
                return
            self._running[step.timer] = seconds
            if seconds <= 0:
                fire_now.append(step.timer)
            else:
                actions.append(StartTimer(step.timer, seconds))
        elif isinstance(step, Stop):
            if self._running.pop(step.timer, None) is not None:
                actions.append(CancelTimer(step.timer))
        elif step is Do.DELIVER:
            assert self._received is not None
            actions.append(DeliverToTU(self._received))
        elif step is Do.RETRANSMIT:
            if self._last is not None:
                actions.append(Transmit(self._last))
        elif step is Do.SEND:
            assert isinstance(self._received, Response)
            self._last = self._received
            actions.append(Transmit(self._received))
        elif step is Do.ACK:
            assert isinstance(self._received, Response)
            actions.append(Transmit(ack_for_failure(self.request, self._received)))
        elif step is Do.TRYING:
            if self._last is None:
                self._last = make_response(self.request, 100)
                actions.append(Transmit(self._last))
        elif step is Do.TIMEOUT:
            assert self._event is not None
            actions.append(Timeout(_INPUT_TIMER[self._event]))
        elif step is Do.TRANSPORT_ERROR:
            actions.append(TransportFailure())

    def _interval(self, step: Start) -> float | None:
        initial = self._initials[step.timer, self.reliable]
        if initial is None:
            return None
        if step.interval is Interval.T2:
            return self.timers.t2
        if step.interval is Interval.DOUBLE:
            previous = self._intervals.get(step.timer, initial)
            doubled = previous * 2
            seconds = doubled if step.timer is Timer.A else min(doubled, self.timers.t2)
        else:
            seconds = initial
        self._intervals[step.timer] = seconds
        return seconds


class ClientTransaction(Transaction):
    """A transaction for a request we send. Start it, then feed it responses."""

    def start(self) -> list[Action]:
        """Send the request and start the retransmission and timeout timers."""
        if self._last is not None:
            raise LocalProtocolError("transaction already started")
        self._last = self.request
        actions: list[Action] = [Transmit(self.request)]
        fire_now: list[Timer] = []
        for step in self.START_STEPS:
            self._step(step, actions, fire_now)
        return actions

    START_STEPS: ClassVar[tuple[Step, ...]]

    def receive(self, response: Response) -> list[Action]:
        """A response matched to this transaction arrived."""
        if response.status < 200:
            return self._input(Input.RECV_1XX, response)
        if response.status < 300:
            return self._input(Input.RECV_2XX, response)
        return self._input(Input.RECV_FAILURE, response)


class ClientInviteTransaction(ClientTransaction):
    TABLE = CLIENT_INVITE
    INITIAL = State.CALLING
    NAME = "client INVITE"
    QUIET = frozenset({State.ACCEPTED})
    START_STEPS = (Start(Timer.A), Start(Timer.B))


class ClientNonInviteTransaction(ClientTransaction):
    TABLE = CLIENT_NON_INVITE
    INITIAL = State.TRYING
    NAME = "client non-INVITE"
    QUIET = frozenset({State.COMPLETED})
    START_STEPS = (Start(Timer.E), Start(Timer.F))


class ServerTransaction(Transaction):
    """A transaction for a request we received. Feed it the TU's responses and any
    retransmissions (and, for INVITE, the ACK)."""

    START_STEPS: ClassVar[tuple[Step, ...]] = ()

    def start(self) -> list[Action]:
        actions: list[Action] = []
        fire_now: list[Timer] = []
        for step in self.START_STEPS:
            self._step(step, actions, fire_now)
        for timer in fire_now:
            actions += self.timer_fired(timer)
        return actions

    @property
    def last_response(self) -> Response | None:
        return self._last if isinstance(self._last, Response) else None

    def respond(self, response: Response) -> list[Action]:
        """The TU sends ``response``. Raises :class:`LocalProtocolError` if the state forbids
        it (e.g. a second final response)."""
        if response.status < 200:
            return self._input(Input.TU_1XX, response)
        if response.status < 300:
            return self._input(Input.TU_2XX, response)
        return self._input(Input.TU_FAILURE, response)

    def receive(self, request: Request) -> list[Action]:
        """The request (a retransmission) or, for INVITE, its ACK arrived again."""
        event = Input.RECV_ACK if request.method == "ACK" else Input.RECV_REQUEST
        return self._input(event, request)


class ServerInviteTransaction(ServerTransaction):
    TABLE = SERVER_INVITE
    INITIAL = State.PROCEEDING
    NAME = "server INVITE"
    QUIET = frozenset({State.CONFIRMED})
    START_STEPS = (Start(Timer.TRYING),)


class ServerNonInviteTransaction(ServerTransaction):
    TABLE = SERVER_NON_INVITE
    INITIAL = State.TRYING
    NAME = "server non-INVITE"
    QUIET = frozenset({State.COMPLETED})


# ---- the transaction layer -----------------------------------------------------------------


class Peer(NamedTuple):
    """The other end of a message: transport (``udp``/``tcp``), host and port.

    For TCP it also names the connection: responses go back over the one the request came on.
    A named tuple, not a dataclass: it keys the transport's routes and is hashed and compared
    for every datagram, and a tuple does both in C.
    """

    transport: str
    host: str
    port: int

    @property
    def reliable(self) -> bool:
        return self.transport != "udp"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"

    @classmethod
    def for_uri(cls, uri: Uri, default_transport: str = "udp") -> Peer:
        """The peer a URI names: its host (an IP address: Baton does no DNS), port and
        ``transport`` parameter (case-insensitive), with ``maddr`` taking precedence.

        Raises :class:`LocalProtocolError` for a URI that is not ``sip:``/``sips:``.
        """
        if not isinstance(uri, SipUri):
            raise LocalProtocolError(f"cannot send to a {uri.scheme}: URI")
        host, port = uri.host_port()
        maddr = uri.params.get("maddr")
        transport = uri.transport or ("tls" if uri.scheme == "sips" else default_transport)
        if transport == "tls" and uri.port is None:
            port = 5061  # RFC 3261 §19.1.2: the default port of SIP over TLS
        return cls(transport, maddr or host, port)

    @classmethod
    def next_hop(cls, request: Request, default_transport: str = "udp") -> Peer:
        """Where to send ``request``: its first Route if any, else its Request-URI."""
        route = request.headers.get("Route")
        uri = parse_name_addr(route, "Route").uri if route is not None else request.uri
        return cls.for_uri(uri, default_transport)


class TransactionKey(NamedTuple):
    """Identifies a transaction (RFC 3261 §17.1.3, §17.2.3).

    Client keys are ``(branch, method)``; server keys add the top Via's sent-by. ACK uses the
    INVITE's key. Requests without the ``z9hG4bK`` cookie (RFC 2543) get a composite branch.
    A named tuple, like :class:`Peer`: a dictionary key hashed several times per message.
    """

    branch: str
    method: str
    sent_by: tuple[str, int] | None = None
    server: bool = False


@dataclass(slots=True, unsafe_hash=True)
class SendMessage:
    """For the transport: send ``message`` to ``peer`` (``key``: on behalf of which
    transaction, so that a send failure can be reported with :meth:`transport_error`)."""

    message: Request | Response
    peer: Peer
    key: TransactionKey | None = None


@dataclass(slots=True, unsafe_hash=True)
class RequestReceived:
    """For the TU: a new request, with the server transaction to answer it in.

    For a CANCEL, ``cancels`` is the key of the INVITE server transaction it cancels (a
    CANCEL that matches nothing is answered 481 by the layer and never reaches the TU).
    """

    request: Request
    key: TransactionKey
    peer: Peer
    cancels: TransactionKey | None = None


@dataclass(slots=True, unsafe_hash=True)
class ResponseReceived:
    """For the TU: a response to a request it sent in client transaction ``key``."""

    response: Response
    key: TransactionKey


@dataclass(slots=True, unsafe_hash=True)
class AckReceived:
    """For the TU: the ACK of a 2xx. ``key`` is the INVITE server transaction it confirmed,
    or ``None`` if it matched none (a late or stray ACK, still meaningful to a dialog)."""

    request: Request
    peer: Peer
    key: TransactionKey | None


@dataclass(slots=True, unsafe_hash=True)
class StrayResponse:
    """For the TU: a response matching no transaction — typically a retransmitted 2xx after
    the client transaction ended, which the dialog must ACK again."""

    response: Response
    peer: Peer


@dataclass(slots=True, unsafe_hash=True)
class TransactionTimedOut:
    """For the TU: timer B/F (no final response: treat as 408), H (no ACK for our error
    response) or L (no ACK for our 2xx: send BYE)."""

    key: TransactionKey
    request: Request
    timer: Timer


@dataclass(slots=True, unsafe_hash=True)
class TransactionFailed:
    """For the TU: the transport failed for this transaction (treat as 503, RFC 3261 §8.1.3.1)."""

    key: TransactionKey
    request: Request


@dataclass(slots=True, unsafe_hash=True)
class TransactionTerminated:
    key: TransactionKey


@dataclass(slots=True, unsafe_hash=True)
class MessageDropped:
    """For the log: a message the layer discarded, and why."""

    message: Request | Response
    peer: Peer
    reason: str


LayerEvent = (
    SendMessage
    | RequestReceived
    | ResponseReceived
    | AckReceived
    | StrayResponse
    | TransactionTimedOut
    | TransactionFailed
    | TransactionTerminated
    | MessageDropped
)


@dataclass(slots=True)
class _Entry:
    tx: Transaction
    peer: Peer  # where this transaction sends: the request's target, or the response's


def _strip_brackets(host: str) -> str:
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def stamp_via(request: Request, peer: Peer) -> None:
    """Add ``received`` (and fill ``rport``) on the top Via of a received request
    (RFC 3261 §18.2.1, RFC 3581 §4)."""
    via = request.top_via
    changes: dict[str, str | None] = {}
    if _strip_brackets(via.host) != peer.host or via.wants_rport:
        changes["received"] = peer.host
    if via.wants_rport:
        changes["rport"] = str(peer.port)
    if changes:
        request.headers.replace_first("Via", str(via.with_params(**changes)))


def response_peer(request: Request, peer: Peer) -> Peer:
    """Where responses to ``request`` (received from ``peer``) go (RFC 3261 §18.2.2,
    RFC 3581 §4): back over the connection for TCP; for UDP to ``received`` (or the sent-by
    host) at ``rport`` (or the sent-by port)."""
    if peer.reliable:
        return peer
    via = request.top_via
    host = via.received or _strip_brackets(via.host)
    port = via.rport or via.port or 5060
    return Peer(peer.transport, host, port)


class TransactionLayer:
    """All transactions of one SIP endpoint, sans-IO. See the module docstring.

    Every method returns :data:`LayerEvent` values in the order they happened: the transport
    sends each :class:`SendMessage`; everything else is for the TU.
    """

    def __init__(self, timers: TimerConfig | None = None) -> None:
        self.timers = timers or TimerConfig()
        self._transactions: dict[TransactionKey, _Entry] = {}
        self._heap: list[tuple[float, int, TransactionKey, Timer]] = []
        self._armed: dict[tuple[TransactionKey, Timer], int] = {}
        self._seq = itertools.count()
        # (Call-ID, CSeq number, From tag, To tag) of each 2xx sent, → its INVITE transaction.
        self._accepted: dict[tuple[str, int, str, str], TransactionKey] = {}
        self._accepted_by_key: dict[TransactionKey, tuple[str, int, str, str]] = {}
        # (Call-ID, From tag, CSeq) of out-of-dialog requests, → their server transaction,
        # to spot the same request arriving by a second path (RFC 3261 §8.2.2.2).
        self._merged: dict[tuple[str, str, str], TransactionKey] = {}
        self._merged_by_key: dict[TransactionKey, tuple[str, str, str]] = {}
        # Transactions that went quiet since the layer was last entered from the network or
        # the clock: compacted then, once the TU's handlers of the event are done with them.
        self._quiet: list[Transaction] = []

    def __len__(self) -> int:
        return len(self._transactions)

    def transaction(self, key: TransactionKey) -> Transaction | None:
        entry = self._transactions.get(key)
        return entry.tx if entry is not None else None

    def knows(self, request: Request) -> bool:
        """Whether ``request`` belongs to a server transaction that exists (a retransmission,
        or the ACK of an error response) rather than starting a new one."""
        try:
            key = self._server_key(request, request.top_via)
        except SipParseError:
            return False
        return key in self._transactions

    # -- from the TU
    def send_request(
        self, request: Request, peer: Peer, now: float
    ) -> tuple[TransactionKey, list[LayerEvent]]:
        """Send ``request`` in a new client transaction. Its top Via must carry a fresh
        RFC 3261 branch (:func:`new_branch`); a CANCEL reuses its INVITE's."""
        if request.method == "ACK":
            raise LocalProtocolError("ACK is sent without a transaction: use send_stateless()")
        try:
            branch = request.top_via.branch
        except SipParseError as exc:  # a Via we built ourselves: our bug
            raise LocalProtocolError(f"request has no usable Via: {exc}") from exc
        if branch is None or not branch.startswith(BRANCH_COOKIE) or branch == BRANCH_COOKIE:
            raise LocalProtocolError("a request we send needs an RFC 3261 branch")
        key = TransactionKey(branch, request.method)
        if key in self._transactions:
            raise LocalProtocolError(f"a transaction with branch {branch} already exists")
        cls = ClientInviteTransaction if request.method == "INVITE" else ClientNonInviteTransaction
        tx = cls(request, reliable=peer.reliable, timers=self.timers)
        entry = _Entry(tx, peer)
        self._transactions[key] = entry
        return key, self._apply(key, entry, tx.start(), now, peer)

    def send_stateless(self, message: Request | Response, peer: Peer) -> list[LayerEvent]:
        """Send outside any transaction: the ACK of a 2xx, a stateless error response."""
        return [SendMessage(message, peer)]

    def send_response(
        self, key: TransactionKey, response: Response, now: float
    ) -> list[LayerEvent]:
        """Send ``response`` in server transaction ``key``.

        Raises :class:`LocalProtocolError` if the transaction is gone or its state forbids
        this response (a second final response, for instance).
        """
        entry = self._transactions.get(key)
        if entry is None or not isinstance(entry.tx, ServerTransaction):
            raise LocalProtocolError(f"no server transaction {key}")
        actions = entry.tx.respond(response)
        if isinstance(entry.tx, ServerInviteTransaction) and 200 <= response.status < 300:
            self._index_accepted(key, entry.tx.request, response)
        return self._apply(key, entry, actions, now, entry.peer)

    def transport_error(self, key: TransactionKey, now: float) -> list[LayerEvent]:
        """The transport failed to send for transaction ``key``."""
        entry = self._transactions.get(key)
        if entry is None:
            return []
        return self._apply(key, entry, entry.tx.transport_error(), now, entry.peer)

    def terminate(self, key: TransactionKey) -> list[LayerEvent]:
        """Abandon a transaction (e.g. an INVITE whose CANCEL got no final response)."""
        entry = self._transactions.get(key)
        if entry is None:
            return []
        return self._apply(key, entry, entry.tx.terminate(), 0.0, entry.peer)

    # -- from the network
    def receive(self, message: Request | Response, peer: Peer, now: float) -> list[LayerEvent]:
        """A message arrived from ``peer``. Requests get ``received``/``rport`` stamped."""
        if self._quiet:
            self._compact()
        if isinstance(message, Response):
            return self._receive_response(message, peer, now)
        return self._receive_request(message, peer, now)

    def _receive_response(self, response: Response, peer: Peer, now: float) -> list[LayerEvent]:
        vias = response.vias
        if len(vias) != 1:
            # RFC 3261 §8.1.3.3: a response with more than one Via is not for us.
            return [MessageDropped(response, peer, "response with more than one Via")]
        key = TransactionKey(vias[0].branch or "", response.cseq.method)
        entry = self._transactions.get(key)
        if entry is None or not isinstance(entry.tx, ClientTransaction):
            return [StrayResponse(response, peer)]
        return self._apply(key, entry, entry.tx.receive(response), now, peer)

    def _receive_request(self, request: Request, peer: Peer, now: float) -> list[LayerEvent]:
        stamp_via(request, peer)
        via = request.top_via
        if via.branch == BRANCH_COOKIE:
            # RFC 4475 §3.2.1 (badbranch): the cookie without an identifier. Reject statelessly.
            if request.method == "ACK":
                return [MessageDropped(request, peer, "ACK with an empty branch")]
            answer = make_response(request, 400, "Missing Transaction Identifier",
                                   to_tag=new_tag())  # fmt: skip
            return [SendMessage(answer, response_peer(request, peer))]
        key = self._server_key(request, via)
        entry = self._transactions.get(key)
        if entry is not None and isinstance(entry.tx, ServerTransaction):
            # A retransmission, or the ACK of our error response: the table decides.
            return self._apply(key, entry, entry.tx.receive(request), now, peer)
        if request.method == "ACK":
            return self._receive_2xx_ack(request, peer, now)
        cancels: TransactionKey | None = None
        if request.method == "CANCEL":
            invite_key = TransactionKey(key.branch, "INVITE", key.sent_by, True)
            invite = self._transactions.get(invite_key)
            if invite is not None and not invite.tx.terminated:
                cancels = invite_key
        cls = ServerInviteTransaction if request.method == "INVITE" else ServerNonInviteTransaction
        tx = cls(request, reliable=peer.reliable, timers=self.timers)
        entry = _Entry(tx, response_peer(request, peer))
        self._transactions[key] = entry
        events: list[LayerEvent] = []
        if request.to.tag is None and request.method != "CANCEL":
            merge_key = (request.call_id, request.from_.tag or "", str(request.cseq))
            first = self._merged.get(merge_key)
            if first is not None and first != key and first in self._transactions:
                # The same request by another path: a loop or a fork merging here (§8.2.2.2).
                answer = make_response(request, 482, to_tag=new_tag())
                return self._apply(key, entry, tx.start() + tx.respond(answer), now, peer)
            self._merged[merge_key] = key
            self._merged_by_key[key] = merge_key
        if request.method == "CANCEL" and cancels is None:
            # RFC 3261 §9.2: nothing to cancel. Answer 481 here; the TU never sees it.
            answer = make_response(request, 481, to_tag=new_tag())
            return self._apply(key, entry, tx.start() + tx.respond(answer), now, peer)
        events.append(RequestReceived(request, key, peer, cancels))
        events += self._apply(key, entry, tx.start(), now, peer)
        return events

    def _receive_2xx_ack(self, ack: Request, peer: Peer, now: float) -> list[LayerEvent]:
        index = (ack.call_id, ack.cseq.number, ack.from_.tag or "", ack.to.tag or "")
        key = self._accepted.get(index)
        entry = self._transactions.get(key) if key is not None else None
        if key is None or entry is None:
            return [AckReceived(ack, peer, None)]
        assert isinstance(entry.tx, ServerTransaction)
        # The first ACK stops our 2xx retransmissions and goes to the TU; repeats are absorbed.
        return self._apply(key, entry, entry.tx.receive(ack), now, peer)

    @staticmethod
    def _server_key(request: Request, via: Via) -> TransactionKey:
        method = "INVITE" if request.method == "ACK" else request.method
        branch = via.branch or ""
        if not branch.startswith(BRANCH_COOKIE):
            # RFC 2543 matching (§17.2.3): Request-URI, From tag, Call-ID, CSeq number, Via.
            branch = "|".join(
                (
                    "rfc2543",
                    str(request.uri),
                    request.from_.tag or "",
                    request.call_id,
                    str(request.cseq.number),
                    str(via.without_params("received", "rport")),
                )
            )
        return TransactionKey(branch, method, via.sent_by, True)

    def _index_accepted(self, key: TransactionKey, request: Request, response: Response) -> None:
        index = (request.call_id, request.cseq.number, request.from_.tag or "",
                 response.to.tag or "")  # fmt: skip
        self._accepted[index] = key
        self._accepted_by_key[key] = index

    # -- time
    def next_deadline(self) -> float | None:
        """When :meth:`advance` next has something to do, or ``None``."""
        while self._heap:
            deadline, seq, key, timer = self._heap[0]
            if self._armed.get((key, timer)) == seq:
                return deadline
            heapq.heappop(self._heap)
        return None

    def advance(self, now: float) -> list[LayerEvent]:
        """Fire every timer due at or before ``now``, in deadline order.

        Timers started by a firing timer count from its deadline, so a late call catches up
        exactly as if it had been on time.
        """
        if self._quiet:
            self._compact()
        events: list[LayerEvent] = []
        while True:
            deadline = self.next_deadline()
            if deadline is None or deadline > now:
                return events
            _, _, key, timer = heapq.heappop(self._heap)
            del self._armed[(key, timer)]
            entry = self._transactions.get(key)
            if entry is not None:
                events += self._apply(key, entry, entry.tx.timer_fired(timer), deadline, entry.peer)

    def _compact(self) -> None:
        for tx in self._quiet:
            if tx.quiet:
                tx.compact()
        self._quiet.clear()

    # -- actions → events
    def _apply(
        self,
        key: TransactionKey,
        entry: _Entry,
        actions: list[Action],
        now: float,
        source: Peer,
    ) -> list[LayerEvent]:
        events: list[LayerEvent] = []
        tx = entry.tx
        for action in actions:
            if isinstance(action, Transmit):
                events.append(SendMessage(action.message, entry.peer, key))
            elif isinstance(action, StartTimer):
                seq = next(self._seq)
                self._armed[(key, action.timer)] = seq
                heapq.heappush(self._heap, (now + action.seconds, seq, key, action.timer))
            elif isinstance(action, CancelTimer):
                self._armed.pop((key, action.timer), None)
            elif isinstance(action, DeliverToTU):
                message = action.message
                if isinstance(message, Response):
                    events.append(ResponseReceived(message, key))
                else:
                    events.append(AckReceived(message, source, key))
            elif isinstance(action, Timeout):
                events.append(TransactionTimedOut(key, tx.request, action.timer))
            elif isinstance(action, TransportFailure):
                events.append(TransactionFailed(key, tx.request))
            elif isinstance(action, Terminated):
                self._transactions.pop(key, None)
                index = self._accepted_by_key.pop(key, None)
                if index is not None:
                    self._accepted.pop(index, None)
                merge_key = self._merged_by_key.pop(key, None)
                if merge_key is not None and self._merged.get(merge_key) == key:
                    del self._merged[merge_key]
                events.append(TransactionTerminated(key))
        if tx.state in tx.QUIET:
            self._quiet.append(tx)
        return events
