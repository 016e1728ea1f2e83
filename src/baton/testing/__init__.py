"""Tools for testing flows: virtual time, a simulated switch with virtual phones, assertions."""

from baton.testing.clock import VirtualClock, VirtualTimeDeadlock, VirtualTimeLoop, run_virtual

__all__ = ["VirtualClock", "VirtualTimeDeadlock", "VirtualTimeLoop", "run_virtual"]
