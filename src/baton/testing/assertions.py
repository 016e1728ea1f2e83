"""Assertions that read like the domain, with messages that say what was found instead.

::

    assert_hears(w, "alice", {"bob"})
    assert_owner(w, "alice", flow=f, priority=Priority.FLASH)
    assert_played(w, "bob", "tone:preemption")
    assert_recorded(w, "alice")
    assert_no_leaks(w)          # every flow ended, every live leg held by a CallInfo
    assert_invariants(w)        # every invariant of docs/design.md held at every step so far
"""

from __future__ import annotations

from collections.abc import Iterable

from baton.core import Flow
from baton.core.priority import priority_name
from baton.testing.world import World

__all__ = [
    "assert_hears",
    "assert_idle",
    "assert_invariants",
    "assert_no_leaks",
    "assert_owner",
    "assert_played",
    "assert_recorded",
]


def assert_hears(w: World, user: str, expected: Iterable[str], *, exactly: bool = True) -> None:
    """``user`` hears exactly (or at least) ``expected``: user ids, ``tone:x``, ``prompt:p``."""
    heard = w.hears(user)
    want = set(expected)
    ok = heard == want if exactly else want <= heard
    assert ok, f"{user} hears {sorted(heard) or 'nothing'}, expected {sorted(want) or 'nothing'}"


def assert_owner(
    w: World,
    user: str,
    *,
    flow: Flow | str | None = None,
    priority: int | None = None,
    callinfo: bool | None = None,
) -> None:
    """Who holds ``user``: a flow (handle or name), at a priority, or a CallInfo."""
    owner = w.manager.owner_of(w[user])
    name = owner.name if owner is not None else None
    if flow is not None:
        want = flow.name if isinstance(flow, Flow) else flow
        assert name == want, f"{user} is held by {name or 'nobody'}, expected {want}"
    if priority is not None:
        got = owner.priority if owner is not None else None
        assert got == priority, (
            f"{user} is held at {priority_name(got) if got is not None else 'no priority'}, "
            f"expected {priority_name(priority)}"
        )
    if callinfo is not None:
        is_ci = owner is not None and owner.kind == "callinfo"
        assert is_ci == callinfo, f"{user} is held by {name or 'nobody'}" + (
            ", not a CallInfo" if callinfo else ", a CallInfo"
        )


def assert_idle(w: World, user: str) -> None:
    """No call at all, and nobody holds the user."""
    state, owner = w.state(user), w.owner(user)
    assert state == "idle" and owner is None, f"{user} is {state}, held by {owner or 'nobody'}"


def assert_played(w: World, user: str, what: str) -> None:
    """``user`` was played ``what`` (``tone:preemption``, ``prompt:x.wav``) at some point."""
    heard = w.heard(user)
    assert what in heard, f"{user} was played {heard or 'nothing'}, not {what}"


def assert_recorded(w: World, user: str, recorded: bool = True) -> None:
    """``user`` is (or, with ``recorded=False``, is not) being recorded now."""
    is_rec = w.sim.is_recorded(user)
    assert is_rec == recorded, f"{user} is {'' if is_rec else 'not '}being recorded"


def assert_no_leaks(w: World) -> None:
    """Every flow ended; every live leg is held by a CallInfo (or is a keep line)."""
    w.assert_ok(quiescent=True)


def assert_invariants(w: World) -> None:
    """Every invariant held at every step observed so far."""
    w.assert_ok()
