"""Owners — the flows and CallInfos that hold users — and the hooks between them and the manager.

An owner holds users (each under the epoch it got it with) and answers for the lifetime of some
meetings. Two kinds exist: a :class:`~baton.core.flow.Flow` (a procedure, its own task) and a
:class:`~baton.core.callinfo.CallInfo` (a passive relationship with a policy).

The owner-hook protocol
-----------------------
The manager and its parts (the ledger, the operations, the claim protocol, the switch-event
translation) never reach into an owner's private state: they tell it what happened, and ask it
a question or two, through :class:`OwnerHooks` — the one seam, with public names, like trio's
``Instrument``. :class:`Owner` implements every hook with the neutral answer; a Flow and the
CallInfos override the ones they care about. The other way, an owner calls only the manager's
public methods (``operations.run``, ``operations.interrupt``, ``release``, ``transfer``,
``hand_meeting``, ``drop_meeting``, ``claims.forget_claimer``, ``ledger.fence``). docs/core.md
draws the map.

When each hook is called:

* :meth:`~OwnerHooks.before_op` — an operation of the owner (or a ``claim``, a ``quiet``) is
  about to be fenced; a flow raises a notice still pending for it here.
* :meth:`~OwnerHooks.op_started` / :meth:`~OwnerHooks.op_ended` — an operation is registered on
  its users / has unwound.
* :meth:`~OwnerHooks.notice_raised` — an operation is raising the notice about a user right now;
  any copy of it waiting to be raised later must go.
* :meth:`~OwnerHooks.user_released` — the ledger has just taken a user from the owner (any
  hand-over: claimed away, released, settled, hung up).
* :meth:`~OwnerHooks.user_lost` — the owner lost a user against its will (step 6 of a preemption,
  or the user hung up); ``told`` says whether an operation of the owner already raised it.
* :meth:`~OwnerHooks.lost_how` — how the owner lost a user, for a later ``NotOwner``'s message.
* :meth:`~OwnerHooks.digit_pressed` — a DTMF digit from a user the owner holds; True if the owner
  took it (otherwise it is buffered for ``collect``).
* :meth:`~OwnerHooks.meeting_held` / :meth:`~OwnerHooks.meeting_dropped` — the owner now answers
  for a meeting's lifetime / no longer does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, assert_never

from baton.core.events import NoticeKind

if TYPE_CHECKING:
    from baton.core.model import Meeting, User
    from baton.core.ops import Op

__all__ = ["Notice", "Owner", "OwnerHooks"]


class Notice:
    """Why an owner lost a user: ``kind`` says preempted, hung up, or released (another task of
    the same owner gave the user away while this one waited on it)."""

    __slots__ = ("also", "by", "cause", "kind", "priority", "reason", "user")

    def __init__(
        self,
        kind: NoticeKind,
        user: User,
        *,
        by: str | None = None,
        priority: int = 0,
        reason: str | None = None,
        cause: object = None,
    ) -> None:
        self.kind = kind
        self.user = user
        self.by = by
        self.priority = priority
        self.reason = reason
        self.cause = cause
        self.also: list[User] = []  # more users lost in the same instant, told together

    def describe(self) -> str:
        kind = self.kind
        if kind is NoticeKind.PREEMPTED:
            return f"preempted by {self.by}"
        if kind is NoticeKind.HUNG_UP:
            return "hung up"
        if kind is NoticeKind.RELEASED:
            return f"released ({self.reason})"
        assert_never(kind)


class OwnerHooks(Protocol):
    """What the manager tells an owner and asks it (the module's theory says when)."""

    def before_op(self) -> None:
        """An operation of this owner is about to be fenced."""

    def op_started(self, op: Op) -> None:
        """``op`` is registered on its users."""

    def op_ended(self, op: Op) -> None:
        """``op`` has unwound (returned, raised or was interrupted)."""

    def notice_raised(self, user: User) -> None:
        """A notice about ``user`` is being raised now: drop any copy waiting to be raised."""

    def user_released(self, user: User, reason: str) -> None:
        """The ledger has just taken ``user`` from this owner (``reason``: the hand-over's)."""

    def user_lost(self, user: User, notice: Notice, told: bool) -> None:
        """This owner lost ``user`` against its will (already out of ``users``)."""

    def lost_how(self, user: User) -> str | None:
        """How this owner lost ``user``, if it did (for a :class:`NotOwner` message)."""

    def digit_pressed(self, user: User, digit: str) -> bool:
        """A DTMF digit from a user this owner holds; True if the owner consumed it."""

    def meeting_held(self, meeting: Meeting) -> None:
        """This owner now answers for ``meeting``'s lifetime."""

    def meeting_dropped(self, meeting: Meeting) -> None:
        """This owner no longer answers for ``meeting`` (ended, or handed on)."""


class Owner:
    """Something that can hold users: a Flow or a CallInfo.

    ``users`` maps each user the owner holds to the epoch under which it got it; ``meetings``
    are the meetings whose lifetime it answers for. It implements :class:`OwnerHooks` with the
    neutral answers; subclasses override the hooks they care about (:meth:`user_lost` above all,
    called at step 6 of a preemption and after a hang-up).
    """

    __slots__ = ("meetings", "name", "priority", "users")

    kind = "owner"

    def __init__(self, name: str, priority: int) -> None:
        self.name = name
        self.priority = int(priority)
        self.users: dict[User, int] = {}
        self.meetings: dict[Meeting, None] = {}  # an ordered set (replayable runs)

    @property
    def alive(self) -> bool:
        return True

    def before_op(self) -> None:
        """Nothing to raise."""

    def op_started(self, op: Op) -> None:
        """Nothing to track."""

    def op_ended(self, op: Op) -> None:
        """Nothing to track."""

    def notice_raised(self, user: User) -> None:
        """Nothing pending."""

    def user_released(self, user: User, reason: str) -> None:
        """What the owner kept about ``user`` — handlers, digit callbacks — must not survive
        the hand-over (invariant 12); the base keeps nothing."""

    def user_lost(self, user: User, notice: Notice, told: bool) -> None:
        """The owner has lost ``user`` (already out of ``users``). ``told`` is True when an
        in-flight operation of this owner on that user already raised the notice."""

    def lost_how(self, user: User) -> str | None:
        """No record of how."""
        return None

    def digit_pressed(self, user: User, digit: str) -> bool:
        """Not consumed: the digit is buffered for ``collect``."""
        return False

    def meeting_held(self, meeting: Meeting) -> None:
        self.meetings[meeting] = None

    def meeting_dropped(self, meeting: Meeting) -> None:
        self.meetings.pop(meeting, None)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


if TYPE_CHECKING:
    # Owner is the protocol's reference implementation: mypy checks that it keeps up.
    _owner_keeps_the_protocol: type[OwnerHooks] = Owner
