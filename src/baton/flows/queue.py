"""The dispatcher queue: callers wait for a free dispatcher position.

A user who calls a dispatcher number lands in a :class:`DispatcherQueue`: answered, hearing
music (or the hold tone), ordered by priority and first-in-first-out within a priority. Any free
position takes the head of the queue automatically; a dispatcher may also take a given call from
the console (:meth:`DispatcherQueue.take`). Two dispatchers taking the same call in the same
instant: the first wins, the second gets :class:`AlreadyTaken`. A caller who waits longer than
the queue's ``timeout`` meets the overflow action: a busy tone and release, a recorded message,
or a transfer to an overflow user.

The queue is shared state, not a flow: each waiting caller is a :func:`queued_call` flow that
owns the caller; the queue only decides *which* dispatcher takes *which* call.
"""

from __future__ import annotations

import asyncio
import enum
import heapq
import itertools
from dataclasses import dataclass, field

from baton.core import (
    P2P,
    BatonError,
    CallFailed,
    FlowUsageError,
    Priority,
    Session,
    User,
    UserHungUp,
    UserManager,
    flow,
)
from baton.switch.port import Cause, Prompt, Tone

__all__ = [
    "AlreadyTaken",
    "DispatcherQueue",
    "Overflow",
    "QueueEntry",
    "queued_call",
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
    """A caller waiting in the queue."""

    sort_key: tuple[int, int]
    caller: User = field(compare=False)
    priority: int = field(compare=False)
    assigned: asyncio.Future[User] = field(compare=False)
    since: float = field(compare=False, default=0.0)


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
    ) -> None:
        if overflow is Overflow.TRANSFER and overflow_to is None:
            raise FlowUsageError("overflow TRANSFER needs overflow_to")
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
        self._heap: list[QueueEntry] = []
        self._busy: set[User] = set()  # positions assigned a call and not yet connected
        self._taken: dict[User, User] = {}  # caller -> the position that took it (until done)
        self._seq = itertools.count()

    def __str__(self) -> str:
        return f"queue {self.name}"

    # ---- looking

    def waiting(self) -> list[QueueEntry]:
        """The queue in service order."""
        return sorted(e for e in self._heap if not e.assigned.done())

    def position_of(self, caller: User) -> int | None:
        """1 for the head of the queue."""
        for i, e in enumerate(self.waiting(), 1):
            if e.caller is caller:
                return i
        return None

    def is_free(self, dispatcher: User) -> bool:
        """A position is free when nothing holds it and no queued call is on its way to it."""
        return (
            dispatcher in self.positions
            and dispatcher not in self._busy
            and self.manager.owner_of(dispatcher) is None
        )

    # ---- acting

    def enqueue(self, caller: User, priority: int) -> QueueEntry:
        loop = asyncio.get_running_loop()
        entry = QueueEntry(
            (-priority, next(self._seq)), caller, priority, loop.create_future(), loop.time()
        )
        heapq.heappush(self._heap, entry)
        self.dispatch()
        return entry

    def leave(self, entry: QueueEntry) -> None:
        if entry in self._heap:
            self._heap.remove(entry)
            heapq.heapify(self._heap)
        if not entry.assigned.done():
            entry.assigned.cancel()

    def take(self, dispatcher: User, caller: User | None = None) -> User:
        """Dispatcher ``dispatcher`` takes ``caller``'s queued call (or the head of the queue).

        Synchronous, so that of two dispatchers taking the same call in one instant exactly one
        wins; the other gets :class:`AlreadyTaken`. Returns the caller.
        """
        if dispatcher not in self.positions:
            raise FlowUsageError(f"{dispatcher.id!r} is not a position of queue {self.name!r}")
        if dispatcher in self._busy:
            raise FlowUsageError(f"{dispatcher.id!r} is already taking a call")
        candidates = self.waiting()
        if caller is not None:
            taker = self._taken.get(caller)
            if taker is not None:
                raise AlreadyTaken(f"the call from {caller.id!r} was taken by {taker.id!r} first")
            match = [e for e in self._heap if e.caller is caller]
            if not match:
                raise FlowUsageError(f"{caller.id!r} is not waiting in queue {self.name!r}")
            if match[0].assigned.done():
                raise AlreadyTaken(f"the call from {caller.id!r} was taken by another dispatcher")
            candidates = match
        if not candidates:
            raise FlowUsageError(f"queue {self.name!r} is empty")
        entry = candidates[0]
        self._assign(entry, dispatcher)
        return entry.caller

    def done(self, dispatcher: User) -> None:
        """The position finished connecting a call (or gave up): it may be assigned again."""
        self._busy.discard(dispatcher)
        for caller in [c for c, d in self._taken.items() if d is dispatcher]:
            del self._taken[caller]
        self.dispatch()

    def dispatch(self) -> None:
        """Assign waiting calls to free positions (if ``auto_assign``)."""
        if not self.auto_assign:
            return
        for entry in self.waiting():
            free = [d for d in self.positions if self.is_free(d)]
            if not free:
                return
            self._assign(entry, free[0])

    def _assign(self, entry: QueueEntry, dispatcher: User) -> None:
        self._busy.add(dispatcher)
        self._taken[entry.caller] = dispatcher
        self._heap.remove(entry)
        heapq.heapify(self._heap)
        entry.assigned.set_result(dispatcher)


@flow(priority=Priority.ROUTINE, permission="call")
async def queued_call(
    s: Session, caller: User, queue: DispatcherQueue, priority: int | None = None
) -> User | None:
    """Answer ``caller``, hold them in ``queue`` until a position takes the call, connect.

    Returns the dispatcher who took the call, or None if the overflow action ended it.
    """
    await s.claim(caller)
    await s.answer(caller)
    entry = queue.enqueue(caller, s.priority if priority is None else priority)
    s.note(f"{caller.id} waits in queue {queue.name} at position {queue.position_of(caller)}")
    music = await s.play(caller, Prompt(queue.music) if queue.music else Tone("hold"), loop=True)
    try:
        dispatcher = await s.wait(entry.assigned, timeout=queue.timeout)
    finally:
        queue.leave(entry)
    await s.stop(music)
    if dispatcher is None:
        await _overflow(s, caller, queue)
        return None
    try:
        await s.claim(dispatcher, wait=5.0)
        await s.dial(dispatcher, timeout=20.0)
        await s.connect(caller, dispatcher)
        s.settle(P2P(caller, dispatcher))
        s.note(f"{dispatcher.id} took {caller.id}'s call")
    finally:
        queue.done(dispatcher)
    return dispatcher


async def _overflow(s: Session, caller: User, queue: DispatcherQueue) -> None:
    s.note(f"{caller.id} waited {queue.timeout:g} s: overflow {queue.overflow.value}")
    if queue.overflow is Overflow.TRANSFER and queue.overflow_to is not None:
        target = queue.overflow_to
        try:
            await s.claim(target, wait=5.0)
            await s.dial(target, caller=caller)
        except (CallFailed, BatonError):
            await s.play(caller, Tone("busy", 3.0))
            await s.hangup(caller, Cause.BUSY)
            return
        await s.connect(caller, target)
        s.settle(P2P(caller, target))
        return
    if queue.overflow is Overflow.MESSAGE:
        await s.play(caller, Tone("confirm"))
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
    await s.play(caller, Tone("busy", 3.0))
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
