"""Tools for testing flows: virtual time, a simulated switch with virtual phones, assertions."""

from baton.testing.clock import VirtualClock, VirtualTimeDeadlock, VirtualTimeLoop, run_virtual
from baton.testing.world import World

__all__ = ["VirtualClock", "VirtualTimeDeadlock", "VirtualTimeLoop", "World", "run_virtual"]
