"""pytest plugin (registered by Baton's entry point): runs ``async def`` tests, and gives flow
authors a ``world`` fixture.

By default an async test runs on a :class:`~baton.testing.clock.VirtualTimeLoop`, so timeouts of
seconds or minutes cost nothing and results do not depend on the machine's load. Mark a test
``@pytest.mark.realtime`` to run it on a real loop (sockets, subprocesses, real SIP clients).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterator
from typing import Any

import pytest

from baton.testing.clock import VirtualTimeLoop
from baton.testing.world import World


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "realtime: run this async test on a real-time event loop, not virtual time"
    )


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    func = pyfuncitem.obj
    if not inspect.iscoroutinefunction(func):
        return None
    kwargs: dict[str, Any] = {
        name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames
    }
    factory = None if pyfuncitem.get_closest_marker("realtime") else VirtualTimeLoop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(func(**kwargs))
    return True


@pytest.fixture
def world() -> Iterator[World]:
    """An empty test world (add users with ``world.add("alice")``). When the test is over, every
    invariant must have held at every step: a violation fails the test even if it asserted
    nothing about it."""
    w = World()
    yield w
    problems = w.problems()
    if problems:
        pytest.fail("invariant violations:\n  " + "\n  ".join(problems), pytrace=False)
