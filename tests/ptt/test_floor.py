"""The floor state machine, sans-IO: every rule and every race as a sequence of inputs."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from baton.core import Priority
from baton.flows.ptt.floor import (
    BurstTimer,
    Denied,
    FloorControl,
    FloorState,
    Granted,
    Idle,
    Positions,
    Released,
    Revoked,
)

R, F, E = Priority.ROUTINE, Priority.FLASH, Priority.EMERGENCY


def test_request_on_idle_floor_is_granted_with_a_burst_timer() -> None:
    f = FloorControl(max_burst=30)
    assert f.request("a", R) == [Granted("a", R, 1), BurstTimer(1, 30)]
    assert f.state is FloorState.TAKEN and f.holder == "a"


def test_equal_priority_queues_with_positions_first_come_first_served() -> None:
    f = FloorControl()
    f.request("a", F)  # a dispatcher talks
    assert f.request("b", R) == [Positions((("b", 1),))]
    assert f.request("c", R) == [Positions((("b", 1), ("c", 2)))]
    assert f.request("d", R + 5) == [Positions((("d", 1), ("b", 2), ("c", 3)))]
    assert f.release("a") == [
        BurstTimer(1, None),
        Released("a"),
        Granted("d", R + 5, 2),
        BurstTimer(2, 30.0),
        Positions((("b", 1), ("c", 2))),
    ]


def test_without_queueing_a_busy_floor_is_denied() -> None:
    f = FloorControl(queueing=False)
    f.request("a", R)
    assert f.request("b", R) == [Denied("b", "floor taken")]


def test_strictly_higher_priority_revokes_the_talker() -> None:
    f = FloorControl()
    f.request("a", R)
    assert f.request("disp", F) == [
        BurstTimer(1, None),
        Revoked("a", "preempted by a higher-priority talker", by="disp"),
        Granted("disp", F, 2),
        BurstTimer(2, 30.0),
    ]
    assert f.queue() == []  # the revoked talker is not queued: it may ask again


def test_release_by_last_talker_makes_the_floor_idle() -> None:
    f = FloorControl()
    f.request("a", R)
    assert f.release("a") == [BurstTimer(1, None), Released("a"), Idle()]
    assert f.state is FloorState.IDLE


def test_burst_timer_takes_the_floor_back_and_serves_the_queue() -> None:
    f = FloorControl(max_burst=10)
    f.request("a", R)
    f.request("b", R)
    assert f.burst_expired(1) == [
        BurstTimer(1, None),
        Revoked("a", "maximum talk-burst time reached"),
        Granted("b", R, 2),
        BurstTimer(2, 10),
        Positions(()),
    ]


def test_queued_member_can_withdraw() -> None:
    f = FloorControl()
    f.request("a", R)
    f.request("b", R)
    f.request("c", R)
    assert f.release("b") == [Positions((("c", 1),))]


def test_emergency_raiser_gets_the_floor_and_every_burst_is_emergency() -> None:
    f = FloorControl()
    f.request("disp", F)
    acts = f.raise_emergency("a")
    assert acts[1] == Revoked("disp", "emergency raised by a", by="a")
    assert f.holder == "a" and f.holder_priority == E
    assert f.request("disp", F) == [Positions((("disp", 1),))]  # FLASH cannot take it now
    f.release("a")
    assert f.holder == "disp" and f.holder_priority == E  # queued bursts are emergency too
    f.request("b", R)
    f.set_emergency(False)  # everyone falls back to what they asked for
    assert f.holder_priority == F
    assert f.release("disp")[2] == Granted("b", R, 4)


# ---- races -------------------------------------------------------------------------------


def test_two_requests_in_the_same_tick_first_wins_second_waits() -> None:
    f = FloorControl()
    first, second = f.request("a", R), f.request("b", R)
    assert isinstance(first[0], Granted) and second == [Positions((("b", 1),))]


def test_release_and_preempting_request_crossing_either_order() -> None:
    # release first, then the preempting request: granted from idle, nobody revoked
    f = FloorControl()
    f.request("a", R)
    f.release("a")
    assert f.request("disp", F)[0] == Granted("disp", F, 2)
    # the preempting request first, then a's release (sent before it heard the revoke):
    g = FloorControl()
    g.request("a", R)
    g.request("disp", F)
    assert g.release("a") == []  # ignored: it cannot release the dispatcher's floor
    assert g.holder == "disp"


def test_talker_leaving_while_holding_the_floor() -> None:
    f = FloorControl()
    f.request("a", R)
    f.request("b", R)
    assert f.leave("a") == [
        BurstTimer(1, None),
        Released("a"),
        Granted("b", R, 2),
        BurstTimer(2, 30.0),
        Positions(()),
    ]


def test_burst_timer_firing_after_a_revoke_is_ignored() -> None:
    f = FloorControl(max_burst=10)
    f.request("a", R)
    f.request("disp", F)  # revokes a's burst 1
    assert f.burst_expired(1) == []  # the stale timer of burst 1 does nothing
    assert f.holder == "disp"


def test_queued_member_leaving_the_group() -> None:
    f = FloorControl()
    f.request("a", R)
    f.request("b", R)
    f.request("c", R)
    assert f.leave("b") == [Positions((("c", 1),))]
    assert f.leave("nobody") == []


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["req", "rel", "leave", "expire"]),
            st.sampled_from(["a", "b", "c", "d"]),
            st.sampled_from([R, R + 10, F, E]),
        ),
        max_size=60,
    )
)
def test_one_holder_and_a_consistent_queue_whatever_happens(ops: list) -> None:
    f = FloorControl()
    for op, who, prio in ops:
        if op == "req":
            acts = f.request(who, prio)
        elif op == "rel":
            acts = f.release(who)
        elif op == "leave":
            acts = f.leave(who)
        else:
            acts = f.burst_expired(f.burst)
        granted = [a for a in acts if isinstance(a, Granted)]
        assert len(granted) <= 1
        if granted:
            assert f.holder == granted[0].member
        assert f.holder not in f.queue()
        assert len(f.queue()) == len(set(f.queue()))
        if f.holder is None:
            assert not f.queue()  # never idle with someone waiting
