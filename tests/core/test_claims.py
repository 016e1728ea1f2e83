"""Claims: the priority queue, waiting, timeouts, multi-user atomicity."""

from __future__ import annotations

import pytest
from core_flows import grab, hold

from baton.core import ClaimDenied, Priority, Session, User, flow
from baton.testing import World


@flow()
async def waiter(s: Session, a: User, wait: float) -> float:
    await s.claim(a, wait=wait)
    got = s.now()
    await s.sleep(1)
    return got


async def test_queue_serves_highest_priority_first_then_fifo() -> None:
    w = World("a")
    h = w.start(hold, w["a"], priority=Priority.FLASH)
    await w.run(2)
    low1 = w.start(waiter, w["a"], 100)
    low2 = w.start(waiter, w["a"], 100)
    high = w.start(waiter, w["a"], 100, priority=Priority.PRIORITY)
    await w.run(1)
    assert [e.claimer for e in w.kinds("claim.queued")] == [low1.name, low2.name, high.name]
    await h.stop()  # releases a: the queue is served in priority order, then FIFO
    t_high, t_low1, t_low2 = await high.result(), await low1.result(), await low2.result()
    assert t_high < t_low1 < t_low2
    w.assert_ok()


async def test_waiting_claim_times_out_with_claim_denied() -> None:
    w = World("a")
    w.start(hold, w["a"])
    await w.run(2)
    f = w.start(waiter, w["a"], 7.5)
    with pytest.raises(ClaimDenied, match=r"waited 7\.5 s"):
        await f.result()
    assert w.manager.now() == pytest.approx(2 + 7.5)
    assert not w.manager.rec(w["a"]).waiters
    w.assert_ok()


async def test_a_waiter_of_higher_priority_preempts_when_the_owner_drops_priority() -> None:
    """Settling into a lower-priority CallInfo lets a queued claim with a priority between the
    two preempt at once."""
    from baton.core import P2P

    @flow(priority=Priority.FLASH)
    async def flash_call(s: Session, a: User, b: User) -> None:
        await s.claim(a, b)
        await s.dial(a)
        await s.dial(b)
        await s.connect(a, b)
        await s.sleep(5)
        s.settle(P2P(a, b, priority=Priority.ROUTINE))

    w = World("a", "b")
    w.start(flash_call, w["a"], w["b"])
    await w.run(3)
    q = w.start(waiter, w["a"], 60, priority=Priority.PRIORITY)
    assert await q.result() == pytest.approx(7.0)  # granted when the P2P (ROUTINE) took over
    w.assert_ok()


async def test_multi_claim_is_all_or_nothing_without_wait() -> None:
    w = World("a", "b")
    h = w.start(hold, w["b"])
    await w.run(2)
    f = w.start(grab, w["a"], w["b"])
    with pytest.raises(ClaimDenied):
        await f.result()
    assert w.owner("a") is None  # nothing was taken
    assert w.owner("b") == h.name
    assert [e.user for e in w.kinds("owner.changed")] == ["b"]  # only h's own claim
    w.assert_ok()


async def test_multi_claim_with_wait_takes_users_in_id_order() -> None:
    w = World("a", "b")
    h = w.start(hold, w["b"])
    await w.run(2)

    @flow()
    async def both(s: Session, a: User, b: User) -> float:
        await s.claim(b, a, wait=30)
        return s.now()

    f = w.start(both, w["a"], w["b"])
    await w.run(3)
    assert w.owner("a") == f.name  # a (first in id order) taken, waiting for b
    await h.stop()
    assert await f.result() == pytest.approx(5.0)
    w.assert_ok()


async def test_waiting_claimer_cancelled_leaves_the_queue() -> None:
    w = World("a")
    h = w.start(hold, w["a"])
    await w.run(2)
    f = w.start(waiter, w["a"], 100)
    await w.run(1)
    assert len(w.manager.rec(w["a"]).waiters) == 1
    await f.stop()
    assert not w.manager.rec(w["a"]).waiters
    await h.stop()
    assert w.owner("a") is None
    w.assert_ok()


async def test_claiming_a_user_already_owned_is_a_no_op() -> None:
    @flow()
    async def twice(s: Session, a: User) -> int:
        await s.claim(a)
        e1 = s.manager.rec(a).epoch
        await s.claim(a)
        return e1 - s.manager.rec(a).epoch

    w = World("a")
    assert await w.start(twice, w["a"]).result() == 0


async def test_claim_needs_a_user() -> None:
    @flow()
    async def empty(s: Session) -> None:
        await s.claim()

    w = World()
    with pytest.raises(Exception, match="at least one user"):
        await w.start(empty).result()


async def test_unknown_user_is_a_clear_error() -> None:
    from baton.core import UnknownUser

    w = World("a")
    with pytest.raises(UnknownUser, match="no user with id 'zed'"):
        w.manager.user("zed")
    stranger = User("zed")
    with pytest.raises(UnknownUser):
        await w.start(grab, stranger).result()
