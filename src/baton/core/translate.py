"""Switch events → core state and notices: what the manager makes of each event the port reports
(docs/design.md, invariants 4, 7 and 12).

Theory of operation
-------------------
The switch reports facts about legs, playbacks and recordings by their switch ids; this module
turns each into the core's terms, synchronously, in the listener call:

* ringing / answered → the leg's state (an answer resolves every ``dial`` awaiting the leg, the
  new owner's included — a ringing call survives a change of owner);
* failed → the leg ends (a ``dial`` raises the matching ``CallFailed``);
* ended → the leg ends *and* the user is gone (:meth:`SwitchEvents.user_gone`, invariant 7):
  a claim taking the user resolves with ``UserHungUp``, the ledger releases the user, the
  owner's operations on it are interrupted, and its ``user_lost`` hook runs;
* a digit → the owner's ``digit_pressed`` hook, or the user's buffer for ``collect``;
* a playback or recording finished → the media records;
* an inbound call → a new ringing leg handed to the router (or rejected: unknown caller, busy).

An event about a leg the core no longer knows (it ended the leg first) is ignored.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from baton.core.events import DtmfDigit, NoticeKind, OpInterrupted, Problem
from baton.core.model import Direction, LegState, Meeting, User
from baton.core.ops import MANAGER
from baton.core.owner import Notice
from baton.core.port import (
    Cause,
    DtmfReceived,
    InboundCall,
    LegAnswered,
    LegEnded,
    LegFailed,
    LegRinging,
    PlaybackFinished,
    RecordingFinished,
    SwitchError,
    SwitchEvent,
)

if TYPE_CHECKING:
    from baton.core.ledger import UserRecord
    from baton.core.manager import UserManager

__all__ = ["SwitchEvents"]


class SwitchEvents:
    """The switch listener of one manager."""

    __slots__ = ("_m", "_records")

    def __init__(self, manager: UserManager) -> None:
        self._m = manager
        self._records = manager.ledger.records

    def on_event(self, ev: SwitchEvent) -> None:
        """The switch's listener: apply one event."""
        m = self._m
        if isinstance(ev, DtmfReceived):
            self._on_dtmf(ev)
        elif isinstance(ev, (LegAnswered, LegRinging, LegFailed, LegEnded)):
            leg = m.find_leg(ev.leg)
            if leg is None:
                return  # a late event for a leg the core already ended
            rec = self._records[leg.user.id]
            if isinstance(ev, LegRinging):
                if leg.state is LegState.DIALLING:
                    leg.state = LegState.RINGING
                    m.publish_leg(leg)
            elif isinstance(ev, LegAnswered):
                if leg.state in (LegState.DIALLING, LegState.RINGING):
                    leg.state = LegState.CONNECTED
                    leg.resolve()
                    m.publish_leg(leg)
                    m.collector.arm(rec)
            elif isinstance(ev, LegFailed):
                m.end_leg(rec, leg, ev.cause)
            else:
                m.end_leg(rec, leg, ev.cause)
                self.user_gone(rec, ev.cause)
        elif isinstance(ev, PlaybackFinished):
            pb = m.media.playbacks.get(ev.playback)
            if pb is not None:
                m.media.playback_done(pb, ev.completed)
        elif isinstance(ev, RecordingFinished):
            r = m.media.recordings.get(ev.recording)
            if r is not None:
                m.media.recording_done(r, ev.seconds)
            # The switch has closed the file (also of a recording the core let go already, cut
            # by a clear or a hang-up): whoever keeps the files — checksums — may read it now.
            target = r.target if r is not None else None
            m.media.publish(
                "record.done",
                MANAGER,
                (target,) if isinstance(target, User) else (),
                target if isinstance(target, Meeting) else None,
                ev.path,
            )
        elif isinstance(ev, InboundCall):
            self._on_inbound(ev)

    def _on_dtmf(self, ev: DtmfReceived) -> None:
        leg = self._m.find_leg(ev.leg)
        if leg is None:
            return
        rec = self._records[leg.user.id]
        self._m.events.publish(DtmfDigit(user=leg.user.id, digit=ev.digit))
        owner = rec.owner
        if owner is not None and owner.digit_pressed(rec.user, ev.digit):
            return  # the owner's digit handler took it
        rec.digits.append(ev.digit)
        waiter = rec.digit_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _on_inbound(self, ev: InboundCall) -> None:
        m = self._m
        user = m.find_user(ev.user) if ev.user else None
        if user is None:
            m.events.publish(
                Problem(
                    source="inbound",
                    message=f"call from unknown user {ev.user!r} to {ev.to!r} rejected",
                )
            )
            m.spawn(self._reject(ev.leg, Cause.REJECTED), f"reject:{ev.leg}")
            return
        rec = self._records[user.id]
        if rec.live_leg is not None:
            m.spawn(self._reject(ev.leg, Cause.BUSY), f"reject:{ev.leg}")
            return
        leg = m.new_leg(rec, ev.leg, Direction.INBOUND, LegState.RINGING)
        if m.router is not None:
            try:
                m.router(m, user, leg, ev)
            except Exception as exc:  # a broken router must not lose the call silently
                m.events.publish(Problem(source="router", message=repr(exc)))

    async def _reject(self, leg_id: str, cause: Cause) -> None:
        """Refuse an inbound call the core will not take. A switch that fails is asked once
        more a second later, as for the collector's hang-ups: otherwise the caller's phone
        would ring on in a call the core never knew of."""
        m = self._m
        for attempt in range(2):
            try:
                async with asyncio.timeout(m.command_timeout):
                    await m.switch.hangup(leg_id, cause, None)
                return
            except (SwitchError, TimeoutError) as exc:
                message = str(exc) or f"no answer within {m.command_timeout} s"
                m.events.publish(Problem(source=f"reject:{leg_id}", message=message))
            if attempt == 0:
                await asyncio.sleep(1.0)

    def user_gone(self, rec: UserRecord, cause: Cause) -> None:
        """The user's leg ended from their side: tell the owner, release the user (inv. 7)."""
        owner = rec.owner
        if owner is None:
            return
        m = self._m
        user = rec.user
        notice = Notice(NoticeKind.HUNG_UP, user, cause=cause)
        ops = [op for op in rec.ops if op.owner is owner]
        told = m.claims.user_hung_up(rec, owner, notice)
        m.ledger.hand_over(rec, None, "hung_up")
        for op in ops:
            if op.ends_on_hangup:
                told = True
            elif m.operations.interrupt(op, notice, hold=False):
                told = True
                m.events.publish(
                    OpInterrupted(
                        flow=owner.name,
                        op=op.name,
                        users=tuple(r.user.id for r in op.recs),
                        notice=NoticeKind.HUNG_UP,
                    )
                )
        owner.user_lost(user, notice, told)
