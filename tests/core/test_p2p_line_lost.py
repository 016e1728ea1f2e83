"""A P2P's ``on_line_lost`` hook: asked first when a party's line fails, never on a hang-up
(docs/flows.md, "Two-party calls (P2P) — when a party leaves")."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from baton.core import P2P, Cause, Priority, Session, Tone, User, flow
from baton.testing import World

Hook = Callable[[User, Cause], bool]


@flow(priority=Priority.ROUTINE)
async def _call(s: Session, a: User, b: User, hook: Hook) -> None:
    await s.claim(a, b)
    await s.dial(a)
    ringback = await s.play(a, Tone("ringback"), loop=True)
    await s.dial(b)
    await s.stop(ringback)
    await s.connect(a, b)
    s.settle(P2P(a, b, on_line_lost=hook))


@flow(priority=Priority.ROUTINE)
async def _take_back(s: Session, user: User) -> None:
    """What a hook starts: claims the partner the P2P lets go, and plays them the hold tone."""
    await s.claim(user, wait=5.0)
    await s.play(user, Tone("hold"), loop=True)
    await s.sleep(60)
    await s.hangup(user)


async def _talking(hook: Hook) -> World:
    w = World("a", "b")
    await w.start(_call, w["a"], w["b"], hook).result()
    assert w.hears("a") == {"b"}
    return w


async def test_a_line_failure_asks_the_hook_which_takes_the_partner() -> None:
    asked: list[tuple[str, Cause]] = []
    w = World("a", "b")

    def hook(partner: User, cause: Cause) -> bool:
        asked.append((partner.id, cause))
        w.start(_take_back, partner)
        return True

    await w.start(_call, w["a"], w["b"], hook).result()
    w.sim.kill("b")  # b's phone dies: media timeout
    await w.run(1)
    assert asked == [("a", Cause.MEDIA_TIMEOUT)]
    owner = w.owner("a")
    assert owner is not None and owner.startswith("_take_back")
    assert w.hears("a") == {"tone:hold"} and w.manager.callinfos == {}
    w.assert_ok()


@pytest.mark.parametrize("how", ["hang_up", "declines"])
async def test_a_hang_up_or_a_hook_that_declines_clears_the_call(how: str) -> None:
    asked: list[str] = []

    def hook(partner: User, cause: Cause) -> bool:
        asked.append(partner.id)
        return False

    w = await _talking(hook)
    if how == "hang_up":
        w.sim.hang_up("b")
    else:
        w.sim.kill("b")
    await w.run(2)
    assert asked == ([] if how == "hang_up" else ["a"])
    assert w.state("a") == "idle"  # cleared, as without a hook
    w.assert_ok(quiescent=True)


async def test_a_hook_that_raises_clears_the_call_and_says_so() -> None:
    def hook(partner: User, cause: Cause) -> bool:
        raise RuntimeError("broken hook")

    w = await _talking(hook)
    w.sim.kill("b")
    await w.run(2)
    assert w.state("a") == "idle"
    assert any("broken hook" in e.message for e in w.kinds("problem"))  # type: ignore[attr-defined]
    w.assert_ok(quiescent=True)
