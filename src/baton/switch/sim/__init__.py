"""The ``sim`` switch adapter: virtual phones in memory, for fast, deterministic flow tests."""

from baton.switch.sim.switch import (
    Behaviour,
    SimLeg,
    SimPhone,
    SimSwitch,
    Timing,
    answers,
    busy,
    incompatible,
    never_answers,
    rejects,
    unreachable,
)

__all__ = [
    "Behaviour",
    "SimLeg",
    "SimPhone",
    "SimSwitch",
    "Timing",
    "answers",
    "busy",
    "incompatible",
    "never_answers",
    "rejects",
    "unreachable",
]
