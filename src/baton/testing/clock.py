"""Virtual time for asyncio: a selector event loop whose clock jumps to the next timer.

Why by hand: flows, the sim switch, the demo and the schedule checker all need the *same* loop
to run in virtual time, outside pytest as well as inside it; the pytest-only fake-time plugins
do not give that. The trick is small and uses only public asyncio API: the loop's ``time()``
reads a virtual clock, and its selector never sleeps — when asyncio would block until the next
timer, the selector advances the clock by that timeout instead. Real I/O still works (the real
selector is polled without blocking), so a test may mix virtual timers with, say, a pipe.

A 30 s ring timeout therefore takes as long as the callbacks it runs, not 30 s.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine, Mapping
from typing import Any, TypeVar

__all__ = ["VirtualClock", "VirtualTimeDeadlock", "VirtualTimeLoop", "run_virtual"]

T = TypeVar("T")


class VirtualTimeDeadlock(RuntimeError):
    """Every task waits and no timer is pending: nothing can ever happen again — or the loop
    spins in place: it keeps running callbacks without virtual time ever advancing (a task
    waiting 0 s in a loop, often a deadline that a rounding error keeps just out of reach).

    On a real loop this would hang (or burn a core) forever; on the virtual loop it is reported.
    """


class VirtualClock:
    """A monotonic clock that only moves when told to."""

    __slots__ = ("now",)

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def advance(self, seconds: float) -> None:
        if seconds > 0:
            self.now += seconds


class _VirtualSelector(selectors.BaseSelector):
    """Polls the real selector without blocking; turns a wait into a clock jump."""

    #: loop iterations at one instant before the loop is declared to spin in place
    SPIN_LIMIT = 500_000

    def __init__(self, clock: VirtualClock, idle_wait: float) -> None:
        self._real = selectors.DefaultSelector()
        self._clock = clock
        self._idle_wait = idle_wait
        self._spins = 0
        self._at = clock.now

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._real.select(0)
        if ready or timeout == 0:
            if self._clock.now != self._at or ready:
                self._at, self._spins = self._clock.now, 0
            else:
                self._spins += 1
                if self._spins > self.SPIN_LIMIT:
                    raise VirtualTimeDeadlock(
                        f"the loop spins in place at t={self._clock.now}: "
                        f"{self.SPIN_LIMIT} iterations without virtual time advancing"
                    )
            return ready
        if timeout is None:
            # No timer is pending. Only real I/O (a thread finishing, a pipe) can wake us now;
            # give it a bounded real wait, then call it what it is.
            ready = self._real.select(self._idle_wait)
            if not ready:
                raise VirtualTimeDeadlock(
                    "every task is waiting and no timer is pending (virtual time cannot advance)"
                )
            return ready
        self._clock.advance(timeout)
        return []

    def close(self) -> None:
        self._real.close()

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._real.get_map()


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on virtual time. ``loop.time()`` starts at 0.0."""

    def __init__(self, *, start: float = 0.0, idle_wait: float = 5.0) -> None:
        self.clock = VirtualClock(start)
        super().__init__(selector=_VirtualSelector(self.clock, idle_wait))

    def time(self) -> float:
        return self.clock.now


def run_virtual(main: Coroutine[Any, Any, T], *, debug: bool = False) -> T:
    """Run ``main`` to completion on a fresh :class:`VirtualTimeLoop` (like ``asyncio.run``)."""
    with asyncio.Runner(debug=debug, loop_factory=VirtualTimeLoop) as runner:
        return runner.run(main)
