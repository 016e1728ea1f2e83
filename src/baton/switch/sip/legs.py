"""What the ``sip`` switch keeps about each leg, one type per direction.

Rules
-----
* **A leg is inbound or outbound for life**, and its type says which: an
  :class:`InboundLeg` was an INVITE from a phone (it holds that INVITE, its server
  transaction, our To tag, the SDP answer for the 200 and whether the phone ACKed it); an
  :class:`OutboundLeg` is Baton's INVITE to every contact of a user (its forked
  :class:`Branch`\\ es, the causes of the branches that failed, whether it rang). Code that
  needs one direction's fields checks the type, never a flag.
* **What both directions share is the call once it is set up**: the dialog, where the phone
  talks to us from, the SDP session and the last negotiated audio, the session timer and our
  refresh in flight, a stale-line :class:`Probe`. That is :class:`Leg`.
* **Data only.** Nothing here sends, times or decides; the modules that do (:mod:`.inbound`,
  :mod:`.outbound`, :mod:`.in_dialog`, :mod:`.stale`) work on these records.

Theory of operation
-------------------
A leg is born ``RINGING`` (inbound: not answered yet; outbound: INVITEs out, no 2xx), becomes
``CONNECTED`` when the 200 goes out (inbound) or the first 2xx comes in (outbound), and ends
``ENDED`` exactly once (:meth:`.book.LegBook.drop`). An ended leg may still be found through a
transaction index for a while (the ACK of a 200 that crossed a hang-up), so handlers check the
state before acting.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from baton.core.port import Cause, SwitchEvent

from .dialog import Dialog, OutgoingInvite
from .message import Request
from .sdp import NegotiatedAudio, SdpSession
from .session_timer import SessionTimer
from .transaction import Peer, TransactionKey

__all__ = ["Branch", "InboundLeg", "Leg", "LegState", "OutboundLeg", "Probe"]


class LegState(enum.Enum):
    RINGING = "ringing"  # inbound: not answered yet; outbound: INVITEs out, no 2xx
    CONNECTED = "connected"
    ENDED = "ended"


@dataclass(eq=False)
class Probe:
    """An in-dialog OPTIONS asking a quiet leg's phone whether it still knows the call."""

    leg: Leg
    waiting: list[Callable[[], None]]
    key: TransactionKey | None = None
    handle: asyncio.TimerHandle | None = None


@dataclass(eq=False)
class Leg:
    """What every leg has, whichever side called: the call once it is set up."""

    id: str
    user: str
    state: LegState = LegState.RINGING
    sdp: SdpSession | None = None
    media: NegotiatedAudio | None = None  # the last negotiated audio
    dialog: Dialog | None = None
    peer: Peer | None = None  # where the phone talks to us from (TCP: the connection)
    handles: list[asyncio.Handle] = field(default_factory=list)
    session: SessionTimer | None = None
    session_handle: asyncio.TimerHandle | None = None
    refresh_key: TransactionKey | None = None  # our session-refresh re-INVITE in flight
    refresh_invite: Request | None = None
    last_ack: Request | None = None  # the ACK of our last re-INVITE's 2xx (to repeat)
    answer_in_ack: bool = False  # we put an offer in a 2xx: the phone's answer is in the ACK
    probe: Probe | None = None  # a stale-line probe in flight


@dataclass(eq=False)
class InboundLeg(Leg):
    """A phone's INVITE to Baton, answered (or refused) by Baton."""

    # Defaults only because the base has them; the inbound handler always sets all four.
    invite: Request | None = None
    invite_key: TransactionKey | None = None
    local_tag: str = ""
    answer_sdp: bytes = b""  # our SDP answer to the INVITE's offer (empty: late offer)
    timer_headers: list[tuple[str, str]] = field(default_factory=list)
    acked: bool = False  # the phone ACKed our 200 (or gave up: timer L)
    bye_after_ack: str | None = None  # hung up before the ACK: the Reason to send (or "")


@dataclass(eq=False)
class OutboundLeg(Leg):
    """Baton's call to a user: one INVITE per registered contact, first answer wins."""

    creating: bool = False  # inside originate(): events are deferred
    deferred: list[SwitchEvent] = field(default_factory=list)
    branches: list[Branch] = field(default_factory=list)
    failures: list[Cause] = field(default_factory=list)
    rang: bool = False


@dataclass(eq=False)
class Branch:
    """One INVITE of a (possibly forked) outbound leg, to one registered contact."""

    leg: OutboundLeg
    invite: Request
    peer: Peer
    call: OutgoingInvite
    key: TransactionKey | None = None  # its client transaction, once sent
    done: bool = False  # a final response (or timeout) arrived
    early_sdp: bytes = b""  # an SDP answer seen in a 183, if the 2xx has none
