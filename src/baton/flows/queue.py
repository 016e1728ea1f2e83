"""The dispatcher queue: callers wait for a ready dispatcher position, and none is dropped.

A user who calls a dispatcher number lands in a :class:`DispatcherQueue`: answered, hearing
music (or the hold tone), ordered by priority and first-in-first-out within a priority. The
queue *offers* the head of the queue to a ready position (automatically, or when a dispatcher
takes a call from the console with :meth:`DispatcherQueue.take`): the position's phone rings
while the caller goes on hearing the music. Two dispatchers taking the same call in the same
instant: the first wins, the second gets :class:`AlreadyTaken`.

Rules (docs/flows.md, "The dispatcher queue")
---------------------------------------------
* **A queued caller is never hung up by the queue** except by the overflow policy, after the
  queue's ``timeout``: a busy tone and release, a recorded message, or a transfer to an overflow
  user. Everything else — the position's phone not registered, busy, not answering, declining,
  or the position taken by a higher-priority flow (an emergency) while it rings — is a *failed
  offer*: the call goes to the next ready position, or back into the queue with the caller
  keeping their place (their original arrival order).
* **The caller hears the queue music the whole time**, including while a position rings; it
  stops only once the caller is bridged to the dispatcher who answered.
* **Only ready positions are offered calls**: a position is ready when nothing holds it, no
  offer is on its way to it, it is not resting after a failed offer (``retry_after`` seconds),
  and the ``ready`` predicate given by the owner of the positions (the service: agent state and
  phone registration) says so.
* A position whose phone did not answer or declined is reported to ``on_missed`` (the service
  puts it in *not ready*, as call centres do on a missed offer).
* **A dispatcher's line that fails takes nobody down with it.** When the position's phone or
  connection dies (its leg ends with a failure cause: media timeout, transport gone, no
  response — not a hang-up) while it talks to a caller from the queue, or holds them, the
  caller goes back to the queue in their old place (:func:`requeued_call`: the music again,
  the next ready position offered the call); the position rests and is reported to
  ``on_missed`` with the cause. This is the P2P's ``on_line_lost`` hook (docs/flows.md), which
  the queue gives the call it connects and ``hold`` carries over.

The queue is shared state, not a flow: each waiting caller is a :func:`queued_call` flow that
owns the caller; the queue only decides *which* position is offered *which* call, and keeps the
figures (waiting, longest wait, answered within the service level).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import heapq
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from baton.core import (
    P2P,
    BatonError,
    CallFailed,
    Cause,
    ClaimDenied,
    FlowInterrupted,
    FlowUsageError,
    InvalidArgument,
    NotOwner,
    Playback,
    Priority,
    Prompt,
    Session,
    Superseded,
    Tone,
    User,
    UserHungUp,
    UserManager,
    flow,
)
from baton.core.events import Event, OwnerChanged
from baton.flows._common import stop_quietly

__all__ = [
    "AlreadyTaken",
    "DispatcherQueue",
    "Overflow",
    "QueueEntry",
    "QueueFigures",
    "queued_call",
    "requeued_call",
    "take_call",
]


class AlreadyTaken(BatonError):
    """The queued call was taken by another dispatcher first."""

    code = "already-taken"


class Overflow(enum.Enum):
    """What happens to a caller who waited longer than the queue's timeout."""

    BUSY = "busy"  # busy tone, then the call is ended
    MESSAGE = "message"  # the caller may leave a message (recorded), then the call is ended
    TRANSFER = "transfer"  # the call is put through to the queue's overflow user


@dataclass(order=True)
class QueueEntry:
    """A caller waiting in the queue. ``sort_key`` (priority, arrival) never changes: a caller
    whose offer failed goes back to the same place."""

    sort_key: tuple[int, int]
    caller: User = field(compare=False)
    priority: int = field(compare=False)
    assigned: asyncio.Future[User] = field(compare=False)
    since: float = field(compare=False, default=0.0)
    offered_to: User | None = field(compare=False, default=None)
    tried: set[User] = field(compare=False, default_factory=set)
    offers: int = field(compare=False, default=0)
    overflow_from: float = field(compare=False, default=0.0)  # when the overflow clock started
    requeued: int = field(compare=False, default=0)  # times put back after a line failed

    def __str__(self) -> str:  # how the event stream and the journal show it (a flow argument)
        return f"{self.caller.id} (priority {self.priority})"


@dataclass
class QueueFigures:
    """What a supervisor watches: counts since start and the queue now."""

    waiting: int = 0  # callers in the queue now (being offered included)
    longest_wait: float = 0.0  # seconds the longest-waiting caller has waited now
    answered: int = 0
    answered_within: int = 0  # answered within ``service_level`` seconds
    service_level: float = 20.0
    abandoned: int = 0  # callers who hung up (or were taken) while waiting
    overflowed: int = 0
    offers_failed: int = 0
    requeued: int = 0  # callers put back in the queue because their dispatcher's line failed


class DispatcherQueue:
    """Callers waiting for a dispatcher position, by priority then arrival."""

    def __init__(
        self,
        name: str,
        manager: UserManager,
        positions: list[User],
        *,
        timeout: float = 120.0,
        overflow: Overflow = Overflow.BUSY,
        overflow_to: User | None = None,
        music: str | None = None,
        auto_assign: bool = True,
        recordings: str = "var/recordings",
        max_message: float = 60.0,
        ring_timeout: float = 20.0,
        retry_after: float = 10.0,
        service_level: float = 20.0,
        ready: Callable[[User], bool] | None = None,
        on_missed: Callable[[User, Cause], None] | None = None,
    ) -> None:
        if overflow is Overflow.TRANSFER and overflow_to is None:
            raise InvalidArgument("overflow TRANSFER needs overflow_to", "overflow_to")
        self.name = name
        self.manager = manager
        self.positions = list(positions)
        self.timeout = timeout
        self.overflow = overflow
        self.overflow_to = overflow_to
        self.music = music
        self.auto_assign = auto_assign
        self.recordings = recordings
        self.max_message = max_message
        self.ring_timeout = ring_timeout
        self.retry_after = retry_after
        self.ready = ready
        self.on_missed = on_missed
        self.figures = QueueFigures(service_level=service_level)
        self._heap: list[QueueEntry] = []
        self._entries: list[QueueEntry] = []  # every caller in the queue, offered ones too
        self._offering: dict[User, QueueEntry] = {}  # position -> the call offered to it
        self._resting: dict[User, float] = {}  # position -> until when it is not offered calls
        self._withdrawals: dict[User, asyncio.Future[None]] = {}  # position -> its offer's recall
        self._timers: set[asyncio.TimerHandle] = set()
        self._kick_armed = False
        self._seq = itertools.count()
        self._ids = {p.id for p in self.positions}
        self._unsubscribe = manager.events.subscribe(self._on_event)

    def __str__(self) -> str:
        return f"queue {self.name}"

    def set_positions(self, positions: list[User]) -> None:
        """The positions calls are offered to from now on (provisioning changed them); a call
        being offered to a position that is no longer one keeps ringing there until it is
        answered or fails, like any offer."""
        self.positions = list(positions)
        self._ids = {p.id for p in self.positions}
        self.kick()

    def close(self) -> None:
        """Stop watching the positions (timers and the event subscription)."""
        self._unsubscribe()
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()

    # ---- looking

    def waiting(self) -> list[QueueEntry]:
        """The callers not being offered now, in service order."""
        return sorted(e for e in self._heap if not e.assigned.done())

    def callers(self) -> list[QueueEntry]:
        """Every caller in the queue (those being offered to a position included), in order."""
        return sorted(self._entries)

    def position_of(self, caller: User) -> int | None:
        """1 for the head of the queue."""
        for i, e in enumerate(self.callers(), 1):
            if e.caller is caller:
                return i
        return None

    def offered_to(self, position: User) -> User | None:
        """The caller whose call is being offered to ``position`` now, if any."""
        entry = self._offering.get(position)
        return None if entry is None else entry.caller

    def withdraw(self, position: User) -> bool:
        """Take back the offer ringing at ``position`` now (its dispatcher logged out): its
        phone stops ringing, the caller keeps their place and the next ready position is
        offered the call at once. False if no offer rings there (none, or already answered)."""
        recall = self._withdrawals.get(position)
        if recall is None or recall.done():
            return False
        recall.set_result(None)
        return True

    def is_free(self, dispatcher: User) -> bool:
        """A position is free when nothing holds it, its phone is not ringing or calling, no
        queued call is on its way to it, it is not resting after a failed offer, and its owner
        says it is ready (agent state, phone registered)."""
        leg = self.manager.leg_of(dispatcher)
        return (
            dispatcher in self.positions
            and dispatcher not in self._offering
            and self.manager.owner_of(dispatcher) is None
            and (leg is None or leg.connected)
            and self._resting.get(dispatcher, 0.0) <= self.manager.now()
            and (self.ready is None or self.ready(dispatcher))
        )

    def snapshot(self) -> QueueFigures:
        """The figures now (waiting and longest wait computed at this instant)."""
        f = self.figures
        now = self.manager.now()
        f.waiting = len(self._entries)
        f.longest_wait = max((now - e.since for e in self._entries), default=0.0)
        return QueueFigures(**vars(f))

    # ---- acting

    def enqueue(self, caller: User, priority: int) -> QueueEntry:
        loop = asyncio.get_running_loop()
        entry = QueueEntry(
            (-priority, next(self._seq)), caller, priority, loop.create_future(), loop.time()
        )
        entry.overflow_from = entry.since
        heapq.heappush(self._heap, entry)
        self._entries.append(entry)
        self.dispatch()
        return entry

    def leave(self, entry: QueueEntry) -> None:
        """The caller leaves the queue (connected, overflowed, hung up); a position it was
        being offered to is free again."""
        for position in [d for d, e in self._offering.items() if e is entry]:
            del self._offering[position]
            self.kick()
        entry.offered_to = None
        if entry in self._heap:
            self._heap.remove(entry)
            heapq.heapify(self._heap)
        if entry in self._entries:
            self._entries.remove(entry)
        if not entry.assigned.done():
            entry.assigned.cancel()

    def take(self, dispatcher: User, caller: User | None = None) -> User:
        """Dispatcher ``dispatcher`` takes ``caller``'s queued call (or the head of the queue).

        Synchronous, so that of two dispatchers taking the same call in one instant exactly one
        wins; the other gets :class:`AlreadyTaken`. Returns the caller.
        """
        if dispatcher not in self.positions:
            raise FlowUsageError(f"{dispatcher.id!r} is not a position of queue {self.name!r}")
        if dispatcher in self._offering:
            raise FlowUsageError(f"{dispatcher.id!r} is already taking a call")
        candidates = self.waiting()
        if caller is not None:
            match = [e for e in self._entries if e.caller is caller]
            if not match:
                raise FlowUsageError(f"{caller.id!r} is not waiting in queue {self.name!r}")
            taker = match[0].offered_to
            if taker is not None:
                raise AlreadyTaken(f"the call from {caller.id!r} was taken by {taker.id!r} first")
            candidates = match
        if not candidates:
            raise FlowUsageError(f"queue {self.name!r} is empty")
        entry = candidates[0]
        self._assign(entry, dispatcher)
        return entry.caller

    def answered(self, entry: QueueEntry, dispatcher: User) -> None:
        """The offer to ``dispatcher`` connected: the caller leaves the queue."""
        waited = self.manager.now() - entry.since
        if not entry.requeued:  # a caller answered again after a line failure counts once
            self.figures.answered += 1
            if waited <= self.figures.service_level:
                self.figures.answered_within += 1
        self._offering.pop(dispatcher, None)
        entry.offered_to = None
        self.leave(entry)
        self.kick()

    def offer_failed(self, entry: QueueEntry, dispatcher: User, cause: Cause | None) -> None:
        """The offer to ``dispatcher`` failed: the caller goes back to their place in the queue
        (the next ready position is offered). A position whose phone failed the offer (``cause``)
        rests ``retry_after`` seconds."""
        self.figures.offers_failed += 1
        if self._offering.get(dispatcher) is entry:
            del self._offering[dispatcher]
        entry.offered_to = None
        entry.tried.add(dispatcher)
        if cause is not None:  # the phone failed; a position held by a flow is simply busy
            self._rest(dispatcher)
        if cause in (Cause.NO_ANSWER, Cause.REJECTED) and self.on_missed is not None:
            self.on_missed(dispatcher, cause)
        if entry in self._entries:
            entry.assigned = asyncio.get_running_loop().create_future()
            heapq.heappush(self._heap, entry)
        self.dispatch()

    def line_lost(self, entry: QueueEntry, dispatcher: User, cause: Cause) -> None:
        """``dispatcher``'s line failed (``cause``) while it had ``entry``'s caller, answered:
        the caller goes back to their old place (priority, arrival) with a whole ``timeout``
        before overflow; the position rests and is reported to ``on_missed``. The caller's
        :func:`requeued_call` flow serves the entry from here."""
        loop = asyncio.get_running_loop()
        self.figures.requeued += 1
        entry.requeued += 1
        entry.offered_to = None
        entry.tried = {dispatcher}
        entry.overflow_from = loop.time()
        entry.assigned = loop.create_future()
        self._rest(dispatcher)
        if self.on_missed is not None:
            self.on_missed(dispatcher, cause)
        if entry not in self._entries:
            self._entries.append(entry)
        if entry not in self._heap:
            heapq.heappush(self._heap, entry)
        self.dispatch()

    def done(self, dispatcher: User) -> None:
        """The position finished with its offer (or gave up): it may be offered calls again."""
        entry = self._offering.pop(dispatcher, None)
        if entry is not None:
            entry.offered_to = None
        self.dispatch()

    def dispatch(self) -> None:
        """Offer waiting calls to ready positions (if ``auto_assign``); positions that already
        failed a caller are offered that caller last."""
        if not self.auto_assign:
            return
        for entry in self.waiting():
            free = [d for d in self.positions if self.is_free(d)]
            if not free:
                return
            free.sort(key=lambda d: d in entry.tried)
            self._assign(entry, free[0])

    def _assign(self, entry: QueueEntry, dispatcher: User) -> None:
        self._offering[dispatcher] = entry
        entry.offered_to = dispatcher
        entry.offers += 1
        self._heap.remove(entry)
        heapq.heapify(self._heap)
        entry.assigned.set_result(dispatcher)

    def _rest(self, dispatcher: User) -> None:
        if self.retry_after <= 0:
            return
        self._resting[dispatcher] = self.manager.now() + self.retry_after
        loop = self.manager.loop
        timer: asyncio.TimerHandle | None = None

        def wake() -> None:
            if timer is not None:
                self._timers.discard(timer)
            self._resting.pop(dispatcher, None)
            self.dispatch()

        timer = loop.call_later(self.retry_after, wake)
        self._timers.add(timer)

    def _on_event(self, ev: Event) -> None:
        # A position let go by its call (or its flow) may take the next caller.
        if isinstance(ev, OwnerChanged) and ev.new is None and ev.user in self._ids:
            self.kick()

    def kick(self) -> None:
        """Dispatch soon: after the core has finished the synchronous step that woke us."""
        if self._kick_armed:
            return
        self._kick_armed = True

        def run() -> None:
            self._kick_armed = False
            self.dispatch()

        self.manager.loop.call_soon(run)


@flow(priority=Priority.ROUTINE, permission="call")
async def queued_call(
    s: Session, caller: User, queue: DispatcherQueue, priority: int | None = None
) -> User | None:
    """Answer ``caller``, hold them in ``queue`` (hearing music) until a position answers an
    offer of the call, connect them.

    Returns the dispatcher who took the call, or None if the overflow action ended it.
    """
    await s.claim(caller)
    await s.answer(caller)
    entry = queue.enqueue(caller, s.priority if priority is None else priority)
    s.note(f"{caller.id} waits in queue {queue.name} at position {queue.position_of(caller)}")
    return await _serve(s, caller, queue, entry)


#: how long a re-queued caller's flow waits for the call or hold that had them to let go
_REQUEUE_CLAIM_WAIT = 10.0


@flow(priority=Priority.ROUTINE, permission="call")
async def requeued_call(
    s: Session, caller: User, queue: DispatcherQueue, entry: QueueEntry
) -> User | None:
    """``caller``'s dispatcher lost the line (:meth:`DispatcherQueue.line_lost` has put the
    entry back in its old place): take the caller back from the call or hold that had them —
    once it lets go — and serve them as :func:`queued_call` does, music first.

    Started by the queue's ``on_line_lost`` hook, not from the library."""
    try:
        # the P2P lets go at once; a hold flow (higher priority) as soon as it has returned
        await s.claim(caller, wait=_REQUEUE_CLAIM_WAIT)
    except BaseException:
        queue.leave(entry)
        raise
    s.note(f"{caller.id} is back in queue {queue.name} at position {queue.position_of(caller)}")
    return await _serve(s, caller, queue, entry)


def _requeue_on_line_lost(
    queue: DispatcherQueue, entry: QueueEntry, dispatcher: User
) -> Callable[[User, Cause], bool]:
    """The ``on_line_lost`` hook of the P2P a queued call settles into: the dispatcher's line
    failed, so the caller goes back to the queue rather than being hung up. The caller's own
    line failing is an ordinary end of the call (False: the P2P clears it)."""
    manager = queue.manager

    def requeue(partner: User, cause: Cause) -> bool:
        if partner is not entry.caller or manager.closing:
            return False
        queue.line_lost(entry, dispatcher, cause)
        manager.start(requeued_call, entry.caller, queue, entry)
        return True

    return requeue


async def _serve(
    s: Session, caller: User, queue: DispatcherQueue, entry: QueueEntry
) -> User | None:
    """Hold ``caller`` in ``queue`` with music until a position answers (or overflow)."""
    music: Playback | None = None
    try:
        music = await _music(s, caller, queue, None)
        while True:
            left = entry.overflow_from + queue.timeout - s.now()
            dispatcher: User | None = None
            if entry.assigned.done() and not entry.assigned.cancelled():
                dispatcher = entry.assigned.result()
            elif left > 0:
                dispatcher = await s.wait(entry.assigned, timeout=left)
                fut = entry.assigned
                if dispatcher is None and fut.done() and not fut.cancelled():
                    dispatcher = fut.result()  # assigned in the instant the wait ran out
            if dispatcher is None:
                queue.leave(entry)
                queue.figures.overflowed += 1
                break
            music = await _music(s, caller, queue, music)
            if await _offer(s, caller, dispatcher, queue, entry, music):
                return dispatcher
    except BaseException:
        if entry in queue.callers():
            queue.figures.abandoned += 1
        raise
    finally:
        queue.leave(entry)
    await _overflow(s, caller, queue, music)
    return None


async def _music(
    s: Session, caller: User, queue: DispatcherQueue, music: Playback | None
) -> Playback:
    """The queue's music to ``caller`` — started again if something stopped it."""
    if music is not None and not music.done.done():
        return music
    media = Prompt(queue.music) if queue.music else Tone("hold")
    return await s.play(caller, media, loop=True)


async def _offer(
    s: Session,
    caller: User,
    dispatcher: User,
    queue: DispatcherQueue,
    entry: QueueEntry,
    music: Playback,
) -> bool:
    """Offer ``caller``'s call to ``dispatcher``: ring the position (the caller keeps hearing
    the music), bridge them on answer. False if the offer failed (the caller is back in the
    queue); a caller who is lost meanwhile ends the flow (the exception goes up)."""
    s.note(f"{caller.id}'s call is offered to {dispatcher.id}")
    if s.owner_of(dispatcher) is not None:
        # Someone holds the position (a dispatcher took a call from the console while busy,
        # or another flow came first): a queued caller never preempts a position.
        return _failed(s, caller, dispatcher, queue, entry, None, "is busy")
    rang = False
    recall: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    queue._withdrawals[dispatcher] = recall
    watcher = s.spawn(_hang_up_on_recall(s, dispatcher, recall), f"recall:{dispatcher.id}")
    try:
        await s.claim(dispatcher)  # fails at once if taken meanwhile: the position is not ready
        rang = s.leg_of(dispatcher) is None
        if not recall.done():
            await s.dial(dispatcher, timeout=queue.ring_timeout, caller=caller)
        if recall.done():
            # Withdrawn before it rang, or in the instant it was answered: the position is
            # logged out, and the caller keeps their place rather than being put through.
            raise CallFailed.for_cause(dispatcher, Cause.CANCELLED)
        await s.connect(caller, dispatcher)
        # (a party lost while the music stops is the offer's loss like any other: swallowed,
        # the flow would settle a call with a caller it no longer holds)
        await stop_quietly(s, music)
    except (ClaimDenied, Superseded):
        return _failed(s, caller, dispatcher, queue, entry, None, "was taken by another flow")
    except CallFailed as exc:
        await _withdraw(s, dispatcher, rang)
        if recall.done():
            why = "logged out while the call rang"
            return _failed(s, caller, dispatcher, queue, entry, None, why)
        why = _OFFER_FAILURE.get(exc.cause, f"could not be reached ({exc.cause.value})")
        return _failed(s, caller, dispatcher, queue, entry, exc.cause, why)
    except (FlowInterrupted, NotOwner) as exc:
        await _withdraw(s, dispatcher, rang)
        if caller in getattr(exc, "users", (exc.user,)):  # the caller is gone: the flow ends
            queue.done(dispatcher)
            raise
        why = "hung up" if isinstance(exc, UserHungUp) else "was taken by another flow"
        return _failed(s, caller, dispatcher, queue, entry, None, why)
    except BaseException:
        # Cancelled or crashed: the flow ends; a call still ringing at the position is ended
        # by its ring timeout (the manager's, invariant 4).
        queue.done(dispatcher)
        raise
    finally:
        if queue._withdrawals.get(dispatcher) is recall:
            del queue._withdrawals[dispatcher]
        watcher.cancel()  # not awaited: no await point between the answer and the settle
    s.settle(P2P(caller, dispatcher, on_line_lost=_requeue_on_line_lost(queue, entry, dispatcher)))
    queue.answered(entry, dispatcher)
    s.note(f"{dispatcher.id} took {caller.id}'s call")
    return True


async def _hang_up_on_recall(s: Session, dispatcher: User, recall: asyncio.Future[None]) -> None:
    """The offer was withdrawn (:meth:`DispatcherQueue.withdraw`): end the call still ringing
    at the position, so that the offer's dial fails at once. A call answered already is left
    to the offer, which sees the recall and gives the position back."""
    await recall
    leg = s.leg_of(dispatcher)
    if s.owns(dispatcher) and leg is not None and not leg.connected:
        with contextlib.suppress(BatonError):
            await s.hangup(dispatcher, Cause.CANCELLED)


_OFFER_FAILURE = {
    Cause.NO_ANSWER: "did not answer",
    Cause.BUSY: "was busy",
    Cause.REJECTED: "declined",
    Cause.INCOMPATIBLE: "cannot take the call's audio (no common codec or encryption)",
    Cause.UNREACHABLE: "has no phone registered",
}


def _failed(
    s: Session,
    caller: User,
    dispatcher: User,
    queue: DispatcherQueue,
    entry: QueueEntry,
    cause: Cause | None,
    why: str,
) -> bool:
    s.note(f"{dispatcher.id} {why}: {caller.id} keeps their place in queue {queue.name}")
    queue.offer_failed(entry, dispatcher, cause)
    return False


async def _withdraw(s: Session, dispatcher: User, rang: bool) -> None:
    """Give the position back after an offer that did not connect: a call we placed to it is
    hung up, a line that was up before (a dispatcher's always-on line) stays up."""
    if not s.owns(dispatcher):
        return
    if rang and s.leg_of(dispatcher) is not None:
        with contextlib.suppress(BatonError):
            await s.hangup(dispatcher)
    s.release(dispatcher)


async def _overflow(
    s: Session, caller: User, queue: DispatcherQueue, music: Playback | None
) -> None:
    """The overflow policy. Each step starts what the caller hears next before the music stops
    (no dead air)."""
    s.note(f"{caller.id} waited {queue.timeout:g} s: overflow {queue.overflow.value}")

    async def stop_music() -> None:
        if music is not None:
            with contextlib.suppress(BatonError):
                await s.stop(music)

    if queue.overflow is Overflow.TRANSFER and queue.overflow_to is not None:
        target = queue.overflow_to
        try:
            await s.claim(target, wait=5.0)
            await s.dial(target, caller=caller)
            await s.connect(caller, target)
        except (CallFailed, BatonError):
            await _busy(s, caller, stop_music)
            return
        await stop_music()
        s.settle(P2P(caller, target))
        return
    if queue.overflow is Overflow.MESSAGE:
        beep = await s.play(caller, Tone("confirm"), wait=False)
        await stop_music()
        await s.wait(beep.done)
        path = f"{queue.recordings}/{queue.name}-{caller.id}-{int(s.now())}.wav"
        recording = await s.record(caller, path)
        s.note(f"recording {caller.id}'s message to {path}")
        try:
            await s.sleep(queue.max_message)
        except UserHungUp:
            return  # the message is complete; hanging up ended the recording
        await s.stop_recording(recording)
        await s.hangup(caller)
        return
    await _busy(s, caller, stop_music)


async def _busy(s: Session, caller: User, stop_music: Callable[[], Awaitable[None]]) -> None:
    tone = await s.play(caller, Tone("busy", 3.0), wait=False)
    await stop_music()
    await s.wait(tone.done)
    await s.hangup(caller, Cause.BUSY)


@flow(priority=Priority.ROUTINE, permission="call")
async def take_call(
    s: Session, dispatcher: User, queue: DispatcherQueue, caller: User | None = None
) -> str:
    """A dispatcher takes a queued call from the console (the head of the queue by default).

    Raises :class:`AlreadyTaken` if another dispatcher took it first.
    """
    taken = queue.take(dispatcher, caller)
    return taken.id
