"""The switch port: what the core needs from a switch, and the words it speaks (docs/design.md
§Layers).

The core owns this module: it states the commands, the events and the vocabulary (:class:`Cause`,
:class:`Tone`, :class:`Prompt`, :class:`MeetingMode`) in its own terms, and the adapters in
:mod:`baton.switch` import it to implement them — never the other way round. It imports nothing
from the rest of the core, so every core module (and every adapter) may import it.

A switch terminates every leg (a back-to-back user agent) and owns every leg's media, so the core
can move users between calls by changing the media graph alone. Two adapters implement this port:
``sim`` (virtual phones in memory, virtual time) and ``sip`` (Baton's own SIP registrar, B2BUA and
RTP media engine).

Theory of operation
-------------------
* Commands are coroutines. A command returns once the switch has *accepted* it (a leg id for an
  origination, a playback id for a play). Progress that comes later — a leg rings, is answered,
  fails, hangs up; a playback or a recording finishes; a digit arrives — is delivered as a
  :data:`SwitchEvent` to the one listener the core installs with :meth:`Switch.set_listener`.
* The listener is called synchronously from the switch's own context and must not block. The core
  updates its ledger inside that call, so no event can be lost between "the switch said it" and
  "the core knows it".
* Identifiers are opaque strings: the core chooses the ids of outbound legs and meetings; the
  switch chooses those of inbound legs, playbacks and recordings. Users are named by their stable id; the switch maps an id to its addresses
  (registered SIP contacts, a virtual phone).
* A command on an unknown or ended leg raises :class:`~baton.core.port.LegGone` (a
  :class:`~baton.core.port.SwitchError`) — never silently succeeds — except
  :meth:`Switch.hangup` and :meth:`Switch.clear`, which are idempotent.
* Every command must honour cancellation: a cancelled command leaves the switch in a state that
  :meth:`Switch.clear` can return to connected-idle.
* Events about a leg, a playback or a recording are delivered only after the command that
  created it has returned (the core registers the id first).
* A leg is in at most one *room* — a bridge or a meeting. :meth:`Switch.bridge` and
  :meth:`Switch.join` take the leg out of the room it was in, in the same step, so that a user
  moved between rooms hears no gap.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = [
    "Cause",
    "DtmfReceived",
    "EndReason",
    "InboundCall",
    "LegAnswered",
    "LegEnded",
    "LegFailed",
    "LegGone",
    "LegRinging",
    "MeetingMode",
    "Member",
    "PlaybackFinished",
    "PreemptionCause",
    "Prompt",
    "RecordingFinished",
    "Switch",
    "SwitchError",
    "SwitchEvent",
    "Target",
    "Tone",
]


class SwitchError(Exception):
    """The switch refused or failed a command (unknown leg, media failure, transport error).

    The core turns it into :class:`baton.core.errors.SwitchFailed` for flows.
    """

    code = "switch-error"


class LegGone(SwitchError):
    """The command named a leg the switch no longer has: it ended there (a hang-up, a dead
    phone) and its end event may still be on its way to the core. The core waits for that
    event, so a flow learns that the user hung up rather than of a switch failure."""

    code = "leg-gone"

    def __init__(self, leg: str, detail: str) -> None:
        super().__init__(detail)
        self.leg = leg


class Cause(enum.Enum):
    """Why a leg failed or ended. Values are stable and appear in call records and on the API.

    The SIP adapter maps them to response codes and ``Reason`` headers (RFC 3326, RFC 4411 for
    ``PREEMPTED``).
    """

    NORMAL = "normal"  # a party hung up
    BUSY = "busy"  # 486 / 600
    NO_ANSWER = "no_answer"  # ring timeout, 408/480
    REJECTED = "rejected"  # 603 Decline, 403
    INCOMPATIBLE = "incompatible"  # 488 / 606: the phone cannot take the call's media
    UNREACHABLE = "unreachable"  # not registered, 404, transport failure
    CANCELLED = "cancelled"  # the caller gave up before an answer
    PREEMPTED = "preempted"  # ended to make room for a higher-priority flow (RFC 4411)
    COLLECTED = "collected"  # no owner and no call: hung up by the leak collector
    MEDIA_TIMEOUT = "media_timeout"  # no RTP for too long: the phone is dead
    FAILURE = "failure"  # anything else


class PreemptionCause(enum.Enum):
    """Which kind of preemption ended a leg. The values are the preemption cause codes of
    RFC 4411; Baton itself only ever preempts as :attr:`UA` (a user agent made room for a
    higher-priority call)."""

    UA = 1  # "UA Preemption": ended to make room for a higher-priority call
    RESERVED_RESOURCES = 2  # "Reserved Resources Preempted"
    GENERIC = 3  # "Generic Preemption"
    NON_IP = 4  # "Non-IP Preemption"


@dataclass(frozen=True, slots=True)
class EndReason:
    """Why the core ends a leg, beyond its :class:`Cause`, as a value — never wire syntax.

    ``text`` names who or what ended the leg (a flow, "force release"), if known;
    ``preemption`` says which preemption ended it, for a leg ended with ``Cause.PREEMPTED``. Each adapter renders it
    for its own wire: the ``sip`` adapter writes the RFC 4411 ``Reason`` header of a preemption
    (and nothing for other causes); the ``sim`` keeps the value as given.
    """

    text: str | None = None
    preemption: PreemptionCause | None = None

    @classmethod
    def preempted(cls, by: str | None, text: str | None = None) -> EndReason:
        """A leg ended to make room for a higher-priority call: a UA preemption whose text
        names the flow ``by`` that took the user, or ``text`` if given."""
        return cls(text or by, PreemptionCause.UA)


class MeetingMode(enum.Enum):
    """How a member takes part in a meeting."""

    SPEAK = "speak"  # hears the others, is heard by all
    LISTEN = "listen"  # hears the others, is heard by none (monitor)
    WHISPER = "whisper"  # hears the others, is heard only by ``Member.whisper_to``
    MUTED = "muted"  # hears the others, is heard by none (a muted speaker)


@dataclass(frozen=True, slots=True)
class Member:
    """A member's place in a meeting: the leg and its mode."""

    leg: str
    mode: MeetingMode = MeetingMode.SPEAK
    whisper_to: str | None = None  # the leg that hears a WHISPER member

    def __post_init__(self) -> None:
        if (self.mode is MeetingMode.WHISPER) != (self.whisper_to is not None):
            raise ValueError("whisper_to is required for WHISPER and only for WHISPER")


@dataclass(frozen=True, slots=True)
class Tone:
    """A generated tone by name: ``ringback``, ``busy``, ``call_waiting``, ``preemption``,
    ``hold``, ``confirm``, ``talk_permit``, ``floor_denied``, ``floor_idle``, ``floor_revoked``,
    or ``dtmf:<digit>``. ``duration`` of ``None`` plays the tone's natural cadence once."""

    name: str
    duration: float | None = None


@dataclass(frozen=True, slots=True)
class Prompt:
    """A recorded prompt: a WAV file path (any common rate; the switch resamples)."""

    path: str


@dataclass(frozen=True, slots=True)
class Target:
    """What a media command acts on: exactly one of a leg or a meeting."""

    leg: str | None = None
    meeting: str | None = None

    def __post_init__(self) -> None:
        if (self.leg is None) == (self.meeting is None):
            raise ValueError("a Target names exactly one of leg or meeting")


# ---- events: from the switch to the core -------------------------------------------------


@dataclass(frozen=True, slots=True)
class InboundCall:
    """A user called in. ``user`` is the caller's id if the switch authenticated one."""

    leg: str
    user: str | None
    to: str  # the dialled number or address
    priority: int | None = None  # a precedence the call asked for (RFC 4412), if any
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LegRinging:
    leg: str


@dataclass(frozen=True, slots=True)
class LegAnswered:
    leg: str


@dataclass(frozen=True, slots=True)
class LegFailed:
    """An outbound leg ended before it was answered."""

    leg: str
    cause: Cause


@dataclass(frozen=True, slots=True)
class LegEnded:
    """A connected (or inbound, unanswered) leg ended; ``by_user`` when the phone hung up."""

    leg: str
    cause: Cause
    by_user: bool


@dataclass(frozen=True, slots=True)
class DtmfReceived:
    leg: str
    digit: str


@dataclass(frozen=True, slots=True)
class PlaybackFinished:
    playback: str
    completed: bool  # False when stopped or cut short by a clear


@dataclass(frozen=True, slots=True)
class RecordingFinished:
    recording: str
    path: str
    seconds: float


SwitchEvent = (
    InboundCall
    | LegRinging
    | LegAnswered
    | LegFailed
    | LegEnded
    | DtmfReceived
    | PlaybackFinished
    | RecordingFinished
)


class Switch(ABC):
    """The port. See the module docstring for the contract every adapter keeps."""

    @abstractmethod
    def set_listener(self, listener: Callable[[SwitchEvent], None]) -> None:
        """Install the one callback that receives every event, synchronously."""

    # ---- legs
    @abstractmethod
    async def originate(
        self, leg: str, user: str, *, caller: str | None = None, priority: int | None = None
    ) -> None:
        """Start calling ``user`` on a new leg whose id ``leg`` the core chose (so that no event
        can arrive for a leg the core does not know yet). Progress arrives as events.

        Raises :class:`SwitchError` for an unknown user or a leg id already in use. An
        unreachable user is reported by a :class:`LegFailed` event (``Cause.UNREACHABLE``), not
        an exception.
        """

    @abstractmethod
    async def answer(self, leg: str) -> None:
        """Answer an inbound leg."""

    @abstractmethod
    async def hangup(
        self, leg: str, cause: Cause = Cause.NORMAL, reason: EndReason | None = None
    ) -> None:
        """End a leg (cancel it if it is still ringing). Idempotent. ``reason`` says who or
        what ended it, structured; the adapter renders it for its wire (the ``sip`` adapter:
        an RFC 4411 ``Reason`` header when the cause is ``PREEMPTED``)."""

    # ---- media graph
    @abstractmethod
    async def bridge(self, leg_a: str, leg_b: str) -> None:
        """Connect two legs so that each hears the other; each leaves the bridge or meeting it
        was in (its old bridge partner is left idle)."""

    @abstractmethod
    async def create_meeting(self, meeting: str) -> None:
        """Create an empty meeting with the caller's id."""

    @abstractmethod
    async def join(self, meeting: str, member: Member) -> None:
        """Add a leg to a meeting (leaving the bridge or other meeting it was in), or change its
        mode if it is already a member."""

    @abstractmethod
    async def leave(self, meeting: str, leg: str) -> None:
        """Remove a leg from a meeting (idempotent)."""

    @abstractmethod
    async def destroy_meeting(self, meeting: str) -> None:
        """Remove every member and the meeting (idempotent)."""

    @abstractmethod
    async def clear(self, leg: str) -> None:
        """Return a leg to connected-idle: no playback, no recording, in no bridge or meeting,
        not muted. The leg stays up. Idempotent."""

    # ---- media operations
    @abstractmethod
    async def play(self, target: Target, media: Tone | Prompt, *, loop: bool = False) -> str:
        """Start playing to a leg or a meeting; return the playback id. A
        :class:`PlaybackFinished` event follows when it ends."""

    @abstractmethod
    async def stop_play(self, playback: str) -> None:
        """Stop a playback (idempotent)."""

    @abstractmethod
    async def record(self, target: Target, path: str) -> str:
        """Start recording a leg or a meeting to a WAV file; return the recording id."""

    @abstractmethod
    async def stop_record(self, recording: str) -> None:
        """Stop a recording (idempotent). A :class:`RecordingFinished` event follows."""

    async def start(self) -> None:  # noqa: B027 - optional hook with a default
        """Acquire the switch's resources (bind sockets, start the media clock). Idempotent.
        Raises :class:`SwitchError` if it cannot (an address in use). Optional: a switch that
        needs nothing does nothing."""

    async def close(self) -> None:  # noqa: B027 - optional hook with a default
        """Release the switch's resources."""
