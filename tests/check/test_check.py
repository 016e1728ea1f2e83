"""``baton check``: the library passes; the checker catches the mistakes flow authors make."""

from __future__ import annotations

import random

import pytest
from broken_flows import (
    abandoning_flow,
    careless_compensation,
    deaf_flow,
    done_with_b,
    silencing_drop,
    stubborn_flow,
)

from baton.core import FlowSpec, Session, User, flow
from baton.flows import LIBRARY, call, emergency_call, force_release
from baton.testing import World
from baton.testing.check import (
    Perturbation,
    Schedule,
    _arguments,
    _mistakes,
    _Runner,
    check_flow,
    default_against,
    parse_schedule,
)
from baton.testing.check_cli import main
from baton.testing.clock import run_virtual
from baton.testing.setups import DISPATCHERS, FIELD

#: per flow: enough to land every kind of perturbation at every await point of most flows
LIBRARY_BUDGET = 40


@pytest.mark.parametrize("name", sorted(LIBRARY))
def test_every_library_flow_passes_the_checker(name: str) -> None:
    spec = LIBRARY[name]
    report = check_flow(spec, default_against(spec), budget=LIBRARY_BUDGET, seed=7)
    failure = report.first_failure()
    assert report.ok, failure and (str(failure.schedule), [f.message for f in failure.findings])
    assert report.runs == LIBRARY_BUDGET


def test_a_flow_that_tells_the_other_party_and_reraises_handled_its_loss() -> None:
    # The library's call catches the notice, ends the other party's call, and raises it
    # again (its record says preempted): nothing for the author to fix, so no warning.
    report = check_flow(call, default_against(call), budget=LIBRARY_BUDGET, seed=7)
    assert report.ok and not report.warnings, [w.findings for w in report.warnings]


@pytest.mark.parametrize(
    ("broken", "mistake"),
    [
        (careless_compensation, "compensation step 'hang_up_a' touched a user"),
        (deaf_flow, "was never told"),
        (stubborn_flow, "operated on a user it no longer owned"),
        (abandoning_flow, "on the line in silence until the leak collector hung up"),
        (silencing_drop, "(dead air)"),
    ],
)
def test_the_checker_catches_the_mistake(broken: FlowSpec[None], mistake: str) -> None:
    report = check_flow(broken, [emergency_call], budget=80, seed=3)
    assert not report.ok
    failure = report.first_failure()
    assert failure is not None
    assert len(failure.schedule.perturbations) == 1  # the shortest schedule: one event
    messages = " | ".join(f.message for f in failure.findings)
    assert mistake in messages
    # the printed schedule replays to the same finding
    replay = parse_schedule(str(failure.schedule), failure.schedule.seed)
    again = check_flow(broken, [emergency_call], replay=replay)
    assert not again.ok
    assert mistake in " | ".join(f.message for f in again.failures[0].findings)


def test_schedules_print_and_parse_back() -> None:
    s = Schedule(
        (Perturbation(3, "preempt", "f2", "emergency_call"), Perturbation(5, "cancel")), 11
    )
    assert str(s) == "@3 preempt(f2, emergency_call) ; @5 cancel"
    assert parse_schedule(str(s), 11) == s
    with pytest.raises(ValueError, match="not a perturbation"):
        parse_schedule("preempt f2", 1)
    t = Schedule((Perturbation(2, "command", "kick", "f1"),), 5, slow=True, busy=True)
    assert str(t) == "@2 command(kick, f1) ; slow switch ; busy pool"
    assert parse_schedule(str(t), 5) == t


def test_racing_takes_and_a_phone_dying_in_clean_up_on_a_heavy_switch_replay() -> None:
    """The perturbations the storm mix taught the checker: two takes of one user in one
    instant, a phone dying inside the flow's compensation, a heavy-tailed switch. They print
    and parse back, and land: the racing takes start two flows, the cancellation ends the flow
    under test, and the run on the heavy switch keeps every invariant."""
    text = "@1 race(f2, emergency_call) ; @2 cancel_dies(f1) ; slow switch ; heavy switch"
    s = parse_schedule(text, 13)
    assert s.heavy and s.slow and str(s) == text
    result = run_virtual(_Runner(call, s, default_against(call), 120.0).run())
    assert not result.findings, [f.message for f in result.findings]
    assert "emergency_call#1 starts" in result.trace
    assert "emergency_call#2 starts" in result.trace
    assert "call#1 ends: cancelled" in result.trace


def test_the_flows_own_claim_clearing_a_user_is_an_await_point() -> None:
    """A force release takes a call: the preemption's media clear of the parties is the
    first await point of the flow (its claim). The other party hanging up there — in the
    instant the claim is granted — once made the flow fail and left the target on the line in
    silence until the leak collector hung it up (tests/flows/test_commands_mid_call.py)."""
    report = check_flow(
        force_release, default_against(force_release), replay=parse_schedule("@0 hangup(f2)", 7)
    )
    assert report.ok, [f.message for r in report.failures for f in r.findings]
    (run,) = report.warnings or [None]
    assert run is None


def test_cli_reports_the_shortest_schedule_and_how_to_replay(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["broken_flows:stubborn_flow", "--budget", "60", "--seed", "3"])
    out = capsys.readouterr().out
    assert code == 1
    assert "stubborn_flow: FAILED" in out
    assert "shortest failing schedule: @" in out
    assert "replay: baton check broken_flows:stubborn_flow --seed" in out
    assert main(["call", "--budget", "5"]) == 0


async def test_losing_a_user_the_flow_had_hung_up_is_not_a_mistake() -> None:
    """A user the flow hung up itself and still holds is taken while the flow bridges the
    others (its notice is pending when the flow completes): no "was never told" finding —
    the flow was done with that call (the false positive an adversarial run found in both
    transfers and pickup)."""
    w = World("a", "b", "c", "boss", latency={"bridge": 0.5})
    f = w.start(done_with_b, w["a"], w["b"], w["c"])
    while w.sim.leg_of("b") is not None or not w.kinds("media"):
        await w.run(0.1)
    await w.run(0.1)  # the bridge of a and c is in flight
    w.start(emergency_call, w["boss"], w["b"])
    await f.result()
    assert [ev.user for ev in w.kinds("flow.notified") if ev.flow == f.name] == ["b"]  # type: ignore[attr-defined]
    assert not [m for m in _mistakes(w.events, f) if "never told" in m.message]
    await w.run(30)


def test_a_ptt_member_hanging_up_as_it_is_granted_is_let_be() -> None:
    """baton check (seed 7) found it: a PTT group's claim of a member returned while the
    member's phone died in the same instant; the group registered handlers for the user it had
    just lost (invariant 12) and its ringing task crashed the whole group with NotOwner. The
    group now passes over a member lost as it is granted. Replays the schedule found."""
    spec = LIBRARY["queued_call"]
    schedule = parse_schedule(
        "@0 preempt(f3, ptt_group) ; @3 dies(f1) ; @3 preempt(d1, ptt_group)", 7000094
    )
    report = check_flow(spec, default_against(spec), replay=schedule)
    failure = report.first_failure()
    assert report.ok, failure and [f.message for f in failure.findings]


def test_a_user_lost_while_the_flows_last_command_lands_is_no_mistake() -> None:
    """baton check (seed 7) flagged hold as "never told": the holder was taken by an emergency
    while the hold, its held party gone, was hanging that holder up — its last command, slow
    on this switch. Losing a user while finishing is a benign race, not a deaf flow."""
    spec = LIBRARY["hold"]
    schedule = parse_schedule(
        "@4 preempt(f2, emergency_inbound) ; @5 preempt(f2, emergency_call) ; slow switch", 7000053
    )
    report = check_flow(spec, default_against(spec), replay=schedule)
    failure = report.first_failure()
    assert report.ok, failure and [f.message for f in failure.findings]


@pytest.mark.parametrize(
    ("flow", "seed", "schedule"),
    [
        # the transferor, already gone, taken while the blind transfer connects the party: the
        # notice escaped and the whole transfer failed, leaving the target on a dead line
        ("blind_transfer", 11000057, "@1 contend(f2, broadcast) ; @3 preempt(f2, whisper)"),
        # the target taken while the attended transfer completes: a clear swallowed the notice
        # and the transfer dialled a user it no longer owned (NotOwner escaped)
        (
            "attended_transfer",
            11000050,
            "@6 contend(f1, ptt_group) ; @8 preempt(f3, force_release)",
        ),
        # (seed 99) the target taken while the transfer takes the call, then the transferor
        # hangs up: the claim failed half-way and claim_call's notice to the party pulled out
        # was swallowed by the pending news of the target — the party left in silence
        (
            "blind_transfer",
            99000703,
            "@1 preempt(f3, emergency_call) ; @1 hangup(f2) ; @3 contend(f3, roll_call)",
        ),
    ],
)
def test_transfers_losing_a_party_while_completing(flow: str, seed: int, schedule: str) -> None:
    """Found by baton check with seeds 11 and 99; replayed on the slow switch they need."""
    spec = LIBRARY[flow]
    report = check_flow(
        spec, default_against(spec), replay=parse_schedule(schedule + " ; slow switch", seed)
    )
    failure = report.first_failure()
    assert report.ok, failure and [f.message for f in failure.findings]


@pytest.mark.parametrize("flow", ["monitor", "whisper", "barge_in"])
def test_a_dispatcher_taken_while_its_flow_takes_the_call_leaves_nobody_silent(flow: str) -> None:
    """Found by ``baton check --library --budget 1500 --seed 123``: the dispatcher is taken by an
    emergency while the flow takes the two parties out of their call (the switch slow to clear).
    The claim fails with ``Preempted`` for the dispatcher after taking the parties; before, the
    flow failed and released them onto silent lines until the leak collector — now each hears
    the preemption notice and is hung up (``claim_call``)."""
    spec = LIBRARY[flow]
    schedule = "@0 preempt(d1, emergency_call) ; @3 contend(f2, broadcast) ; @5 hangup(f2)"
    report = check_flow(
        spec,
        default_against(spec),
        replay=parse_schedule(schedule + " ; slow switch", 123000543),
    )
    failure = report.first_failure()
    assert report.ok, failure and [f.message for f in failure.findings]


def test_a_barge_in_whose_peer_and_dispatcher_hang_up_at_once_ends() -> None:
    """baton check, seed 29: the peer and the dispatcher hung up in one instant; the second
    hang-up was lost to the barge-in (see tests/core/test_timing.py), which waited on with its
    target in silence."""
    spec = LIBRARY["barge_in"]
    schedule = parse_schedule(
        "@0 contend(d1, attended_transfer) ; @2 hangup(f1) ; @3 hangup(d1)", 29000098
    )
    report = check_flow(spec, default_against(spec), replay=schedule)
    failure = report.first_failure()
    assert report.ok, failure and [f.message for f in failure.findings]


@pytest.mark.parametrize(
    ("flow", "seed", "schedule"),
    [
        # the peer hung up in the instant the dispatcher was taken: the barge-in (monitor) was
        # already returning and its clean-up told the party left — no "never told"
        ("barge_in", 41000134, "@2 preempt(f3, emergency_call) ; @4 hangup(f2)"),
        ("monitor", 41000134, "@2 preempt(f3, emergency_call) ; @4 hangup(f2)"),
        # a member taken while the group's clean-up hung up the others: skipped, not NotOwner
        (
            "group_call",
            43000192,
            "@5 preempt(f1, whisper) ; @5 preempt(d1, emergency_inbound) ; slow switch",
        ),
    ],
)
def test_losses_while_a_flow_winds_down(flow: str, seed: int, schedule: str) -> None:
    """Found by baton check with seeds 41 and 43."""
    spec = LIBRARY[flow]
    report = check_flow(spec, default_against(spec), replay=parse_schedule(schedule, seed))
    failure = report.first_failure()
    assert report.ok, failure and [f.message for f in failure.findings]


def test_no_perturbation_lands_on_the_scenarios_own_clean_up() -> None:
    """baton check (seed 47): a perturbation due at a late await point landed while the
    scenario itself was ending every flow, and started a persistent PTT group nobody then
    ended — reported as a leak of the flow under test. The scenario's clean-up is no longer
    an await point."""
    spec = LIBRARY["conference"]
    schedule = parse_schedule(
        "@8 contend(f1, ptt_group) ; @10 preempt(f1, emergency_call) ; "
        "@14 contend(f3, ptt_group) ; slow switch",
        47000211,
    )
    report = check_flow(spec, default_against(spec), replay=schedule)
    failure = report.first_failure()
    assert report.ok, failure and [f.message for f in failure.findings]


def test_no_user_is_drawn_for_two_roles() -> None:
    """Three roles on two dispatchers (dispatcher, field user, supervisor): once the field
    user drew a dispatcher, the supervisor used to draw the same one — a flow started with one
    user in two roles, and the guide's escort flow FAILED on it (dead air for a dispatcher
    whose field user "was" the supervisor). A role past its pool takes anyone not drawn yet."""

    @flow()
    async def escort(s: Session, dispatcher: User, field: User, supervisor: User) -> None:
        return None

    w = World(*FIELD)
    for d in DISPATCHERS:
        w.add(d, keep=True)
    for seed in range(300):
        args = _arguments(escort, w, random.Random(seed))
        assert args is not None
        drawn = [args["dispatcher"], args["field"], args["supervisor"]]
        assert len(set(drawn)) == 3, (seed, [u.id for u in drawn])
