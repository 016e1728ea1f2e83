"""The event stream: every ownership change, leg state change, media command and flow start/end
is an event with a sequence number, on one bus that the API, the journal and tests read
(docs/design.md, invariant 9).

Events name parties by stable strings — a user's id, an owner's name (``"call#12"``,
``"p2p#3"``) — so they can be serialised as they are. Subscribers are called synchronously, in
order, at publish time; a subscriber that raises is removed and reported, never allowed to break
the publisher. :meth:`EventBus.stream` gives an async iterator for consumers that run in their
own task (the API's WebSocket), with a bounded queue.
"""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

__all__ = [
    "CallInfoEnded",
    "CallInfoStarted",
    "ClaimQueued",
    "ClaimRefused",
    "CompensationOutcome",
    "CompensationRan",
    "DtmfDigit",
    "Event",
    "EventBus",
    "FlowEnded",
    "FlowNote",
    "FlowNotified",
    "FlowOutcome",
    "FlowStarted",
    "LegCollected",
    "LegStateChanged",
    "MediaChanged",
    "NoticeKind",
    "OpInterrupted",
    "OwnerChanged",
    "PreemptionCompleted",
    "PreemptionStarted",
    "PreemptionSuperseded",
    "Problem",
]


# The words events carry. String enums, so that an event's JSON, the journal's rows and the
# API keep the very strings they had ("completed", "preempted", "ran").


class FlowOutcome(enum.StrEnum):
    """How a flow ended (``Flow.outcome``, ``FlowEnded.outcome``)."""

    COMPLETED = "completed"  # the procedure returned
    FAILED = "failed"  # it raised (or a child task or DTMF handler of it did)
    CANCELLED = "cancelled"  # it was cancelled (``Flow.cancel``, the manager closing)


class NoticeKind(enum.StrEnum):
    """Why an owner lost a user (``Notice.kind``; ``FlowNotified.notice``,
    ``OpInterrupted.notice``)."""

    PREEMPTED = "preempted"  # taken by a higher-priority claim
    HUNG_UP = "hung_up"  # the user's leg ended from their side
    RELEASED = "released"  # another task of the same owner gave the user away (never published)


class CompensationOutcome(enum.StrEnum):
    """What became of one compensation step (``CompensationRan.outcome``)."""

    RAN = "ran"
    SKIPPED = "skipped"  # the flow no longer owns a user the step names, under its epoch
    FAILED = "failed"  # the step raised
    TIMEOUT = "timeout"  # the step, or the whole wind-down, overran its deadline


@dataclass(slots=True, kw_only=True)
class Event:
    """Base of every event. ``seq`` and ``t`` (loop time) are set by the bus on publish."""

    kind: ClassVar[str] = "event"
    seq: int = 0
    t: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["kind"] = self.kind
        return d


@dataclass(slots=True, kw_only=True)
class FlowStarted(Event):
    kind: ClassVar[str] = "flow.started"
    flow: str
    name: str
    priority: int
    #: The arguments by name as JSON values (users by id, enums by value; unset ones left out).
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True, kw_only=True)
class FlowEnded(Event):
    kind: ClassVar[str] = "flow.ended"
    flow: str
    outcome: FlowOutcome
    error: str | None = None


@dataclass(slots=True, kw_only=True)
class FlowNote(Event):
    """A line a flow wrote in its own trace (``Session.note``)."""

    kind: ClassVar[str] = "flow.note"
    flow: str
    text: str


@dataclass(slots=True, kw_only=True)
class FlowNotified(Event):
    """A flow was told it lost a user (``notice``: preempted or hung up) and how:
    ``via`` is ``"handler"``, ``"operation"`` (the awaited op raised) or ``"pending"`` (it will
    be raised at the flow's next operation)."""

    kind: ClassVar[str] = "flow.notified"
    flow: str
    user: str
    notice: NoticeKind
    via: str
    by: str | None = None


@dataclass(slots=True, kw_only=True)
class OwnerChanged(Event):
    """The one choke point of the ledger publishes this for every hand-over."""

    kind: ClassVar[str] = "owner.changed"
    user: str
    old: str | None
    new: str | None
    epoch: int
    reason: str  # claimed | preempted | superseded | settled | released | hung_up | ...
    priority: int | None = None


@dataclass(slots=True, kw_only=True)
class ClaimQueued(Event):
    kind: ClassVar[str] = "claim.queued"
    user: str
    claimer: str
    priority: int
    holder: str


@dataclass(slots=True, kw_only=True)
class ClaimRefused(Event):
    kind: ClassVar[str] = "claim.refused"
    user: str
    claimer: str
    holder: str | None
    reason: str  # denied | timeout | superseded | cancelled


@dataclass(slots=True, kw_only=True)
class PreemptionStarted(Event):
    kind: ClassVar[str] = "preemption.started"
    user: str
    victim: str
    claimer: str
    priority: int
    reason: str | None = None


@dataclass(slots=True, kw_only=True)
class PreemptionSuperseded(Event):
    kind: ClassVar[str] = "preemption.superseded"
    user: str
    old_claimer: str
    new_claimer: str


@dataclass(slots=True, kw_only=True)
class PreemptionCompleted(Event):
    kind: ClassVar[str] = "preemption.completed"
    user: str
    victim: str
    claimer: str | None  # None when the claimer left before the grant
    seconds: float


@dataclass(slots=True, kw_only=True)
class OpInterrupted(Event):
    """An in-flight operation of a flow was stopped (and had unwound) because it lost a user."""

    kind: ClassVar[str] = "op.interrupted"
    flow: str
    op: str
    users: tuple[str, ...]
    notice: NoticeKind


@dataclass(slots=True, kw_only=True)
class LegStateChanged(Event):
    kind: ClassVar[str] = "leg.state"
    user: str
    leg: str
    state: str
    direction: str
    cause: str | None = None


@dataclass(slots=True, kw_only=True)
class MediaChanged(Event):
    """A media command reached the switch (``command``: bridge, join, leave, meeting.create,
    meeting.destroy, play, play.stop, record, record.stop, clear) — or finished (``play.done``,
    ``record.done``)."""

    kind: ClassVar[str] = "media"
    command: str
    users: tuple[str, ...] = ()
    meeting: str | None = None
    detail: str | None = None
    by: str | None = None


@dataclass(slots=True, kw_only=True)
class DtmfDigit(Event):
    kind: ClassVar[str] = "dtmf"
    user: str
    digit: str


@dataclass(slots=True, kw_only=True)
class CallInfoStarted(Event):
    kind: ClassVar[str] = "callinfo.started"
    callinfo: str
    users: tuple[str, ...]
    priority: int
    meeting: str | None = None


@dataclass(slots=True, kw_only=True)
class CallInfoEnded(Event):
    kind: ClassVar[str] = "callinfo.ended"
    callinfo: str
    reason: str


@dataclass(slots=True, kw_only=True)
class LegCollected(Event):
    """A leg with no owner outlived its grace period and was hung up (no leaks)."""

    kind: ClassVar[str] = "leg.collected"
    user: str
    leg: str


@dataclass(slots=True, kw_only=True)
class CompensationRan(Event):
    kind: ClassVar[str] = "compensation"
    flow: str
    step: str
    outcome: CompensationOutcome
    detail: str | None = None


@dataclass(slots=True, kw_only=True)
class Problem(Event):
    """Something went wrong that no flow could be told about (a crashed supervised task, an
    event for an unknown leg, an operation that did not unwind in time)."""

    kind: ClassVar[str] = "problem"
    source: str
    message: str


Subscriber = Callable[[Event], None]


class EventBus:
    """Sequence-numbered, synchronous publish/subscribe with a bounded history."""

    def __init__(self, clock: Callable[[], float], *, history: int = 10_000) -> None:
        self._clock = clock
        self._seq = 0
        self._subscribers: list[Subscriber] = []
        # The subscribers as a tuple, rebuilt when they change: publish() runs about 17 times
        # per call and iterates over a snapshot (a subscriber may unsubscribe while called).
        self._snapshot: tuple[Subscriber, ...] = ()
        self.history: deque[Event] = deque(maxlen=history)

    @property
    def last_seq(self) -> int:
        return self._seq

    def set_clock(self, clock: Callable[[], float]) -> None:
        """Read the time from ``clock`` from now on (the manager's loop, once it has met it)."""
        self._clock = clock

    def publish(self, event: Event) -> Event:
        self._seq += 1
        event.seq = self._seq
        event.t = self._clock()
        self.history.append(event)
        for sub in self._snapshot:
            try:
                sub(event)
            except Exception as exc:  # a broken subscriber must not break the core
                if sub in self._subscribers:
                    self._subscribers.remove(sub)
                    self._snapshot = tuple(self._subscribers)
                if not isinstance(event, Problem):
                    self.publish(Problem(source="events", message=f"subscriber removed: {exc!r}"))
        return event

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(event)`` for every future event; returns the unsubscribe function."""
        self._subscribers.append(callback)
        self._snapshot = tuple(self._subscribers)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)
                self._snapshot = tuple(self._subscribers)

        return unsubscribe

    async def stream(self, *, maxsize: int = 1000) -> AsyncIterator[Event]:
        """Iterate over future events. If the consumer falls ``maxsize`` events behind, the
        oldest are dropped and a :class:`Problem` says how many (the history keeps them)."""
        queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=maxsize)
        dropped = 0

        def feed(event: Event) -> None:
            nonlocal dropped
            if queue.full():
                queue.get_nowait()
                dropped += 1
            queue.put_nowait(event)

        unsubscribe = self.subscribe(feed)
        try:
            while True:
                event = await queue.get()
                if dropped:
                    n, dropped = dropped, 0
                    yield Problem(source="events", message=f"stream consumer dropped {n} events")
                yield event
        finally:
            unsubscribe()
