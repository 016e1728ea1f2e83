"""Inbound calls: the numbering plan (:class:`Router`) and the service's own two flows."""

from baton.service.routing.flows import (
    dial_in,
    feature_code,
    group_dial_in,
    ptt_dial_in,
    unroutable,
)
from baton.service.routing.router import Router, dialled_number

__all__ = [
    "Router",
    "dial_in",
    "dialled_number",
    "feature_code",
    "group_dial_in",
    "ptt_dial_in",
    "unroutable",
]
