"""The domain objects flows pass around: :class:`User`, :class:`Leg`, :class:`Meeting`,
:class:`Playback`, :class:`Recording`.

A user is identified by the object (its stable ``id``), never by a phone number (docs/design.md, Vocabulary). The
mutable call state of a user — its owner, its leg, its media — lives in the UserManager's ledger,
not on the object, so that only the manager can change it.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

from baton.core.port import Cause, MeetingMode, Prompt, Tone

if TYPE_CHECKING:
    from baton.core.owner import Owner

__all__ = [
    "Direction",
    "Leg",
    "LegState",
    "Meeting",
    "MemberState",
    "Playback",
    "Recording",
    "User",
]


class User:
    """A party: a phone, a dispatcher position, a PoC terminal.

    ``keep`` marks an always-on line (a dispatcher's position) that the leak collector never
    hangs up; ``grace`` overrides the manager's collection grace period for this user.
    """

    __slots__ = ("grace", "id", "keep", "name", "numbers")

    def __init__(
        self,
        id: str,
        *,
        name: str | None = None,
        numbers: tuple[str, ...] = (),
        keep: bool = False,
        grace: float | None = None,
    ) -> None:
        if not id or not isinstance(id, str):
            raise ValueError(f"a user id must be a non-empty string, not {id!r}")
        self.id = id
        self.name = name or id
        self.numbers = tuple(numbers)
        self.keep = keep
        self.grace = grace

    def __repr__(self) -> str:
        return f"User({self.id!r})"


class Direction(enum.Enum):
    """Who placed the call a leg carries: the user (inbound) or Baton (outbound)."""

    INBOUND = "inbound"  # the user called in
    OUTBOUND = "outbound"  # Baton called the user


class LegState(enum.Enum):
    """Where a leg is in its life: dialling → ringing → connected → ended (a leg that fails
    goes from dialling or ringing straight to ended)."""

    DIALLING = "dialling"
    RINGING = "ringing"
    CONNECTED = "connected"
    ENDED = "ended"


class Leg:
    """One call connection between a user and the switch. A user has at most one live leg.

    The leg's fate (answered or failed) is a future any owner can await, which is how a ringing
    call survives a change of owner (docs/design.md, invariant 4).
    """

    __slots__ = (
        "_ended",
        "_outcome",
        "caller",
        "cause",
        "deadline",
        "direction",
        "id",
        "ring_timer",
        "state",
        "user",
    )

    def __init__(self, id: str, user: User, direction: Direction, state: LegState) -> None:
        self.id = id
        self.user = user
        self.direction = direction
        self.state = state
        self.cause: Cause | None = None
        self.deadline = 0.0  # when an unanswered outbound leg is given up (loop time)
        self.caller: User | None = None  # the calling party, for an outbound leg (pickup)
        self._outcome: asyncio.Future[None] | None = None
        self._ended: asyncio.Future[Cause] | None = None
        #: the ring deadline's timer, while the leg rings (the manager's makecall)
        self.ring_timer: asyncio.TimerHandle | None = None

    @property
    def live(self) -> bool:
        """Not ended (dialling, ringing or connected)."""
        return self.state is not LegState.ENDED

    @property
    def connected(self) -> bool:
        """Answered and not ended."""
        return self.state is LegState.CONNECTED

    def outcome(self) -> asyncio.Future[None]:
        """A future resolved when the leg connects, or failed with the cause when it ends
        unanswered. (Created on first use: most legs are never awaited twice.)"""
        if self._outcome is None or self._outcome.cancelled():
            # (a waiter that was interrupted cancels the future it awaited: start afresh)
            self._outcome = asyncio.get_running_loop().create_future()
            if self.state is LegState.CONNECTED or self.state is LegState.ENDED:
                self._outcome.set_result(None)
        return self._outcome

    def ended(self) -> asyncio.Future[Cause]:
        """A future resolved with the cause when the leg ends."""
        if self._ended is None or self._ended.cancelled():
            self._ended = asyncio.get_running_loop().create_future()
            if self.state is LegState.ENDED:
                self._ended.set_result(self.cause or Cause.NORMAL)
        return self._ended

    def resolve(self) -> None:
        """The manager changed the leg's state: stop the ring deadline once the leg is answered
        or ended, and wake whoever awaits :meth:`outcome` or :meth:`ended`."""
        settled = self.state is not LegState.DIALLING and self.state is not LegState.RINGING
        if settled and self.ring_timer is not None:
            self.ring_timer.cancel()
            self.ring_timer = None
        if self._outcome is not None and not self._outcome.done():
            self._outcome.set_result(None)
        if self.state is LegState.ENDED and self._ended is not None and not self._ended.done():
            self._ended.set_result(self.cause or Cause.NORMAL)

    def __repr__(self) -> str:
        return f"Leg({self.id!r}, {self.user.id!r}, {self.direction.value}, {self.state.value})"


@dataclass(slots=True)
class MemberState:
    mode: MeetingMode
    whisper_to: User | None = None


class Meeting:
    """A mixing room on the switch (the *meet* of docs/design.md's vocabulary). ``holder`` is the flow or MeetingCall
    that answers for its lifetime; members are users with a mode each."""

    __slots__ = ("ended", "holder", "id", "members", "permanent")

    def __init__(self, id: str, holder: Owner | None, *, permanent: bool = False) -> None:
        self.id = id
        self.holder = holder
        self.members: dict[User, MemberState] = {}
        self.ended = False
        self.permanent = permanent

    def __repr__(self) -> str:
        return f"Meeting({self.id!r}, members={[u.id for u in self.members]})"


class Playback:
    """A prompt or tone being played to a user or a meeting."""

    __slots__ = ("completed", "done", "id", "loop", "media", "target")

    def __init__(self, id: str, target: User | Meeting, media: Tone | Prompt, loop: bool) -> None:
        self.id = id
        self.target = target
        self.media = media
        self.loop = loop
        self.done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.completed = False


class Recording:
    """A recording of a user or a meeting to a WAV file."""

    __slots__ = ("done", "id", "path", "seconds", "target")

    def __init__(self, id: str, target: User | Meeting, path: str) -> None:
        self.id = id
        self.target = target
        self.path = path
        self.seconds = 0.0
        self.done: asyncio.Future[float] = asyncio.get_running_loop().create_future()
