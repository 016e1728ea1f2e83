"""Baton's core: users, ownership, preemption, flows and CallInfos — pure asyncio.

The core knows nothing of SIP, RTP, HTTP or storage. It owns the port, :mod:`baton.core.port`:
what it needs from a switch, and the words it speaks (``Cause``, ``Tone``, ``Prompt``,
``MeetingMode``); the adapters in :mod:`baton.switch` implement it. Flows import from here, not
from the modules.
"""

from baton.core.callinfo import P2P, CallInfo, MeetingCall, PartnerPolicy
from baton.core.errors import (
    BatonError,
    Busy,
    CallFailed,
    ClaimDenied,
    FlowCancelled,
    FlowInterrupted,
    FlowUsageError,
    Incompatible,
    InvalidArgument,
    NoAnswer,
    NotOwner,
    Preempted,
    Rejected,
    Superseded,
    SwitchFailed,
    UnknownMeeting,
    UnknownUser,
    Unreachable,
    UserHungUp,
)
from baton.core.events import CompensationOutcome, Event, EventBus, FlowOutcome, NoticeKind
from baton.core.flow import CancelResult, Command, Flow, FlowSpec, FlowState, Session, flow
from baton.core.manager import UserManager
from baton.core.model import Direction, Leg, LegState, Meeting, Playback, Recording, User
from baton.core.owner import Owner
from baton.core.port import (
    Cause,
    EndReason,
    MeetingMode,
    Member,
    PreemptionCause,
    Prompt,
    Switch,
    SwitchError,
    SwitchEvent,
    Target,
    Tone,
)
from baton.core.priority import Priority

__all__ = [
    "P2P",
    "BatonError",
    "Busy",
    "CallFailed",
    "CallInfo",
    "CancelResult",
    "Cause",
    "ClaimDenied",
    "Command",
    "CompensationOutcome",
    "Direction",
    "EndReason",
    "Event",
    "EventBus",
    "Flow",
    "FlowCancelled",
    "FlowInterrupted",
    "FlowOutcome",
    "FlowSpec",
    "FlowState",
    "FlowUsageError",
    "Incompatible",
    "InvalidArgument",
    "Leg",
    "LegState",
    "Meeting",
    "MeetingCall",
    "MeetingMode",
    "Member",
    "NoAnswer",
    "NotOwner",
    "NoticeKind",
    "Owner",
    "PartnerPolicy",
    "Playback",
    "Preempted",
    "PreemptionCause",
    "Priority",
    "Prompt",
    "Recording",
    "Rejected",
    "Session",
    "Superseded",
    "Switch",
    "SwitchError",
    "SwitchEvent",
    "SwitchFailed",
    "Target",
    "Tone",
    "UnknownMeeting",
    "UnknownUser",
    "Unreachable",
    "User",
    "UserHungUp",
    "UserManager",
    "flow",
]
