"""Tools for testing flows: virtual time, a simulated switch with virtual phones, assertions."""

from baton.switch.sim import answers, busy, incompatible, never_answers, rejects, unreachable
from baton.testing.assertions import (
    assert_hears,
    assert_idle,
    assert_invariants,
    assert_no_leaks,
    assert_owner,
    assert_played,
    assert_recorded,
)
from baton.testing.clock import VirtualClock, VirtualTimeDeadlock, VirtualTimeLoop, run_virtual
from baton.testing.world import World

__all__ = [
    "VirtualClock",
    "VirtualTimeDeadlock",
    "VirtualTimeLoop",
    "World",
    "answers",
    "assert_hears",
    "assert_idle",
    "assert_invariants",
    "assert_no_leaks",
    "assert_owner",
    "assert_played",
    "assert_recorded",
    "busy",
    "incompatible",
    "never_answers",
    "rejects",
    "run_virtual",
    "unreachable",
]
