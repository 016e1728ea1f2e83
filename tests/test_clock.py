"""The virtual-time loop: timers fire in order, instantly, and a deadlock is reported."""

import asyncio
import time

import pytest

from baton.testing import VirtualTimeDeadlock, VirtualTimeLoop, run_virtual


def test_long_sleep_costs_no_real_time() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.sleep(3600)
        return loop.time() - start

    wall = time.perf_counter()
    assert run_virtual(main()) == pytest.approx(3600)
    assert time.perf_counter() - wall < 5  # an hour of virtual time, not of real time


def test_timers_fire_in_deadline_order() -> None:
    async def main() -> list[str]:
        order: list[str] = []

        async def after(delay: float, name: str) -> None:
            await asyncio.sleep(delay)
            order.append(name)

        await asyncio.gather(after(30, "c"), after(0.02, "a"), after(5, "b"))
        return order

    assert run_virtual(main()) == ["a", "b", "c"]


def test_timeout_uses_virtual_clock() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(30):
                await asyncio.Event().wait()
        return loop.time()

    assert run_virtual(main()) == pytest.approx(30)


def test_deadlock_is_reported() -> None:
    async def main() -> None:
        await asyncio.Event().wait()

    loop = VirtualTimeLoop(idle_wait=0.01)
    try:
        with pytest.raises(VirtualTimeDeadlock):
            loop.run_until_complete(main())
    finally:
        loop.close()


async def test_async_tests_run_on_virtual_time() -> None:
    loop = asyncio.get_running_loop()
    assert isinstance(loop, VirtualTimeLoop)
    await asyncio.sleep(100)
    assert loop.time() == pytest.approx(100)


@pytest.mark.realtime
async def test_realtime_marker_gives_a_real_loop() -> None:
    assert not isinstance(asyncio.get_running_loop(), VirtualTimeLoop)


def test_spinning_in_place_is_reported() -> None:
    """A task that waits 0 s in a loop would hang a virtual-time test forever."""

    async def main() -> None:
        while True:  # noqa: ASYNC110 - the very mistake this test must catch
            await asyncio.sleep(0)

    loop = VirtualTimeLoop()
    try:
        with pytest.raises(VirtualTimeDeadlock, match="spins in place"):
            loop.run_until_complete(main())
    finally:
        loop.close()
