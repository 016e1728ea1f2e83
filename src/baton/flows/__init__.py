"""The dispatch flow library: every feature of a dispatch console, as flows on the core.

:data:`LIBRARY` maps each flow's name to its :class:`~baton.core.FlowSpec`; the API, the
console and ``baton demo`` list flows from it. ``docs/flows.md`` describes each flow: what each
party hears at each step, its policies and its errors.
"""

from typing import Any

from baton.core import FlowSpec
from baton.flows.barge_in import barge_in
from baton.flows.broadcast import broadcast
from baton.flows.call import call, inbound_call
from baton.flows.emergency import emergency_call, emergency_inbound
from baton.flows.force_release import OtherParty, force_release
from baton.flows.group_call import BusyPolicy, OnLeave, conference, group_call
from baton.flows.hold import hold
from baton.flows.monitor import monitor, whisper
from baton.flows.pickup import PickupFailed, pickup
from baton.flows.ptt import ptt_group
from baton.flows.queue import AlreadyTaken, DispatcherQueue, Overflow, queued_call, take_call
from baton.flows.roll_call import polling, roll_call
from baton.flows.transfer import OnFail, TransferOutcome, attended_transfer, blind_transfer

LIBRARY: dict[str, FlowSpec[Any]] = {
    spec.name: spec
    for spec in (
        call,
        inbound_call,
        queued_call,
        take_call,
        group_call,
        conference,
        broadcast,
        barge_in,
        force_release,
        monitor,
        whisper,
        blind_transfer,
        attended_transfer,
        hold,
        pickup,
        roll_call,
        polling,
        emergency_call,
        emergency_inbound,
        ptt_group,
    )
}

__all__ = [
    "LIBRARY",
    "AlreadyTaken",
    "BusyPolicy",
    "DispatcherQueue",
    "OnFail",
    "OnLeave",
    "OtherParty",
    "Overflow",
    "PickupFailed",
    "TransferOutcome",
    "attended_transfer",
    "barge_in",
    "blind_transfer",
    "broadcast",
    "call",
    "conference",
    "emergency_call",
    "emergency_inbound",
    "force_release",
    "group_call",
    "hold",
    "inbound_call",
    "monitor",
    "pickup",
    "polling",
    "ptt_group",
    "queued_call",
    "roll_call",
    "take_call",
    "whisper",
]
