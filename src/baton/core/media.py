"""Media bookkeeping: what the core believes each leg hears (docs/design.md, invariants 3 and 11).

Theory of operation
-------------------
As the manager issues each media command it records, here, which user is bridged to whom, who
is in which meeting with which mode, and what is being played or recorded — and publishes a
:class:`~baton.core.events.MediaChanged` event for it. A user some media command touched is
*dirty*; clearing it (or its leg ending) drops every relation it had
(:meth:`MediaBook.forget`). The records answer the flows' questions (``partner_of``,
``meeting_of``), let the watch find dead air, and let the invariant checker compare the core's
belief with the switch's truth. Nothing here talks to the switch.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from baton.core.events import EventBus, MediaChanged
from baton.core.model import Meeting, MemberState, Playback, Recording, User
from baton.core.ops import MANAGER
from baton.core.port import MeetingMode

if TYPE_CHECKING:
    from baton.core.ledger import Ledger, UserRecord
    from baton.core.owner import Owner

__all__ = ["MediaBook"]


class MediaBook:
    """The media records of one manager: live meetings, playbacks and recordings by id, and the
    per-user relations kept on the ledger's records."""

    __slots__ = ("_events", "_ledger", "meetings", "playbacks", "recordings")

    def __init__(self, ledger: Ledger, events: EventBus) -> None:
        self._ledger = ledger
        self._events = events
        self.meetings: dict[str, Meeting] = {}
        self.playbacks: dict[str, Playback] = {}
        self.recordings: dict[str, Recording] = {}

    def publish(
        self,
        command: str,
        owner: Owner,
        users: Iterable[User] = (),
        meeting: Meeting | None = None,
        detail: str | None = None,
    ) -> None:
        """Publish one media command (or its end) as a ``media`` event."""
        self._events.publish(
            MediaChanged(
                command=command,
                users=tuple(u.id for u in users),
                meeting=meeting.id if meeting is not None else None,
                detail=detail,
                by=owner.name,
            )
        )

    def unbridge(self, rec: UserRecord) -> None:
        peer = rec.bridge
        if peer is not None:
            rec.bridge = None
            peer_rec = self._ledger.records[peer.id]
            if peer_rec.bridge is rec.user:
                peer_rec.bridge = None

    def unmeet(self, rec: UserRecord) -> None:
        m = rec.meeting
        if m is not None:
            rec.meeting = None
            m.members.pop(rec.user, None)
            for other, state in list(m.members.items()):
                if state.whisper_to is rec.user:  # whispering to nobody is silence
                    m.members[other] = MemberState(MeetingMode.MUTED)

    def forget(self, rec: UserRecord) -> None:
        """The leg is gone or cleared: drop every media relation it had."""
        self.unbridge(rec)
        self.unmeet(rec)
        for pb in list(rec.playbacks):
            self.playback_done(pb, completed=False)
        for r in list(rec.recordings):
            self.recording_done(r, r.seconds)
        rec.digits.clear()

    def playback_done(self, pb: Playback, completed: bool) -> None:
        """A playback ended (finished, stopped, or cut by a clear): resolve it once."""
        self.playbacks.pop(pb.id, None)
        if pb.done.done():
            return
        target = pb.target
        if isinstance(target, User):
            self._ledger.records[target.id].playbacks.pop(pb, None)
        pb.completed = completed
        pb.done.set_result(completed)
        self.publish(
            "play.done",
            MANAGER,
            (target,) if isinstance(target, User) else (),
            target if isinstance(target, Meeting) else None,
            "completed" if completed else "stopped",
        )

    def recording_done(self, recording: Recording, seconds: float) -> None:
        """A recording ended (stopped, or its call or meeting ended): resolve it once."""
        self.recordings.pop(recording.id, None)
        if isinstance(recording.target, User):
            self._ledger.records[recording.target.id].recordings.pop(recording, None)
        if not recording.done.done():
            recording.seconds = seconds
            recording.done.set_result(seconds)

    def drop_meeting(self, meeting: Meeting) -> None:
        """Forget a meeting (ended, or never created): its members are in no meeting, its
        playbacks and recordings end, its holder no longer answers for it."""
        meeting.ended = True
        self.meetings.pop(meeting.id, None)
        for user in list(meeting.members):
            rec = self._ledger.records[user.id]
            if rec.meeting is meeting:
                rec.meeting = None
        meeting.members.clear()
        for pb in [pb for pb in self.playbacks.values() if pb.target is meeting]:
            self.playback_done(pb, completed=False)
        for r in [r for r in self.recordings.values() if r.target is meeting]:
            self.recording_done(r, r.seconds)
        if meeting.holder is not None:
            meeting.holder.meeting_dropped(meeting)
