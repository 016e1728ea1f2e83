"""The exception vocabulary, named by cause.

Every error a flow author meets says *what* happened, *to which user*, *by which flow*, and what
to do about it. Each class has a stable ``code`` that the API and the journal use.

Who raised it, and why:

* The flow asked for something it may not do: :class:`NotOwner`, :class:`ClaimDenied`,
  :class:`UnknownUser`, :class:`UnknownMeeting`, :class:`FlowUsageError`.
* The flow was given arguments it cannot work with: :class:`InvalidArgument`.
* Another flow won: :class:`Preempted` (a user was taken), :class:`Superseded` (a newer
  preemption of the same user overtook this flow's claim).
* The outside world: :class:`UserHungUp`, :class:`CallFailed` (:class:`NoAnswer`, :class:`Busy`,
  :class:`Rejected`, :class:`Unreachable`), :class:`SwitchFailed`.
* Lifecycle: :class:`FlowCancelled` (the flow was cancelled; raised by ``Flow.result()``).

:class:`Preempted` and :class:`UserHungUp` are *notices* (:class:`FlowInterrupted`): they are
raised into the flow at an await point and the flow may catch them and go on with its other users.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from baton.core.port import Cause
from baton.core.priority import priority_name

if TYPE_CHECKING:
    from baton.core.model import User

__all__ = [
    "BatonError",
    "Busy",
    "CallFailed",
    "ClaimDenied",
    "FlowCancelled",
    "FlowInterrupted",
    "FlowUsageError",
    "InvalidArgument",
    "NoAnswer",
    "NotOwner",
    "Preempted",
    "Rejected",
    "Superseded",
    "SwitchFailed",
    "UnknownMeeting",
    "UnknownUser",
    "Unreachable",
    "UserHungUp",
]


class BatonError(Exception):
    """Base of every Baton error. ``code`` is a stable machine id (``"not-owner"``)."""

    code = "baton-error"


class FlowUsageError(BatonError):
    """The flow used the API wrongly (e.g. settled a user it does not own, waited on a
    meeting it never created). A programming error: fix the flow."""

    code = "flow-usage"


class FlowEndedError(FlowUsageError):
    """A command reached a flow that has ended or is finishing, or was still waiting unread
    when its flow ended: nobody will answer it. Nothing was done for it. What to do: look at
    the flow's outcome (its ``FlowEnded`` event); start a new flow if the work is still to be
    done (the API answers 409 ``flow-ended``)."""

    code = "flow-ended"


class InvalidArgument(FlowUsageError):
    """A flow was started, or sent a command, with arguments it cannot work with whatever the
    state of its users — a broadcast with neither a message nor a speaker, an emergency with no
    position to ring — and did nothing. ``argument`` names the parameter to blame, if one is.
    What to do: fix the arguments (the API answers 422 ``invalid-argument``, like any bad
    body). A request that is fine but does not fit the users' state now is a
    :class:`FlowUsageError` (409)."""

    code = "invalid-argument"

    def __init__(self, message: str, argument: str | None = None) -> None:
        super().__init__(message)
        self.argument = argument


class UnknownUser(BatonError, LookupError):
    """No user with this id (or a ``User`` object the manager never registered).
    ``user_id`` names it."""

    code = "unknown-user"

    def __init__(self, user_id: str) -> None:
        super().__init__(f"no user with id {user_id!r}; users are added with UserManager.add_user")
        self.user_id = user_id


class UnknownMeeting(BatonError, LookupError):
    """No live meeting with this id (it never existed, or has ended). ``meeting_id`` names it."""

    code = "unknown-meeting"

    def __init__(self, meeting_id: str) -> None:
        super().__init__(f"no live meeting with id {meeting_id!r}")
        self.meeting_id = meeting_id


class NotOwner(BatonError):
    """A call-control operation named a user the flow does not own right now; nothing was sent.

    ``holder`` names the current owner (or ``None``), ``lost`` says how this flow lost the user
    if it ever had it. What to do: claim the user first (``await s.claim(user)``); if you held it
    and lost it, handle ``Preempted`` / ``UserHungUp`` (or register ``s.on_preempted``) and stop
    touching that user.
    """

    code = "not-owner"

    def __init__(self, user: User, flow: str, holder: str | None, lost: str | None = None) -> None:
        how = f" (it was {lost})" if lost else ""
        held = f"owned by {holder}" if holder else "owned by nobody"
        super().__init__(
            f"{flow} does not own user {user.id!r}{how}; the user is {held}. "
            "Claim it before operating on it, and stop using a user once you have lost it."
        )
        self.user = user
        self.flow = flow
        self.holder = holder
        self.lost = lost


class ClaimDenied(BatonError):
    """The user is held at an equal or higher priority and the claim chose not to wait (or its
    wait ran out). What to do: retry later, claim with ``wait=seconds``, or start the flow at a
    higher priority if the requester may."""

    code = "claim-denied"

    def __init__(
        self,
        user: User,
        claimer: str,
        holder: str,
        holder_priority: int,
        priority: int,
        waited: float | None,
    ) -> None:
        why = f"waited {waited:g} s" if waited else "did not wait"
        super().__init__(
            f"{claimer} (priority {priority_name(priority)}) cannot take user {user.id!r} from "
            f"{holder} (priority {priority_name(holder_priority)}): preemption needs a strictly "
            f"higher priority; the claim {why}."
        )
        self.user = user
        self.claimer = claimer
        self.holder = holder
        self.holder_priority = holder_priority
        self.priority = priority


class Superseded(BatonError):
    """This flow's preemption of a user was overtaken by a newer one of equal or higher priority
    before it completed. The user was never yours; do not retry blindly — the newer flow has a
    better claim."""

    code = "superseded"

    def __init__(self, user: User, claimer: str, by: str) -> None:
        super().__init__(
            f"{claimer}'s claim on user {user.id!r} was superseded by {by}, a newer preemption "
            "at the same or a higher priority; the user was never handed to " + claimer
        )
        self.user = user
        self.claimer = claimer
        self.by = by


class FlowInterrupted(BatonError):
    """A notice raised into a flow at an await point: it lost ``user``. The flow may catch it
    and go on with its other users; it must not touch ``user`` again without claiming it."""

    code = "flow-interrupted"

    def __init__(self, message: str, user: User, also: list[User] | None = None) -> None:
        super().__init__(message)
        self.user = user
        #: every user lost in this notice, ``user`` first (a multi-user preemption is told once)
        self.users: tuple[User, ...] = (user, *(also or ()))


class Preempted(FlowInterrupted):
    """A higher-priority flow took ``user`` from this flow. The user's media was already cleared
    and the user is no longer yours: compensate only what you still own."""

    code = "preempted"

    def __init__(
        self,
        user: User,
        flow: str,
        by: str,
        priority: int,
        reason: str | None,
        also: list[User] | None = None,
    ) -> None:
        because = f": {reason}" if reason else ""
        lost = [user, *(also or ())]
        who = ", ".join(repr(u.id) for u in lost)
        noun = "users" if len(lost) > 1 else "user"
        super().__init__(
            f"{noun} {who} taken from {flow} by {by} at priority {priority_name(priority)}"
            f"{because}. No longer yours: carry on with your other users or end the flow.",
            user,
            also,
        )
        self.flow = flow
        self.by = by
        self.priority = priority
        self.reason = reason


class UserHungUp(FlowInterrupted):
    """``user`` hung up (or their phone died). The user is idle and no longer yours."""

    code = "user-hung-up"

    def __init__(self, user: User, flow: str, cause: Cause, also: list[User] | None = None) -> None:
        who = ", ".join(repr(u.id) for u in (user, *(also or ())))
        noun = "users" if also else "user"
        super().__init__(
            f"{noun} {who} hung up ({cause.value}) while owned by {flow}; the user is idle "
            "and released.",
            user,
            also,
        )
        self.flow = flow
        self.cause = cause


class CallFailed(BatonError):
    """An outbound call to ``user`` did not connect. Subclasses name the cause."""

    code = "call-failed"
    cause = Cause.FAILURE

    def __init__(self, user: User, cause: Cause | None = None, detail: str = "") -> None:
        if cause is not None:
            self.cause = cause
        extra = f" ({detail})" if detail else ""
        super().__init__(f"call to user {user.id!r} failed: {self.cause.value}{extra}")
        self.user = user

    @staticmethod
    def for_cause(user: User, cause: Cause, detail: str = "") -> CallFailed:
        """The :class:`CallFailed` subclass for a cause (``Busy`` for ``Cause.BUSY``…)."""
        cls = _CALL_FAILURES.get(cause, CallFailed)
        return cls(user, cause, detail)


class NoAnswer(CallFailed):
    """Nobody answered: the dial's ``timeout`` ran out, or the phone gave up ringing (SIP 408,
    480)."""

    code = "no-answer"
    cause = Cause.NO_ANSWER


class Busy(CallFailed):
    """The phone answered busy (SIP 486, 600)."""

    code = "busy"
    cause = Cause.BUSY


class Rejected(CallFailed):
    """The user declined the call (SIP 603), or it was refused for them (403)."""

    code = "rejected"
    cause = Cause.REJECTED


class Unreachable(CallFailed):
    """The user could not be reached at all: no phone registered, no route, no response (SIP
    404, 410, 484, 503, 604)."""

    code = "unreachable"
    cause = Cause.UNREACHABLE


class Incompatible(CallFailed):
    """The phone answered that it cannot take the call's media (SIP 488 or 606): no codec in
    common, or encryption one side requires and the other will not do."""

    code = "incompatible"
    cause = Cause.INCOMPATIBLE


_CALL_FAILURES: dict[Cause, type[CallFailed]] = {
    Cause.NO_ANSWER: NoAnswer,
    Cause.BUSY: Busy,
    Cause.REJECTED: Rejected,
    Cause.UNREACHABLE: Unreachable,
    Cause.INCOMPATIBLE: Incompatible,
}


class SwitchFailed(BatonError):
    """The switch refused or failed a command. The user is still yours; its media state is
    whatever the switch left, so ``await s.clear(user)`` before relying on it."""

    code = "switch-failed"

    def __init__(self, command: str, detail: str) -> None:
        super().__init__(f"switch command {command} failed: {detail}")
        self.command = command
        self.detail = detail


class FlowCancelled(BatonError):
    """Raised by ``Flow.result()`` for a flow that was cancelled (not by the flow itself)."""

    code = "flow-cancelled"

    def __init__(self, flow: str, reason: str | None) -> None:
        super().__init__(f"{flow} was cancelled" + (f": {reason}" if reason else ""))
        self.flow = flow
        self.reason = reason
