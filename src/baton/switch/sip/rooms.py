"""The media-graph side of the ``sip`` switch: which room each leg's audio is in.

A flow moves users between calls by changing the media graph alone: a leg is bridged to one
other leg, or a member of one meeting, or in no room at all (it hears nothing, its audio goes
nowhere). Phones never re-negotiate for that; nothing here sends SIP.

Rules
-----
* **One room per leg.** Bridging a leg takes it out of its meeting, joining a meeting takes it
  out of its bridge or other meeting, in one synchronous step: no mixer tick runs between
  leaving the old room and entering the new one.
* **A leg that ends leaves its room** (:meth:`Rooms.leave_room`, called when the leg is
  dropped); a member who whispered to it is then heard by nobody, like a muted member.
* The engine checks what it knows (an unknown meeting or leg raises
  :class:`~baton.switch.media.MediaError`); whether a leg is connected is the caller's check
  (:class:`~.switch.SipSwitch` does it before every command).

Theory of operation
-------------------
The :class:`~baton.switch.media.MediaEngine`'s mixer holds the graph; :class:`Rooms` keeps
only which meeting each leg joined (the mixer's bridges know their own ends) and is given the
engine when the switch starts.
"""

from __future__ import annotations

from baton.core.port import MeetingMode, Member, SwitchError
from baton.switch.media import MediaEngine, MediaError

__all__ = ["Rooms"]


class Rooms:
    """Bridges and meetings of the switch's legs, on the media engine."""

    def __init__(self) -> None:
        self.engine: MediaEngine | None = None  # set when the switch starts
        self.meeting_of: dict[str, str] = {}  # leg → the meeting it is in

    def _engine(self) -> MediaEngine:
        if self.engine is None:
            raise SwitchError("sip: the switch is not started")
        return self.engine

    def leave_meeting(self, leg: str) -> None:
        meeting = self.meeting_of.pop(leg, None)
        if meeting is None or self.engine is None:
            return
        try:
            members = self.engine.mixer.meeting_members(meeting)
        except MediaError:
            return
        self.engine.leave(meeting, leg)
        for other, member in members.items():
            if other != leg and member.whisper_to == leg:
                # Whispering to someone who left: heard by nobody, like a muted member.
                self.engine.join(meeting, Member(other, MeetingMode.MUTED))

    def leave_room(self, leg: str) -> None:
        self.leave_meeting(leg)
        if self.engine is not None and self.engine.mixer.has_port(leg):
            self.engine.unbridge(leg)

    def bridge(self, leg_a: str, leg_b: str) -> None:
        """Bridge two connected legs (checked by the caller)."""
        if leg_a == leg_b:
            raise SwitchError("sip: cannot bridge a leg to itself")
        engine = self._engine()
        # One synchronous step: no tick can run between leaving the old rooms and the bridge.
        self.leave_meeting(leg_a)
        self.leave_meeting(leg_b)
        engine.bridge(leg_a, leg_b)

    def join(self, meeting: str, member: Member) -> None:
        """Put a connected leg (checked by the caller) into ``meeting``."""
        engine = self._engine()
        members = engine.mixer.meeting_members(meeting)  # MediaError if unknown
        if member.whisper_to is not None and member.whisper_to not in members:
            raise SwitchError(f"sip: whisper target {member.whisper_to!r} is not a member")
        if self.meeting_of.get(member.leg) != meeting:
            self.leave_room(member.leg)
        engine.join(meeting, member)
        self.meeting_of[member.leg] = meeting

    def leave(self, meeting: str, leg: str) -> None:
        if self.meeting_of.get(leg) == meeting:
            self.leave_meeting(leg)

    def destroy_meeting(self, meeting: str) -> None:
        for leg, mid in list(self.meeting_of.items()):
            if mid == meeting:
                del self.meeting_of[leg]
        self._engine().destroy_meeting(meeting)

    def bridged_to(self, leg: str) -> str | None:
        """The leg ``leg`` is bridged to in the engine, if any."""
        if self.engine is None or not self.engine.mixer.has_port(leg):
            return None
        return self.engine.mixer.bridged_to(leg)
