"""``baton check``: run a flow against the library on shared users, across many schedules, and
report the shortest schedule that breaks something.

What it does
------------
A *scenario* is the flow under test started on users drawn from a small shared pool (arguments
generated from its type hints), alongside whatever *perturbations* a *schedule* lands on it. A
perturbation is one of:

* ``hangup(u)`` / ``dies(u)`` — a phone of one of the flow's users hangs up / goes dead;
* ``preempt(u, F)`` — a higher-priority library flow ``F`` takes that user (an emergency, a
  barge-in, a force release…);
* ``contend(u, F)`` — a library flow of the same or lower priority wants the same user;
* ``fail(cmd)`` — the switch's next ``cmd`` fails;
* ``cancel`` — the flow is cancelled;
* ``cancel_dies(u)`` — the flow is cancelled and, a moment later — inside its compensation —
  the phone of one of its users dies;
* ``race(u, F)`` — two higher-priority library flows ``F`` take that user in the same instant
  (the second supersedes the first's preemption while it is still clearing the user);
* ``command(name[, user])`` — one of the flow's own commands is sent (a console's click: a
  kick, a mute, a redial, a floor request), with a user argument for each of the flow's users
  when the command's description ends with ``(user)``.

Each lands at an *await point*: the moment the flow's k-th operation (a dial, a play, a
connect, a wait…) has started and not yet finished — or the moment the core issues a command of
its own on one of the flow's users (a preemption's media clear, a settled call's bridge, a
collector's hang-up) — so it interleaves with the flow, and with the core, exactly where a real
event could. A third of the single-perturbation schedules start on a *busy pool* (two pairs of
pool users already talking, so that the flow's own claims preempt and take time), and two
thirds of them run on a *slow switch* (every command and every event delivery
takes 0.05–0.8 s, drawn from the schedule's seed; see :class:`~baton.switch.sim.Timing`), so
that those awaits are long enough for a perturbation to land inside them; a third of those slow
switches are *heavy-tailed* (one command or event in twenty takes ten times longer, up to 8 s:
:meth:`~baton.switch.sim.Timing.heavy`). A baseline run counts
the await points; then schedules are explored shortest first — every single perturbation at
every await point, then seeded random schedules of two and three — each in virtual time, on a
fresh world, in a reproducible order.

What it checks, at every step and at the end
--------------------------------------------
Every invariant of docs/design.md (the World's watch: ledger consistency, fencing at the switch,
supervision, leak collection, the preemption order; liveness — every claim resolves, every flow
asked to end ends; no dead air; clean hand-overs), that nothing leaked once every flow ended and
the grace period passed, and the mistakes flow authors make:

* a compensation step touched a user the flow had lost (it failed with ``NotOwner``);
* a flow lost a user and was never told (no handler, no wait, no later operation on it);
* an operation after a ``Preempted`` was swallowed (``NotOwner`` escaped the flow);
* a flow crashed with something other than the vocabulary of expected call failures.

A ``Preempted`` or ``UserHungUp`` escaping the flow is reported as a *warning*: the flow did not
handle losing a user (``--strict`` makes warnings fail).

The report names the shortest failing schedule, its seed, and the trace of that run; replay it
with ``baton check FLOW --seed N``.
"""

from __future__ import annotations

import enum
import inspect
import io
import itertools
import random
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from baton.core import (
    BatonError,
    Flow,
    FlowSpec,
    FlowUsageError,
    Meeting,
    NotOwner,
    Preempted,
    User,
    UserHungUp,
)
from baton.core.events import (
    CompensationOutcome,
    CompensationRan,
    Event,
    FlowEnded,
    FlowNotified,
    FlowStarted,
    LegCollected,
    LegStateChanged,
    MediaChanged,
    NoticeKind,
    OwnerChanged,
)
from baton.core.ops import CURRENT_OP, Op
from baton.flows import LIBRARY, DispatcherQueue, call
from baton.switch.sim import Timing, answers
from baton.testing.clock import run_virtual
from baton.testing.setups import DISPATCHERS, FIELD, SETUPS, Prepare, SetUp, check_setup_for
from baton.testing.world import World
from baton.trace import Tracer

__all__ = [
    "CheckReport",
    "Finding",
    "Perturbation",
    "Schedule",
    "check_flow",
    "check_setup",
    "default_against",
    "parse_schedule",
]

#: A flow ending with a BatonError is a domain outcome (a call failed, a claim was denied, a
#: pickup found nothing to pick up) — except these, which are the author's mistakes or notices.
NOT_EXPECTED = (NotOwner, Preempted, UserHungUp)


@dataclass(frozen=True)
class Perturbation:
    """One event landed on the flow at its ``at``-th await point."""

    at: int
    kind: str  # hangup | dies | preempt | contend | race | fail | cancel | cancel_dies | command
    target: str | None = None  # a user id, a switch command, a command of the flow
    by: str | None = None  # the library flow that preempts or contends; a command's user

    def __str__(self) -> str:
        what = self.kind
        if self.target:
            what += f"({self.target}" + (f", {self.by}" if self.by else "") + ")"
        return f"@{self.at} {what}"


#: How long a flow's last command may take on the slow switch (seconds): a user lost no
#: earlier than this before the flow ended was lost while the flow was finishing, not ignored.
LAST_COMMAND = 1.0

#: The leak collector's grace period in the explored worlds (seconds).
GRACE = 3.0

#: How a schedule's ``slow switch`` is written (and parsed back).
SLOW = "slow switch"

#: How a schedule's ``busy pool`` is written (and parsed back).
BUSY = "busy pool"

#: How a schedule's heavy-tailed switch is written (and parsed back).
HEAVY = "heavy switch"

#: How long after a ``cancel_dies`` cancellation the phone dies (seconds): inside the flow's
#: compensation, which on a slow switch takes a command or two.
DIES_AFTER = 0.3

#: On a busy pool, these pairs of pool users are talking (settled P2P calls at ROUTINE) when
#: the flow under test starts: taking one of them is a preemption, whose media clear is an
#: await point of the flow's own claim — the other users' news lands inside it.
BUSY_PAIRS = (("f1", "f2"), ("d2", "f3"))


@dataclass(frozen=True)
class Schedule:
    perturbations: tuple[Perturbation, ...]
    seed: int
    slow: bool = False  # every switch command and event takes 0.05–0.8 s (seeded)
    busy: bool = False  # the pool's BUSY_PAIRS are talking when the flow starts
    heavy: bool = False  # the slow switch has a heavy tail (Timing.heavy)

    def __str__(self) -> str:
        parts = [
            *map(str, self.perturbations),
            *([SLOW] if self.slow else []),
            *([BUSY] if self.busy else []),
            *([HEAVY] if self.heavy else []),
        ]
        return " ; ".join(parts) or "(no perturbation)"


@dataclass
class Finding:
    severity: str  # error | warning
    message: str


@dataclass
class RunResult:
    schedule: Schedule
    findings: list[Finding]
    trace: str
    await_points: int
    users: list[str]  # the pool users the flow under test held at some point


@dataclass
class CheckReport:
    flow: str
    runs: int = 0
    await_points: int = 0
    failures: list[RunResult] = field(default_factory=list)
    warnings: list[RunResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No schedule failed."""
        return not self.failures

    def first_failure(self) -> RunResult | None:
        """The shortest failing run (fewest perturbations, then lowest seed), if any."""
        if not self.failures:
            return None
        return min(self.failures, key=lambda r: (len(r.schedule.perturbations), r.schedule.seed))


# ---- scenario set-ups ----------------------------------------------------------------------

#: A flow's set-up: prepares the world and returns the flow's arguments (see
#: :mod:`baton.testing.setups`, which holds the library's).
Setup = Prepare


def check_setup(flow_name: str) -> Callable[[Setup], Setup]:
    """Register how ``baton check`` prepares a scenario for a flow that acts on an existing call:

    ``@check_setup("escort_call")`` on ``async def setup(w: World, rng) -> dict`` returning the
    flow's keyword arguments. Users come from the pool: field users ``f1``…``f5``, dispatchers
    ``d1``, ``d2`` (always-on lines).
    """

    def register(fn: Setup) -> Setup:
        SETUPS[flow_name] = SetUp(flow_name, fn)
        return fn

    return register


# ---- arguments from type hints -----------------------------------------------------------


def _arguments(spec: FlowSpec[Any], w: World, rng: random.Random) -> dict[str, Any] | None:
    """Arguments for ``spec`` drawn from the pool, or None if a parameter cannot be made."""
    hints = typing.get_type_hints(spec.fn)
    params = list(spec.signature.parameters.values())[1:]
    field_users = [w[u] for u in FIELD]
    dispatchers = [w[d] for d in DISPATCHERS]
    used: list[User] = []

    def pick(pool: list[User]) -> User:
        # one user in two roles (a field user who is also the supervisor) is no contention
        # but a flow used wrongly: past its pool, a role takes anyone not drawn yet
        everyone = [*field_users, *dispatchers]
        free = [u for u in pool if u not in used] or [u for u in everyone if u not in used] or pool
        u = rng.choice(free)
        used.append(u)
        return u

    args: dict[str, Any] = {}
    for p in params:
        hint = hints.get(p.name, Any)
        optional = False
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(hint) if a is not type(None)]
            optional = len(members) < len(typing.get_args(hint))
            hint = members[0] if len(members) == 1 else hint
        origin = typing.get_origin(hint)
        if hint is User:
            name = p.name.lower()
            role = dispatchers if any(k in name for k in ("dispatcher", "picker", "sup")) else None
            args[p.name] = pick(role or [*field_users, *dispatchers])
        elif origin in (list, tuple) and typing.get_args(hint)[:1] == (User,):
            args[p.name] = [pick(field_users) for _ in range(rng.randint(2, 3))]
        elif hint is DispatcherQueue:
            args[p.name] = DispatcherQueue("q", w.manager, dispatchers, timeout=20.0)
        elif p.default is not inspect.Parameter.empty:
            if isinstance(hint, type) and issubclass(hint, enum.Enum) and rng.random() < 0.5:
                args[p.name] = rng.choice(list(hint))
            elif isinstance(p.default, (int, float)) and p.default > 20:
                args[p.name] = 20.0  # keep rings and waits short in the explored worlds
            continue
        elif hint is Meeting or optional:
            if optional:
                continue
            return None
        elif isinstance(hint, type) and issubclass(hint, enum.Enum):
            args[p.name] = rng.choice(list(hint))
        elif hint in (int, float):
            args[p.name] = 5
        elif hint is str:
            args[p.name] = "1"
        else:
            return None
    return args


# ---- one run -------------------------------------------------------------------------------


class _Runner:
    """A world, the flow under test, the schedule's perturbations landing at await points."""

    def __init__(
        self, spec: FlowSpec[Any], schedule: Schedule, against: list[FlowSpec[Any]], budget: float
    ) -> None:
        self.spec = spec
        self.schedule = schedule
        self.against = against
        self.budget = budget
        self.rng = random.Random(schedule.seed)
        timing = None
        if schedule.heavy:
            timing = Timing.heavy(schedule.seed)
        elif schedule.slow:
            timing = Timing.real(schedule.seed)
        self.w = World(*FIELD, grace=GRACE, timing=timing)
        # every command the switch receives passes here too: the core's own ones are await
        # points of the flow when they concern its users
        self.w.sim.set_auditor(self._on_command)
        self.held: set[str] = set()  # the users the flow under test has held
        for d in DISPATCHERS:
            self.w.add(d, keep=True)
        for u in FIELD:
            self.w.behave(u, answers(self.rng.choice([0.5, 1.0, 2.0])))
        self.flow: Flow | None = None
        self.await_points = 0
        self.pending: dict[int, list[Perturbation]] = {}
        for p in schedule.perturbations:
            self.pending.setdefault(p.at, []).append(p)
        self.started: list[Flow] = []
        self.winding_down = False
        self.out = io.StringIO()

    def _on_op(self, op: Op) -> None:
        if op.owner is not self.flow:
            return
        self.held.update(r.user.id for r in op.recs)
        self._await_point()

    def _on_command(self, command: str, legs: tuple[str, ...]) -> None:
        manager = self.w.manager
        manager.audit_command(command, legs)
        op = CURRENT_OP.get()
        if self.flow is None or (op is not None and op.owner is self.flow):
            return  # the flow's own operations are counted by _on_op
        for leg_id in legs:
            leg = manager.find_leg(leg_id)
            if leg is None:
                continue
            # a user the flow holds, or one its own claim is taking from another owner (the
            # preemption's clear: news about its other users lands inside its claim)
            p = manager.rec(leg.user).preemption
            if p is not None and p.claimer is self.flow:
                self.held.add(leg.user.id)
            if leg.user.id in self.held:
                self._await_point()
                return

    def _await_point(self) -> None:
        k = self.await_points
        self.await_points += 1
        for p in self.pending.pop(k, []):
            self.w.manager.loop.call_soon(self._land, p)

    def _land(self, p: Perturbation) -> None:
        w, flow = self.w, self.flow
        assert flow is not None
        if self.winding_down:
            return
        if p.kind == "hangup" and p.target:
            w.sim.hang_up(p.target)
        elif p.kind == "dies" and p.target:
            w.sim.kill(p.target)
        elif p.kind == "fail" and p.target:
            w.sim.fail_next(p.target)
        elif p.kind == "cancel":
            flow.cancel("check: cancel")
        elif p.kind == "cancel_dies" and p.target:
            flow.cancel("check: cancel")
            w.manager.loop.call_later(DIES_AFTER, self._dies, p.target)
        elif p.kind == "command" and p.target:
            _send(flow, p.target, **({"user": p.by} if p.by else {}))
        elif p.kind in ("preempt", "contend") and p.target and p.by:
            self._start_other(p.by, w[p.target])
        elif p.kind == "race" and p.target and p.by:
            self._start_other(p.by, w[p.target])
            self._start_other(p.by, w[p.target])

    def _dies(self, user: str) -> None:
        if not self.winding_down:
            self.w.sim.kill(user)

    def _start_other(self, name: str, target: User) -> None:
        spec = next((s for s in self.against if s.name == name), None)
        if spec is None:
            return
        args = _arguments(spec, self.w, self.rng)
        if args is None:
            return
        # aim the other flow at the target: its first user parameter is the contested user;
        # another parameter that drew the target gets the user it displaced, so no flow is
        # started with one user in two roles (a call to oneself: not a contention)
        for key, value in args.items():
            if isinstance(value, User):
                args[key] = target
                _displace(args, key, target, value)
                break
            if isinstance(value, list) and value and isinstance(value[0], User):
                args[key] = [target, *[u for u in value if u is not target][:1]]
                _displace(args, key, target, value[0] if value[0] is not target else None)
                break
        try:
            self.started.append(self.w.start(spec, **args))
        except BatonError:
            pass

    async def _busy_pool(self) -> None:
        """Put :data:`BUSY_PAIRS` in calls (a set-up has its own calls: not for those)."""
        w = self.w
        calls = [w.start(call, w[a], w[b]) for a, b in BUSY_PAIRS]
        for c in calls:
            await c.wait()

    async def run(self) -> RunResult:
        w = self.w
        tracer = Tracer(self.out, hears=w.sim.hears, users=lambda: [*FIELD, *DISPATCHERS])
        w.manager.events.subscribe(tracer)
        w.manager.on_op = self._on_op
        setup = check_setup_for(self.spec.name)
        if setup is not None:
            args: dict[str, Any] | None = await setup.prepare(w, self.rng)
        else:
            if self.schedule.busy:
                await self._busy_pool()
            args = _arguments(self.spec, w, self.rng)
        if args is None:
            raise FlowUsageError(
                f"baton check cannot make arguments for {self.spec.name}: register a set-up "
                "with @check_setup"
            )
        self.flow = w.start(self.spec, **args)
        # run until the flow under test ends (commands: ask it to end), then everyone else
        deadline = w.manager.now() + self.budget
        while not self.flow.ended and w.manager.now() < deadline:
            await w.run(1.0)
            if w.manager.now() > deadline - self.budget / 2 and self.spec.commands:
                for cmd in ("end", "leave", "resume", "complete"):
                    if cmd in self.spec.commands:
                        _send(self.flow, cmd)
                        break
        # let what the flow left behind play out: a party it let go in silence is collected
        await w.run(GRACE + 0.5)
        findings: list[Finding] = []
        if not self.flow.ended:
            findings.append(
                Finding(
                    "warning",
                    f"{self.flow.name} still running after {self.budget:g} s of virtual time",
                )
            )
        self.winding_down = True  # no perturbation lands on the scenario's own clean-up
        for f in list(w.manager.flows.values()):
            for cmd in ("end", "leave", "clear_emergency"):
                if cmd in f.spec.commands:
                    _send(f, cmd)
            await w.run(0.5)
            if not f.ended:
                await f.stop("check: scenario over")
        for u in (*FIELD, *DISPATCHERS):
            w.sim.hang_up(u)
        await w.run(10)
        findings += [Finding("error", p) for p in w.problems(quiescent=True)]
        findings += _mistakes(w.events, self.flow)
        tracer.flush()
        held = sorted(
            {
                ev.user
                for ev in w.events
                if isinstance(ev, OwnerChanged) and ev.new == self.flow.name
            }
        )
        await w.close()
        return RunResult(self.schedule, findings, self.out.getvalue(), self.await_points, held)


def _displace(args: dict[str, Any], aimed: str, target: User, old: User | None) -> None:
    """Give every argument but ``aimed`` that holds ``target`` the user ``old`` instead (or drop
    it from a list)."""
    for key, value in args.items():
        if key == aimed:
            continue
        if value is target and old is not None:
            args[key] = old
        elif isinstance(value, list) and target in value:
            swapped = [old if u is target else u for u in value]
            args[key] = list(dict.fromkeys(u for u in swapped if u is not None))


def _send(flow: Flow, command: str, **args: Any) -> None:
    """Send a command if the flow still takes commands; its reply does not matter here."""
    try:
        fut = flow.send(command, **args)
    except FlowUsageError:
        return  # it ended meanwhile
    fut.add_done_callback(_ignore)


def _ignore(fut: Any) -> None:
    if not fut.cancelled():
        fut.exception()


def _mistakes(events: list[Event], flow: Flow) -> list[Finding]:
    """The flow author's mistakes, read from the event history and the flow's outcome."""
    found: list[Finding] = []
    name = flow.name
    for ev in events:
        if (
            isinstance(ev, CompensationRan)
            and ev.flow == name
            and ev.outcome == "failed"
            and "NotOwner" in (ev.detail or "")
        ):
            found.append(
                Finding(
                    "error",
                    f"compensation step {ev.step!r} touched a user {name} had lost ({ev.detail}); "
                    "register the step with the users it touches (s.compensate(step, user)) so it "
                    "is skipped when they are gone",
                )
            )
    # A notice still pending when the flow completed, and pending for a while: the flow went on
    # as if it still had the user. (Losing a user in the very instant a flow returns, or while
    # its last command is carried out — on a slow switch, up to a second — is a benign race,
    # not a mistake: hold found hanging up the holder it had just told.)
    end = next((ev.t for ev in events if isinstance(ev, FlowEnded) and ev.flow == name), None)
    if end is not None and flow.end_by is not None:  # measured to when its body returned
        end = min(end, flow.end_by - flow.manager.end_timeout)
    # Nor is a user taken from the flow after it had hung that user up itself (a transferor
    # that left, a picked-up call's ringing leg): it was done with that user's call, and
    # nothing it did afterwards could have gone wrong for not knowing.
    undelivered = {n.user.id for n in flow._pending}
    line_up: dict[str, bool] = {}  # user -> has a live leg, by the events so far
    pending: set[str] = set()
    for ev in events:
        if isinstance(ev, LegStateChanged):
            line_up[ev.user] = ev.state != "ended"
        elif (
            isinstance(ev, FlowNotified)
            and ev.flow == name
            and ev.via == "pending"
            and ev.user in undelivered
            and end is not None
            and ev.t < end - LAST_COMMAND
            and (line_up.get(ev.user, False) or ev.notice is NoticeKind.HUNG_UP)
        ):
            pending.add(ev.user)
    if pending and flow.outcome == "completed":
        users = ", ".join(sorted(pending))
        found.append(
            Finding(
                "error",
                f"{name} lost {users} and was never told: it had no handler (s.on_preempted / "
                "s.on_hangup) and was not waiting in a session operation. Register a handler, or "
                "wait with s.sleep / s.command / s.wait instead of raw asyncio",
            )
        )
    err = flow.error
    if isinstance(err, NotOwner):
        found.append(
            Finding(
                "error",
                f"{name} operated on a user it no longer owned: {err}. A Preempted or UserHungUp "
                "was swallowed and the flow carried on with that user",
            )
        )
    elif isinstance(err, (Preempted, UserHungUp)):
        stranded = _stranded(events, name)
        if stranded:
            found.append(
                Finding(
                    "error",
                    f"{name} did not handle losing {err.user.id} ({type(err).__name__} escaped "
                    f"the flow) and left {', '.join(stranded)} on the line in silence until the "
                    "leak collector hung up: a party whose call is broken under it hears the "
                    "preemption notice or a busy tone, or is called back (docs/flows.md)",
                )
            )
        elif not _handled_loss(events, name, err.user.id):
            found.append(
                Finding(
                    "warning",
                    f"{name} did not handle losing {err.user.id}: {type(err).__name__} escaped "
                    "the flow (catch it, or register s.on_preempted/s.on_hangup)",
                )
            )
    elif err is not None and not isinstance(err, BatonError):
        found.append(Finding("error", f"{name} crashed: {type(err).__name__}: {err}"))
    started = [ev for ev in events if isinstance(ev, FlowStarted)]
    ended = {ev.flow for ev in events if isinstance(ev, FlowEnded)}
    for ev in started:
        if ev.flow not in ended:
            found.append(Finding("error", f"{ev.flow} never ended"))
    return found


def _handled_loss(events: list[Event], name: str, lost: str) -> bool:
    """Whether the flow ``name``, told it lost ``lost``, had nothing left to do or did it: when
    the notice came it held no other user on a live line, or it then acted for them before it
    ended (played them something, bridged, settled, a compensation step ran, or their call
    ended) — a flow that catches
    the notice, tells the other party and raises it again (the library's calls) handled it."""
    owned: set[str] = set()
    up: dict[str, bool] = {}  # user -> has a live leg
    others: set[str] | None = None  # the flow's other users on a live line at the notice
    ended: float | None = None
    for ev in events:
        if others is None:
            if isinstance(ev, OwnerChanged):
                if ev.new == name:
                    owned.add(ev.user)
                elif ev.old == name:
                    owned.discard(ev.user)
            elif isinstance(ev, LegStateChanged):
                up[ev.user] = ev.state != "ended"
            elif isinstance(ev, FlowNotified) and ev.flow == name and ev.user == lost:
                others = {u for u in owned if u != lost and up.get(u, False)}
                if not others:
                    return True
            continue
        if isinstance(ev, FlowEnded) and ev.flow == name:
            ended = ev.t  # what it asked last may land after it ended (a slow switch)
            continue
        if (ended is not None and ev.t > ended + LAST_COMMAND) or isinstance(ev, LegCollected):
            return False  # nothing it did: left to the leak collector, or to nobody
        if (
            isinstance(ev, CompensationRan)
            and ev.flow == name
            and ev.outcome is CompensationOutcome.RAN
        ):
            return True  # its compensation (cancel a ringing line, hang up) acted for them
        if isinstance(ev, MediaChanged) and ev.by == name and others & set(ev.users):
            return True
        if isinstance(ev, OwnerChanged) and ev.user in others and ev.old == name and ev.new:
            return True  # settled into a call, or handed to another flow
        if isinstance(ev, LegStateChanged) and ev.user in others and ev.state == "ended":
            return True
    return others is None or ended is None  # never told: the stranded check speaks for that


def _stranded(events: list[Event], name: str) -> list[str]:
    """Users the flow ``name`` released who then sat on the line until the leak collector hung
    them up — nobody took them, nothing ended their call: a party left in silence."""
    released: dict[str, int] = {}  # user -> seq of the flow's release, while nobody took it
    state: dict[str, str] = {}  # leg -> its last state
    stranded: list[str] = []
    for ev in events:
        if isinstance(ev, LegStateChanged):
            state[ev.leg] = ev.state
        elif isinstance(ev, OwnerChanged):
            if ev.old == name and ev.new is None and ev.reason == "released":
                released[ev.user] = ev.seq
            else:
                released.pop(ev.user, None)
        elif isinstance(ev, LegCollected) and ev.user in released:
            if state.get(ev.leg) == "connected":  # (a phone still ringing is not on the line)
                stranded.append(ev.user)
            del released[ev.user]
    return sorted(set(stranded))


# ---- exploration --------------------------------------------------------------------------


def _perturbations(
    spec: FlowSpec[Any], at: int, users: list[str], against: list[FlowSpec[Any]]
) -> list[Perturbation]:
    out = [Perturbation(at, "cancel")]
    for cmd in ("originate", "bridge", "join", "play", "hangup"):
        out.append(Perturbation(at, "fail", cmd))
    # the flow's own commands, sent mid-operation: a console's kick, mute, redial or floor
    # request lands whenever the dispatcher clicks (one that names a user — its description
    # ends with "(user)" — is sent for each of the flow's users)
    for name, description in spec.commands.items():
        if description.rstrip().endswith("(user)"):
            out += [Perturbation(at, "command", name, u) for u in users]
        else:
            out.append(Perturbation(at, "command", name))
    for u in users:
        out.append(Perturbation(at, "hangup", u))
        out.append(Perturbation(at, "dies", u))
        out.append(Perturbation(at, "cancel_dies", u))
        for other in against:
            kind = "preempt" if other.priority > spec.priority else "contend"
            out.append(Perturbation(at, kind, u, other.name))
            if kind == "preempt":
                out.append(Perturbation(at, "race", u, other.name))
    return out


def check_flow(
    spec: FlowSpec[Any],
    against: list[FlowSpec[Any]],
    *,
    budget: int = 200,
    seed: int = 1,
    time_budget: float = 120.0,
    strict: bool = False,
    replay: Schedule | None = None,
    progress: Callable[[str], None] | None = None,
) -> CheckReport:
    """Explore schedules for ``spec`` against ``against`` (library flows, and itself).

    ``budget`` bounds the number of runs; ``seed`` makes the exploration reproducible;
    ``replay`` runs one schedule a previous report printed (:func:`parse_schedule`).
    """
    report = CheckReport(spec.name)

    def run(schedule: Schedule) -> RunResult:
        result = run_virtual(_Runner(spec, schedule, against, time_budget).run())
        report.runs += 1
        errors = [f for f in result.findings if f.severity == "error"]
        warnings = [f for f in result.findings if f.severity == "warning"]
        if errors or (strict and warnings):
            report.failures.append(result)
        elif warnings:
            report.warnings.append(result)
        return result

    if replay is not None:
        run(replay)
        return report
    base = run(Schedule((), seed))
    report.await_points = base.await_points
    # the same on a busy pool: taking a user from a call adds await points (its clear)
    busy = base if check_setup_for(spec.name) is not None else run(Schedule((), seed, True, True))
    rng = random.Random(seed)
    singles: list[Schedule] = []
    # every single event on an instant switch, on a slow one, on a slow one whose pool is
    # busy (the flow's claims preempt: news lands inside its own claims), and on a
    # heavy-tailed one (a command now and then outlasting the core's command_timeout)
    for slow, on_busy, heavy in (
        (False, False, False),
        (True, False, False),
        (True, True, False),
        (True, False, True),
    ):
        if on_busy and busy is base:
            continue
        points, users = (busy if on_busy else base).await_points, (busy if on_busy else base).users
        group = [
            Schedule((p,), seed, slow, on_busy, heavy)
            for at in range(max(1, points))
            for p in _perturbations(spec, at, users, against)
        ]
        rng.shuffle(group)
        singles += group
    for schedule in itertools.islice(singles, max(0, budget * 3 // 4)):
        if report.failures:
            break
        run(schedule)
    k = 0
    while report.runs < budget and not report.failures:
        k += 1
        run(
            _random_schedule(
                spec, against, seed * 1_000_003 + k, base.await_points, busy is not base
            )
        )
        if progress is not None and k % 20 == 0:
            progress(f"{spec.name}: {report.runs} runs")
    return report


def parse_schedule(text: str, seed: int) -> Schedule:
    """The inverse of ``str(Schedule)``: ``"@3 preempt(f2, emergency_call) ; @5 cancel"``."""
    perturbations = []
    slow = busy = heavy = False
    for part in filter(None, (p.strip() for p in text.split(";"))):
        if part == SLOW:
            slow = True
            continue
        if part == BUSY:
            busy = True
            continue
        if part == HEAVY:
            heavy = True
            continue
        at_text, _, what = part.partition(" ")
        if not at_text.startswith("@") or not what:
            raise ValueError(f"not a perturbation: {part!r} (expected '@N kind(target, by)')")
        kind, _, rest = what.partition("(")
        args = [a.strip() for a in rest.rstrip(")").split(",") if a.strip()]
        perturbations.append(
            Perturbation(
                int(at_text[1:]),
                kind.strip(),
                args[0] if args else None,
                args[1] if len(args) > 1 else None,
            )
        )
    return Schedule(tuple(perturbations), seed, slow or heavy, busy, heavy)


def _random_schedule(
    spec: FlowSpec[Any],
    against: list[FlowSpec[Any]],
    seed: int,
    points: int | None,
    busy_ok: bool = False,
) -> Schedule:
    rng = random.Random(seed)
    n_points = points if points is not None else rng.randint(2, 12)
    n = rng.randint(2, 3)
    perturbations = []
    for _ in range(n):
        at = rng.randrange(max(1, n_points))
        options = _perturbations(spec, at, list(FIELD[:3]) + list(DISPATCHERS[:1]), against)
        perturbations.append(rng.choice(options))
    slow = rng.random() < 0.5
    busy = busy_ok and slow and rng.random() < 0.5
    heavy = slow and rng.random() < 1 / 3
    return Schedule(tuple(sorted(perturbations, key=lambda p: p.at)), seed, slow, busy, heavy)


def default_against(spec: FlowSpec[Any]) -> list[FlowSpec[Any]]:
    """Every library flow, and the flow itself."""
    flows = [s for s in LIBRARY.values() if s.name not in ("take_call",)]
    if spec.name not in {s.name for s in flows}:
        flows.append(spec)
    return flows
