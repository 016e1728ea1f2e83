"""Users come and go while the manager runs (the service's provisioning): only an idle user can
be removed, and numbers move without a gap or a double."""

from __future__ import annotations

import pytest
from core_flows import hold

from baton.core import UnknownUser, User
from baton.testing import World


async def test_only_an_idle_user_is_removed() -> None:
    w = World("a", "b")
    m = w.manager
    h = w.start(hold, w["a"])
    await w.run(1)
    with pytest.raises(ValueError, match=r"a is on a call \(connected\)"):
        m.remove_user(w["a"])
    await h.stop()
    await w.run(10)  # the leak collector hangs up the line nobody holds
    assert m.leg_of(w["a"]) is None
    m.remove_user(w["a"])
    with pytest.raises(UnknownUser):
        m.user("a")
    assert m.users() == [w["b"]]
    w.assert_ok()


async def test_numbers_move_between_users() -> None:
    w = World("a")
    m = w.manager
    b = m.add_user(User("b", numbers=("1002",)))
    m.set_numbers(w["a"], ("1001",))
    with pytest.raises(ValueError, match=r"number '1002' belongs to 'b'"):
        m.set_numbers(w["a"], ("1002",))
    m.set_numbers(b, ("1003",))
    m.set_numbers(w["a"], ("1002",))
    assert m.by_number("1002") is w["a"] and m.by_number("1001") is None
    assert m.by_number("1003") is b
    m.remove_user(b)
    assert m.by_number("1003") is None
