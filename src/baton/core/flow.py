"""Flows and sessions: one business procedure as one task (docs/design.md, Vocabulary: Go style — started and
awaited, never switched into).

A flow is an ``async def`` taking a :class:`Session` first, decorated with :func:`flow`::

    @flow(priority=Priority.ROUTINE)
    async def call(s: Session, caller: User, callee: User) -> None:
        await s.claim(caller, callee)
        await s.dial(callee, timeout=30)
        await s.connect(caller, callee)
        s.settle(P2P(caller, callee))

The :class:`Session` is the flow's whole API: claims, legs, media, waits, handlers for lost users,
compensation. Every call-control method goes through the UserManager, which checks ownership
first (``NotOwner``) and can interrupt the await when the flow loses a user (``Preempted``,
``UserHungUp``).

Life cycle
----------
``RUNNING`` → ``FINISHING`` (child tasks stopped, compensations run last-in-first-out, shielded
from cancellation and bounded by a deadline; users released; meetings it still holds destroyed)
→ ``ENDED`` (a :class:`~baton.core.events.FlowEnded` event with the outcome: completed, failed
or cancelled). :meth:`Flow.cancel` is idempotent and says what it did; :meth:`Flow.stop` returns
only after the compensations ran.
"""

from __future__ import annotations

import asyncio
import collections.abc
import contextlib
import enum
import inspect
import types
import typing
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from baton.core.errors import (
    BatonError,
    FlowCancelled,
    FlowEndedError,
    FlowInterrupted,
    FlowUsageError,
    NotOwner,
)
from baton.core.events import (
    CompensationOutcome,
    CompensationRan,
    FlowEnded,
    FlowNote,
    FlowNotified,
    FlowOutcome,
    FlowStarted,
    NoticeKind,
)
from baton.core.model import Leg, Meeting, Playback, Recording, User
from baton.core.ops import Op, notice_error
from baton.core.owner import Notice, Owner
from baton.core.port import Cause, EndReason, MeetingMode, Prompt, Tone
from baton.core.priority import Priority

if TYPE_CHECKING:
    from baton.core.callinfo import CallInfo
    from baton.core.manager import UserManager

__all__ = ["CancelResult", "Command", "Flow", "FlowSpec", "FlowState", "Session", "flow"]

R = TypeVar("R")
Handler = Callable[[FlowInterrupted], Coroutine[Any, Any, None]]
FlowFn = Callable[..., Coroutine[Any, Any, R]]


class FlowSpec(Generic[R]):
    """A registered flow procedure: the function, its name, default priority and the
    permission a principal needs to start it (checked at the edge, by the service)."""

    __slots__ = (
        "commands",
        "description",
        "fn",
        "hints",
        "name",
        "permission",
        "positional",
        "priority",
        "signature",
    )

    def __init__(
        self,
        fn: FlowFn[R],
        *,
        name: str,
        priority: int,
        permission: str | None,
        commands: dict[str, str] | None = None,
    ) -> None:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"a flow must be an async def, not {fn!r}")
        if isinstance(priority, bool) or not isinstance(priority, int):
            hint = f" (Priority.{priority})" if str(priority) in Priority.__members__ else ""
            raise TypeError(
                f"flow {name}: priority must be a Priority or an int, not {priority!r}{hint}"
            )
        if commands is not None and not (
            isinstance(commands, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in commands.items())
        ):
            raise TypeError(
                f"flow {name}: commands maps each command's name to a one-line description"
                f" ({{'end': 'end the call'}}), not {commands!r}"
            )
        self.fn = fn
        self.name = name
        self.priority = int(priority)
        self.permission = permission
        #: The commands a running instance accepts (:meth:`Flow.send`), name -> description.
        self.commands: dict[str, str] = dict(commands or {})
        self.signature = inspect.signature(fn)
        #: For starts with positional arguments only: the parameters after the session (all
        #: positional-or-keyword) and how many are required; None if the signature has others.
        self.positional = _positional(self.signature)
        #: The parameters' resolved type hints (read at the first start; None until then).
        self.hints: dict[str, Any] | None = None
        doc = inspect.getdoc(fn) or ""
        self.description = doc.split("\n\n", 1)[0].replace("\n", " ")

    def __call__(self, s: Session, /, *args: Any, **kwargs: Any) -> Coroutine[Any, Any, R]:
        """Run the procedure inline, inside another flow's session (composition)."""
        return self.fn(s, *args, **kwargs)

    def __repr__(self) -> str:
        return f"<flow {self.name} priority={self.priority}>"


def flow(
    priority: int = Priority.ROUTINE,
    *,
    name: str | None = None,
    permission: str | None = None,
    commands: dict[str, str] | None = None,
) -> Callable[[FlowFn[R]], FlowSpec[R]]:
    """Declare a flow: ``@flow(priority=Priority.FLASH, permission="barge_in")``.

    ``commands`` names the commands a running instance accepts from outside (a console's
    "add member", "mute", "end"), each with a one-line description; the flow reads them with
    :meth:`Session.command`.
    """
    if callable(priority):  # @flow with no parentheses: it would hand back this decorator
        raise TypeError(
            f"write @flow() or @flow(priority=...) above {getattr(priority, '__name__', 'it')}:"
            " @flow without its parentheses declares no flow"
        )

    def decorate(fn: FlowFn[R]) -> FlowSpec[R]:
        return FlowSpec(
            fn,
            name=name or fn.__name__,
            priority=priority,
            permission=permission,
            commands=commands,
        )

    return decorate


class Command:
    """A command sent to a running flow (:meth:`Flow.send`). The flow answers with
    :meth:`reply` or :meth:`fail`; the sender awaits :attr:`result`."""

    __slots__ = ("args", "by", "name", "result")

    def __init__(
        self, name: str, args: dict[str, Any], by: str | None, result: asyncio.Future[Any]
    ) -> None:
        self.name = name
        self.args = args
        self.by = by
        self.result = result

    def reply(self, value: Any = None) -> None:
        """Answer the sender (once; later replies are ignored)."""
        if not self.result.done():
            self.result.set_result(value)

    def fail(self, error: BaseException) -> None:
        """Answer the sender with an error (the API turns a BatonError into its code)."""
        if not self.result.done():
            self.result.set_exception(error)

    def __repr__(self) -> str:
        return f"Command({self.name!r}, {self.args!r}, by={self.by!r})"


class FlowState(enum.Enum):
    RUNNING = "running"
    FINISHING = "finishing"
    ENDED = "ended"


class CancelResult(enum.Enum):
    """What :meth:`Flow.cancel` did."""

    CANCELLED = "cancelled"  # the flow will stop and compensate
    ALREADY_CANCELLING = "already_cancelling"
    ALREADY_FINISHING = "already_finishing"  # it is compensating already: nothing to do
    ALREADY_ENDED = "already_ended"


class _Step:
    __slots__ = ("fn", "label", "users")

    def __init__(
        self, fn: Callable[[], Awaitable[object]], label: str, users: dict[User, int]
    ) -> None:
        self.fn = fn
        self.label = label
        self.users = users


class Flow(Owner):
    """A running flow: its task, priority, owned users, state and outcome (the handle that
    :meth:`UserManager.start` returns)."""

    __slots__ = (
        "_cancel_requested",
        "_children",
        "_command_news",
        "_end_by",
        "_ended",
        "_inbox",
        "_lost_log",
        "_pending",
        "_root_op",
        "args",
        "cancel_reason",
        "error",
        "kwargs",
        "manager",
        "outcome",
        "session",
        "spec",
        "state",
        "task",
        "value",
    )

    kind = "flow"

    def __init__(
        self,
        manager: UserManager,
        spec: FlowSpec[Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        priority: int | None,
    ) -> None:
        super().__init__(
            manager.new_name(spec.name), spec.priority if priority is None else priority
        )
        self.manager = manager
        self.spec = spec
        self.args = args
        self.kwargs = kwargs
        self.session = Session(self)
        self.state = FlowState.RUNNING
        self.outcome: FlowOutcome | None = None
        self.error: BaseException | None = None
        self.value: Any = None
        self.cancel_reason: str | None = None
        self.task: asyncio.Task[None] | None = None
        self._cancel_requested = False
        #: when the flow must have ended, once it was asked to end (invariant 10)
        self._end_by: float | None = None
        self._children: dict[asyncio.Task[Any], None] = {}  # an ordered set
        self._pending: list[Notice] = []
        self._root_op: Op | None = None
        self._lost_log: dict[User, str] = {}
        self._inbox: asyncio.Queue[Command] | None = None
        #: resolved when a command is queued (a dial that gives way to commands waits on it)
        self._command_news: asyncio.Future[None] | None = None
        self._ended: asyncio.Future[FlowOutcome] = manager.loop.create_future()

    # ---- life cycle

    def launch(self) -> None:
        """Publish the start and run the procedure as a supervised task (called once, by
        :meth:`UserManager.start`)."""
        args = {
            name: shown
            for name, v in _bound(self.spec, self.args, self.kwargs)
            if (shown := _show(v)) is not None
        }
        self.manager.events.publish(
            FlowStarted(flow=self.name, name=self.spec.name, priority=self.priority, args=args)
        )
        self.task = self.manager.spawn(self._main(), self.name)
        self.task.add_done_callback(self._task_done)

    @property
    def alive(self) -> bool:
        """Running (not finishing, not ended): it can still be granted users."""
        return self.state is FlowState.RUNNING

    async def _main(self) -> None:
        try:
            self.value = await self.spec.fn(self.session, *self.args, **self.kwargs)
            self.outcome = FlowOutcome.COMPLETED
        except asyncio.CancelledError:
            # The top of the flow's own task: the cancellation is *handled* here by turning it
            # into the flow's outcome; compensation follows.
            self.outcome = FlowOutcome.CANCELLED
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
        except Exception as exc:
            if self.outcome is None:
                self.outcome = FlowOutcome.FAILED
                self.error = exc
        if self.outcome is FlowOutcome.CANCELLED and self.error is not None:
            self.outcome = FlowOutcome.FAILED  # a child or handler crashed and cancelled us
        await self._finish()

    def _task_done(self, task: asyncio.Task[None]) -> None:
        # Only reached with the flow not ended if it was cancelled before its first step.
        if self.state is not FlowState.ENDED:
            self.outcome = self.outcome or FlowOutcome.CANCELLED
            self.state = FlowState.FINISHING
            self._release_all()
            self._end()

    @property
    def end_by(self) -> float | None:
        """Once the flow was cancelled or began to finish: the loop time by which it must have
        ended (``UserManager.end_timeout`` later). ``None`` while it runs undisturbed."""
        return self._end_by

    def _must_end(self) -> None:
        if self._end_by is None:
            self._end_by = self.manager.now() + self.manager.end_timeout

    async def _finish(self) -> None:
        self.state = FlowState.FINISHING
        self._must_end()
        # Child tasks are stopped in this very step, before anything else runs: one scheduled
        # but not started yet (a member's ringing task) would otherwise take its first step
        # after the body returned and ring a phone the clean-up has already passed over.
        for child in self._children:
            child.cancel()
        steps = self.session._steps
        if self._children or steps or self.meetings or self._leaves_media():
            finisher = self.manager.spawn(self._finish_async(), f"{self.name}:finish")
            cancelled = False
            while not finisher.done():
                try:
                    await asyncio.shield(finisher)
                except asyncio.CancelledError:
                    # Stopping a flow twice must not cut its compensation short (invariant 5);
                    # the finisher is bounded by its own deadlines.
                    cancelled = True
                    task = asyncio.current_task()
                    if task is not None:
                        task.uncancel()
            if cancelled and self.outcome is FlowOutcome.COMPLETED:
                self.outcome = FlowOutcome.CANCELLED
        self._release_all()
        self._end()

    async def _finish_async(self) -> None:
        end_by = self._end_by
        assert end_by is not None
        try:
            async with asyncio.timeout_at(end_by):
                await self._wind_down()
        except TimeoutError:
            self.manager.events.publish(
                CompensationRan(
                    flow=self.name,
                    step="(end)",
                    outcome=CompensationOutcome.TIMEOUT,
                    detail=f"did not end within {self.manager.end_timeout} s; released as is",
                )
            )

    async def _wind_down(self) -> None:
        children = list(self._children)
        for child in children:
            child.cancel()
        if children:
            await asyncio.wait(children, timeout=self.manager.compensation_timeout)
        await self._compensate()
        for meeting in list(self.meetings):
            await self.manager.destroy_meeting(self, meeting)
        # What the flow leaves behind is released connected-idle: a user nobody holds hears
        # nothing (a dispatcher's always-on line would otherwise hear a ringback forever).
        for user in list(self.users):
            rec = self.manager.rec(user)
            if rec.dirty and rec.live_leg is not None:
                with contextlib.suppress(BatonError):
                    await self.manager.clear(self, user)

    def _leaves_media(self) -> bool:
        for user in self.users:
            rec = self.manager.rec(user)
            if rec.dirty and rec.live_leg is not None:
                return True
        return False

    async def _compensate(self) -> None:
        steps = self.session._steps
        timeout = self.manager.compensation_timeout
        bus = self.manager.events
        while steps:
            step = steps.pop()
            lost = [u for u, epoch in step.users.items() if self.users.get(u) != epoch]
            if lost:
                bus.publish(
                    CompensationRan(
                        flow=self.name,
                        step=step.label,
                        outcome=CompensationOutcome.SKIPPED,
                        detail="no longer owns " + ", ".join(u.id for u in lost),
                    )
                )
                continue
            try:
                async with asyncio.timeout(timeout):
                    await step.fn()
            except TimeoutError:
                bus.publish(
                    CompensationRan(
                        flow=self.name,
                        step=step.label,
                        outcome=CompensationOutcome.TIMEOUT,
                        detail=f"took more than {timeout} s",
                    )
                )
            except Exception as exc:
                bus.publish(
                    CompensationRan(
                        flow=self.name,
                        step=step.label,
                        outcome=CompensationOutcome.FAILED,
                        detail=f"{type(exc).__name__}: {exc}",
                    )
                )
            else:
                ran = CompensationOutcome.RAN
                bus.publish(CompensationRan(flow=self.name, step=step.label, outcome=ran))

    def _release_all(self) -> None:
        for user in list(self.users):
            self.manager.release(self, user, "released")
        # A claim still preempting for us will find us gone and grant nobody.
        self.manager.claims.forget_claimer(self)

    def _end(self) -> None:
        inbox = self._inbox
        while inbox is not None and not inbox.empty():  # nobody will answer these now
            inbox.get_nowait().fail(FlowEndedError(f"{self.name} ended before answering"))
        for meeting in list(self.meetings):  # only if the finisher could not destroy them
            self.manager.drop_meeting(meeting)
        self.state = FlowState.ENDED
        err = None if self.error is None else f"{type(self.error).__name__}: {self.error}"
        outcome = self.outcome
        assert outcome is not None  # set by _main or _task_done before the flow ends
        self.manager.events.publish(FlowEnded(flow=self.name, outcome=outcome, error=err))
        self.manager.flows.pop(self.name, None)
        if not self._ended.done():
            self._ended.set_result(outcome)

    # ---- control

    def cancel(self, reason: str | None = None) -> CancelResult:
        """Ask the flow to stop. Idempotent: cancelling a flow that is finishing or has ended is
        a no-op that says so (docs/design.md, invariant 6 and case (c))."""
        if self.state is FlowState.ENDED:
            return CancelResult.ALREADY_ENDED
        if self.state is FlowState.FINISHING:
            return CancelResult.ALREADY_FINISHING
        if self._cancel_requested:
            return CancelResult.ALREADY_CANCELLING
        self._cancel_requested = True
        self.cancel_reason = reason
        self._must_end()
        assert self.task is not None
        self.task.cancel(f"flow {self.name} cancelled: {reason}")
        return CancelResult.CANCELLED

    def send(self, command: str, /, *, by: str | None = None, **args: Any) -> asyncio.Future[Any]:
        """Send a command to the running flow; await the returned future for its reply.

        Raises :class:`FlowUsageError` if the flow does not accept that command, and its
        :class:`FlowEndedError` if the flow is finishing or has ended; the future fails with
        :class:`FlowEndedError` if the flow ends before it reads the command.
        """
        if command not in self.spec.commands:
            accepted = ", ".join(sorted(self.spec.commands)) or "none"
            raise FlowUsageError(
                f"flow {self.spec.name} accepts no command {command!r} (it accepts: {accepted})"
            )
        if self.state is not FlowState.RUNNING:
            now = "is finishing" if self.state is FlowState.FINISHING else "has ended"
            raise FlowEndedError(f"{self.name} {now}: it takes no commands")
        fut: asyncio.Future[Any] = self.manager.loop.create_future()
        self._enqueue(Command(command, args, by, fut))
        return fut

    def _enqueue(self, cmd: Command) -> None:
        """Queue a command for :meth:`Session.command`; wake a dial that gives way to one."""
        if self._inbox is None:
            self._inbox = asyncio.Queue()
        self._inbox.put_nowait(cmd)
        news = self._command_news
        if news is not None and not news.done():
            news.set_result(None)

    async def stop(self, reason: str | None = None) -> FlowOutcome:
        """Cancel and wait until the flow has ended (its compensations ran); return the
        outcome."""
        self.cancel(reason)
        return await self.wait()

    async def wait(self) -> FlowOutcome:
        """Wait for the end; return the outcome (``completed``, ``failed``, ``cancelled``)."""
        return await asyncio.shield(self._ended)

    async def result(self) -> Any:
        """Wait for the end; return the flow's value, re-raise its error, or raise
        :class:`FlowCancelled`."""
        outcome = await self.wait()
        if outcome is FlowOutcome.FAILED and self.error is not None:
            raise self.error
        if outcome is FlowOutcome.CANCELLED:
            raise FlowCancelled(self.name, self.cancel_reason)
        return self.value

    @property
    def ended(self) -> bool:
        """The flow has ended: its compensations ran, it holds nothing."""
        return self.state is FlowState.ENDED

    # ---- owner hooks (baton.core.owner.OwnerHooks: called by the manager and its parts)

    def lost_how(self, user: User) -> str | None:
        return self._lost_log.get(user)

    def user_released(self, user: User, reason: str) -> None:
        if reason in ("released", "settled"):
            # Given away by the flow itself: nothing will be told; what it registered for the
            # user goes with it (invariant 12). A notice's handler is taken by user_lost instead.
            self._forget_user(user)

    def _forget_user(self, user: User) -> None:
        handlers = self.session._handlers
        handlers.pop((NoticeKind.PREEMPTED, user), None)
        handlers.pop((NoticeKind.HUNG_UP, user), None)
        self.session._dtmf.pop(user, None)

    def before_op(self) -> None:
        if self._pending and self.state is FlowState.RUNNING:
            task = asyncio.current_task()
            if task is self.task:
                raise notice_error(self, self._pending.pop(0))

    def raise_loss(self, user: User) -> None:
        """``user`` is not this flow's any more: raise the loss it has not been told of yet,
        if any — a notice pending, or a preemption of the user from this flow still in
        progress (the ledger has flipped, step 6 has not come). For the synchronous calls
        (settle, compensate, quiet, a claim returning) that cannot wait for step 6 as an
        operation does: the flow hears why, never a bare ``NotOwner``."""
        notice = self.take_pending(user, (NoticeKind.PREEMPTED, NoticeKind.HUNG_UP))
        if notice is None:
            p = self.manager.rec(user).preemption
            if p is not None and p.victim is self and p.notice is not None and not p.told:
                p.told = True
                notice = p.notice
        if notice is not None:
            raise notice_error(self, notice)

    def notice_raised(self, user: User) -> None:
        self._pending = [n for n in self._pending if n.user is not user]

    def take_pending(self, user: User, kinds: tuple[NoticeKind, ...]) -> Notice | None:
        """The notice of ``user``'s loss (of one of ``kinds``) not told yet, taken out of the
        queue: whoever takes it tells the flow."""
        for notice in self._pending:
            if notice.user is user and notice.kind in kinds:
                self._pending.remove(notice)
                return notice
        return None

    def op_started(self, op: Op) -> None:
        if op.task is self.task:
            self._root_op = op

    def op_ended(self, op: Op) -> None:
        if self._root_op is op:
            self._root_op = None

    def user_lost(self, user: User, notice: Notice, told: bool) -> None:
        self._lost_log[user] = notice.describe()
        bus = self.manager.events
        handler = self.session._handlers.get((notice.kind, user))
        self._forget_user(user)
        if self.state is not FlowState.RUNNING:
            return
        root = self._root_op
        same_instant = (
            handler is None
            and not told
            and root is not None
            and root.task is self.task
            and root.notice is not None
            and root.notice.kind is notice.kind
            and root.notice.by == notice.by
            and root.notice.user is not user
        )
        if same_instant:  # lost with the user the current wait is already raising for
            assert root is not None and root.notice is not None
            root.notice.also.append(user)
            via = "operation"
        elif handler is not None:
            via = "handler"
            self.session.spawn(
                handler(notice_error(self, notice)), f"{self.name}:on_{notice.kind}:{user.id}"
            )
        elif told:
            via = "operation"
        else:
            if root is not None and root.wait and root.notice is None:
                self.manager.operations.interrupt(root, notice, hold=False)
                via = "operation"
            else:
                self._pending.append(notice)
                via = "pending"
        bus.publish(
            FlowNotified(flow=self.name, user=user.id, notice=notice.kind, via=via, by=notice.by)
        )

    def digit_pressed(self, user: User, digit: str) -> bool:
        handler = self.session._dtmf.get(user)
        if handler is None or self.state is not FlowState.RUNNING:
            return False
        try:
            handler(user, digit)
        except Exception as exc:  # a broken handler fails its own flow, nobody else
            if self.error is None:
                self.error = exc
                self.outcome = FlowOutcome.FAILED
                assert self.task is not None
                self.task.cancel(f"DTMF handler failed: {exc!r}")
        return True

    def _child_done(self, task: asyncio.Task[Any]) -> None:
        self._children.pop(task, None)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and self.state is FlowState.RUNNING and self.error is None:
            self.error = exc
            self.outcome = FlowOutcome.FAILED
            assert self.task is not None
            self.task.cancel(f"child task {task.get_name()} failed")

    def __repr__(self) -> str:
        return f"<Flow {self.name} {self.state.value} priority={self.priority}>"


def _seconds(what: str, value: object) -> None:
    """A duration a flow passes must be a number of seconds: say which one is not, rather than
    fail later inside the manager's arithmetic."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FlowUsageError(f"{what} must be a number of seconds, got {value!r}")


class Session:
    """The flow's API. Every method that touches a user checks that this flow owns it, and
    raises :class:`~baton.core.errors.NotOwner` (sending nothing) if not.

    While a method is awaiting, the flow may lose a user it names: the method then raises
    :class:`~baton.core.errors.Preempted` or :class:`~baton.core.errors.UserHungUp`. A flow that
    loses a user it is *not* operating on is told by the handler it registered
    (:meth:`on_preempted`, :meth:`on_hangup`), or else by the wait it is in (``dial``,
    ``collect``, ``sleep``, ``wait_hangup``, a waited ``play``) raising the notice, or else at
    its next operation.
    """

    __slots__ = ("_dtmf", "_handlers", "_steps", "data", "flow", "manager")

    def __init__(self, flow: Flow) -> None:
        self.flow = flow
        self.manager = flow.manager
        self.data: dict[str, Any] = {}
        self._handlers: dict[tuple[NoticeKind, User], Handler] = {}
        self._dtmf: dict[User, Callable[[User, str], None]] = {}
        self._steps: list[_Step] = []

    # ---- who am I

    @property
    def name(self) -> str:
        """This flow's name (``"call#3"``), as events and errors show it."""
        return self.flow.name

    @property
    def priority(self) -> int:
        """The priority this flow claims at."""
        return self.flow.priority

    @property
    def users(self) -> list[User]:
        """The users this flow holds now."""
        return list(self.flow.users)

    def owns(self, user: User) -> bool:
        """Whether this flow holds ``user`` now (a claim still preempting does not count)."""
        rec = self.manager.rec(user)
        return rec.owner is self.flow and rec.preemption is None

    def user(self, user_id: str) -> User:
        """The user with this id (``UnknownUser`` otherwise)."""
        return self.manager.user(user_id)

    def now(self) -> float:
        """The loop's clock, in seconds (virtual time on the sim)."""
        return self.manager.now()

    # ---- ownership

    async def claim(
        self, *users: User, wait: float | None = None, reason: str | None = None
    ) -> None:
        """Take ``users`` by the preemption protocol. A user held at a lower priority is
        preempted; at an equal or higher one the claim fails at once with
        :class:`~baton.core.errors.ClaimDenied`, or queues up to ``wait`` seconds. Raises
        :class:`~baton.core.errors.Superseded` if a newer preemption overtakes this one. A user
        this flow holds already stays as it is (claiming it again is a no-op)."""
        if not users:
            raise FlowUsageError("claim needs at least one user")
        if wait is not None:
            _seconds("claim's wait", wait)
        self.flow.before_op()
        await self.manager.claim(self.flow, users, wait=wait, reason=reason)
        # A user taken (or hung up) while the claim still awaited another — its clear on a
        # slow switch — is news the claim raises: it does not return granted for a user
        # already lost (docs/design.md §Preemption, step 6).
        for user in users:
            if user not in self.flow.users:
                self.flow.raise_loss(user)

    def release(self, *users: User) -> None:
        """Give users back. Their legs stay up; a leg nobody claims is hung up after the
        grace period."""
        for user in users:
            self.manager.release(self.flow, user)

    def settle(self, callinfo: CallInfo) -> CallInfo:
        """Hand users this flow owns to a stable CallInfo (P2P or MeetingCall) that outlives
        the flow. Synchronous: the ledger changes at once."""
        callinfo.take_from(self.flow)
        return callinfo

    def callinfo_of(self, user: User) -> CallInfo | None:
        """The CallInfo holding ``user``, if one does."""
        return self.manager.callinfo_of(user)

    def on_preempted(self, user: User, handler: Handler) -> None:
        """Run ``handler(Preempted)`` in a task of this flow if ``user`` is taken by a
        higher-priority flow. For a user already lost (see :meth:`on_lost`): the handler runs
        at once if that loss was not told yet, else :class:`NotOwner`."""
        self._watch(user, handler, NoticeKind.PREEMPTED)

    def on_hangup(self, user: User, handler: Handler) -> None:
        """Run ``handler(UserHungUp)`` in a task of this flow if ``user`` hangs up. For a user
        already lost (see :meth:`on_lost`): the handler runs at once if that loss was not told
        yet, else :class:`NotOwner`."""
        self._watch(user, handler, NoticeKind.HUNG_UP)

    def on_dtmf(self, user: User, handler: Callable[[User, str], None] | None) -> None:
        """Call ``handler(user, digit)`` synchronously for each digit ``user`` presses while
        this flow holds it (instead of buffering digits for :meth:`collect`). It must not block:
        hand work to the flow's main loop (``s.post("help")``, read by :meth:`command`).
        ``None`` removes it."""
        if handler is None:
            self._dtmf.pop(user, None)
        else:
            self._dtmf[user] = handler

    def on_lost(self, user: User, handler: Handler) -> None:
        """Both :meth:`on_preempted` and :meth:`on_hangup`.

        Registered for a user this flow no longer holds — lost between a claim and this call,
        say, with no await in between to raise it — the handler runs at once (in a task of this
        flow) with the notice of that loss, which is then told: it is how the flow asked to
        hear of it. A loss the flow was told of already, or a user it never held, raises
        :class:`NotOwner`: nothing will ever call such a handler."""
        self._watch(user, handler, NoticeKind.PREEMPTED, NoticeKind.HUNG_UP)

    def _watch(self, user: User, handler: Handler, *kinds: NoticeKind) -> None:
        rec = self.manager.rec(user)
        if rec.owner is self.flow:  # held (or being taken by this flow's own claim)
            for kind in kinds:
                self._handlers[(kind, user)] = handler
            return
        notice = self.flow.take_pending(user, kinds)
        if notice is None:
            holder = rec.owner.name if rec.owner is not None else None
            raise NotOwner(user, self.name, holder, self.flow.lost_how(user))
        self.spawn(
            handler(notice_error(self.flow, notice)), f"{self.name}:on_{notice.kind}:{user.id}"
        )

    def compensate(
        self, step: Callable[[], Awaitable[object]], *users: User, label: str | None = None
    ) -> None:
        """Register an undo step. When the flow ends (however it ends) the steps run
        last-in-first-out; a step that names users runs only if the flow still owns all of them
        under the epoch it has now (it lost none of them in between)."""
        epochs: dict[User, int] = {}
        for user in users:
            epoch = self.flow.users.get(user)
            if epoch is None or self.manager.rec(user).owner is not self.flow:
                self.flow.raise_loss(user)  # lost and not told yet: that is what it must hear
                raise NotOwner(user, self.name, None, self.flow.lost_how(user))
            epochs[user] = epoch
        name: str = label or getattr(step, "__name__", None) or "step"
        self._steps.append(_Step(step, name, epochs))

    def quiet(self, user: User, why: str | None) -> None:
        """Declare that ``user``, whom this flow holds, may hear nothing for now: a wait the
        flow chose (a PTT member while nobody has the floor, a party parked on purpose). Without
        it a connected user who hears nobody and is played nothing is *dead air* (invariant
        11). ``None`` ends the declaration; losing the user ends it too."""
        rec = self.manager.rec(user)
        self.flow.before_op()  # a notice pending about a lost user is raised here, as by an op
        if rec.owner is not self.flow:
            self.flow.raise_loss(user)
        self.manager.ledger.fence(self.flow, rec, self.flow.lost_how(user))
        rec.quiet = why

    # ---- legs

    def leg_of(self, user: User) -> Leg | None:
        """The user's live leg, if any."""
        return self.manager.leg_of(user)

    def partner_of(self, user: User) -> User | None:
        """The user ``user`` is bridged to now, if any (whoever owns them)."""
        return self.manager.rec(user).bridge

    def meeting_of(self, user: User) -> Meeting | None:
        """The meeting ``user`` is in now, if any."""
        return self.manager.rec(user).meeting

    def state_of(self, user: User) -> str:
        """idle, dialling, ringing, connected, talking or meeting."""
        return self.manager.state_of(user)

    def owner_of(self, user: User) -> Owner | None:
        """Who holds ``user`` now (a Flow, a CallInfo, or None)."""
        return self.manager.owner_of(user)

    async def dial(self, user: User, *, timeout: float = 30.0, caller: User | None = None) -> Leg:
        """Call ``user`` and wait for the answer (or join the call already ringing there).
        Raises ``NoAnswer``, ``Busy``, ``Rejected``, ``Unreachable``, ``Incompatible``."""
        _seconds("dial's timeout", timeout)
        return await self.manager.dial(self.flow, user, timeout=timeout, caller=caller)

    async def dial_or_command(
        self, user: User, *, timeout: float = 30.0, caller: User | None = None
    ) -> Leg | Command:
        """:meth:`dial`, giving way to a command: the first command sent to the flow while
        ``user``'s phone rings is returned (taken, as :meth:`command` takes it) and the phone
        rings on — the flow decides: hang it up (a ``cancel``), or wait on with :meth:`dial`.
        A command waiting already is returned at once, before anything rings; one arriving in
        the same instant as the answer is returned too (the leg is connected then). Otherwise
        the answered leg, or what :meth:`dial` raises. For a flow whose commands must take
        effect while a phone rings, not once it is answered or gives up."""
        _seconds("dial's timeout", timeout)
        flow = self.flow
        deadline = self.now() + timeout
        while True:
            if self.queued_commands():
                cmd = await self.command()
                assert cmd is not None  # no timeout: a command
                return cmd
            news: asyncio.Future[None] = self.manager.loop.create_future()
            flow._command_news = news
            try:
                leg = await self.manager.dial_until(
                    flow, user, news, timeout=max(0.0, deadline - self.now()), caller=caller
                )
            finally:
                if flow._command_news is news:
                    flow._command_news = None
            if leg is not None:
                return leg
            # a command was queued (read above, unless another task of the flow took it)

    async def answer(self, user: User) -> Leg:
        """Answer ``user``'s inbound call."""
        return await self.manager.answer(self.flow, user)

    async def hangup(
        self, user: User, cause: Cause = Cause.NORMAL, reason: EndReason | None = None
    ) -> None:
        """End ``user``'s call. The user stays yours (idle) until released. ``reason`` says who
        or what ended it (``EndReason.preempted(s.name)`` for a preemption); the switch renders
        it for its wire."""
        await self.manager.hangup(self.flow, user, cause, reason)

    async def wait_hangup(self, user: User) -> Cause:
        """Wait until ``user``'s call ends; return why."""
        return await self.manager.wait_hangup(self.flow, user)

    # ---- media

    async def connect(self, a: User, b: User) -> None:
        """Bridge two connected users: each hears the other."""
        await self.manager.connect(self.flow, a, b)

    async def meeting(
        self, *members: User, id: str | None = None, mode: MeetingMode = MeetingMode.SPEAK
    ) -> Meeting:
        """Create a meeting this flow holds and put ``members`` in it. It is destroyed when the
        flow ends unless settled into a MeetingCall."""
        return await self.manager.open_meeting(self.flow, members, mode, id)

    async def join(
        self,
        meeting: Meeting,
        user: User,
        mode: MeetingMode = MeetingMode.SPEAK,
        *,
        whisper_to: User | None = None,
    ) -> None:
        """Put ``user`` in ``meeting`` (or change its mode there)."""
        await self.manager.join(self.flow, meeting, user, mode, whisper_to)

    async def leave(self, meeting: Meeting, user: User) -> None:
        """Take ``user`` out of ``meeting`` (connected-idle afterwards)."""
        await self.manager.leave(self.flow, meeting, user)

    async def end_meeting(self, meeting: Meeting) -> None:
        """Destroy a meeting this flow holds; members stay up, connected-idle."""
        await self.manager.destroy_meeting(self.flow, meeting)

    async def play(
        self,
        target: User | Meeting,
        media: Tone | Prompt | str,
        *,
        loop: bool = False,
        wait: bool = True,
    ) -> Playback:
        """Play a tone (``"preemption"`` or ``Tone(...)``) or a prompt (``Prompt(path)``) to a
        user or a meeting this flow holds; wait for the end unless ``wait=False`` or
        ``loop=True``."""
        if isinstance(media, str):
            media = Tone(media)
        if not isinstance(media, (Tone, Prompt)):
            raise FlowUsageError(
                f"play takes a Tone, a Prompt or a tone's name, got {type(media).__name__} "
                f"{media!r}"
            )
        return await self.manager.play(self.flow, target, media, loop=loop, wait=wait)

    async def stop(self, playback: Playback) -> None:
        """Stop a playback (a no-op if it has finished)."""
        await self.manager.stop_play(self.flow, playback)

    async def record(self, target: User | Meeting, path: str) -> Recording:
        """Start recording a user (what it says and hears) or a meeting (the full mix) to the
        WAV file ``path``. It stops with :meth:`stop_recording`, or when the call or meeting
        ends, or when the user is cleared (preempted)."""
        return await self.manager.record(self.flow, target, path)

    async def stop_recording(self, recording: Recording) -> None:
        """Stop a recording; ``recording.seconds`` then holds its length."""
        await self.manager.stop_record(self.flow, recording)

    async def clear(self, user: User) -> None:
        """Return ``user`` to connected-idle: no playback, no recording, no bridge or meeting."""
        await self.manager.clear(self.flow, user)

    async def collect(
        self,
        user: User,
        *,
        max_digits: int = 1,
        timeout: float = 10.0,
        terminators: str = "#",
    ) -> str:
        """Collect DTMF digits from ``user``."""
        _seconds("collect's timeout", timeout)
        return await self.manager.collect(
            self.flow, user, max_digits=max_digits, timeout=timeout, terminators=terminators
        )

    async def sleep(self, seconds: float) -> None:
        """Sleep; news about lost users is delivered here."""
        _seconds("sleep", seconds)
        await self.manager.sleep(self.flow, seconds)

    def post(self, command: str, /, **args: Any) -> asyncio.Future[Any]:
        """Put a command in this flow's own inbox (read by :meth:`command`), whatever its
        name: how a handler or a DTMF callback hands work to the flow's main loop."""
        flow = self.flow
        fut: asyncio.Future[Any] = self.manager.loop.create_future()
        # a handler posting to its own flow rarely awaits the answer: a failure (the flow ended
        # first) must not be logged as "never retrieved"
        fut.add_done_callback(_retrieve)
        flow._enqueue(Command(command, args, self.name, fut))
        return fut

    async def wait(self, fut: asyncio.Future[R], timeout: float | None = None) -> R | None:
        """Wait for a future (a queue assignment, another flow's signal) as an interruptible
        wait: news about lost users is delivered here. ``None`` after ``timeout``."""
        return await self.manager.wait_for(self.flow, fut, timeout)

    async def command(self, timeout: float | None = None) -> Command | None:
        """Wait for the next command sent to this flow (:meth:`Flow.send`); ``None`` after
        ``timeout`` seconds. News about lost users is delivered here too."""
        flow = self.flow
        if flow._inbox is None:
            flow._inbox = asyncio.Queue()
        inbox = flow._inbox

        async def get() -> Command | None:
            if timeout is None:
                return await inbox.get()
            try:
                async with asyncio.timeout(timeout):
                    return await inbox.get()
            except TimeoutError:
                return None

        return await self.manager.operations.run(flow, "command", (), get, wait=True)

    def queued_commands(self) -> list[str]:
        """The names of the commands waiting to be read by :meth:`command`, oldest first.
        Reading them takes none: :meth:`command` still returns each, in that order.

        For a flow about to do something a waiting command makes pointless — ring members of
        a call whose ``end`` is already queued (its own :meth:`command` loop would read that
        ``end`` only after the phones rang)."""
        inbox = self.flow._inbox
        if inbox is None:
            return []
        # asyncio.Queue has no public way to look inside: take everything and put it back, in
        # one synchronous step (no task can run in between, and the order is kept)
        waiting = [inbox.get_nowait() for _ in range(inbox.qsize())]
        for cmd in waiting:
            inbox.put_nowait(cmd)
        return [cmd.name for cmd in waiting]

    # ---- structure

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task[Any]:
        """Run ``coro`` as a child task of this flow. It is cancelled when the flow ends; if it
        fails, the flow fails."""
        if self.flow.state is not FlowState.RUNNING:
            coro.close()
            raise FlowUsageError(f"{self.name} is {self.flow.state.value}: no new tasks")
        task = self.manager.spawn(coro, name or f"{self.name}:child")
        self.flow._children[task] = None
        task.add_done_callback(self.flow._child_done)
        return task

    def note(self, text: str) -> None:
        """Write a line in the flow's trace (shown by ``baton demo`` and the console)."""
        self.manager.events.publish(FlowNote(flow=self.name, text=text))


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if fut.done() and not fut.cancelled():
        fut.exception()


def _bound(
    spec: FlowSpec[Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> list[tuple[str, Any]]:
    """The flow's arguments by name (the session excluded); bad arguments fail at start."""
    fast = spec.positional
    if not kwargs and fast is not None and fast[1] <= len(args) <= len(fast[0]):
        # What Signature.bind gives for such a start, without its cost (a flow per call).
        arguments = list(zip(fast[0], args, strict=False))
    else:
        try:
            bound = spec.signature.bind(None, *args, **kwargs)
        except TypeError as exc:
            raise FlowUsageError(f"bad arguments for flow {spec.name}: {exc}") from None
        first = next(iter(spec.signature.parameters))
        arguments = [(k, v) for k, v in bound.arguments.items() if k != first]
    if spec.hints is None:
        try:
            spec.hints = typing.get_type_hints(spec.fn)
        except Exception:  # a hint naming what the module cannot resolve: no check
            spec.hints = {}
    hints = spec.hints
    parameters = None if fast is not None else spec.signature.parameters
    for name, given in arguments:
        # (all positional-or-keyword when the signature has the fast form: no lookup per call)
        kind = (
            inspect.Parameter.POSITIONAL_OR_KEYWORD if parameters is None else parameters[name].kind
        )
        values = (
            list(given)
            if kind is inspect.Parameter.VAR_POSITIONAL
            else list(given.values())
            if kind is inspect.Parameter.VAR_KEYWORD
            else (given,)
        )
        for value in values:
            wanted = _wanted(hints.get(name), value)
            if wanted is not None:
                raise FlowUsageError(
                    f"bad arguments for flow {spec.name}: {name} must be {wanted}, "
                    f"not {type(value).__name__} {value!r}"
                )
    return arguments


def _positional(signature: inspect.Signature) -> tuple[tuple[str, ...], int] | None:
    params = list(signature.parameters.values())[1:]
    if any(p.kind is not inspect.Parameter.POSITIONAL_OR_KEYWORD for p in params):
        return None
    required = sum(1 for p in params if p.default is inspect.Parameter.empty)
    if any(p.default is inspect.Parameter.empty for p in params[required:]):
        return None
    return tuple(p.name for p in params), required


def _wanted(hint: Any, value: Any) -> str | None:
    """What ``value`` should have been for a parameter hinted ``hint``; None when it fits (or
    the hint is not one checked here: users, meetings, lists of users, numbers). A user passed
    by id would otherwise fail deep inside the flow, far from the mistake."""
    if hint is User or hint is Meeting:  # the common case first: no typing calls for it
        if isinstance(value, hint):
            return None
        return f"a {hint.__name__} object (look it up by id: manager.user(id), world[id])"
    if hint is None:
        return None
    origin, params = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in params:
            return None
        rest = [p for p in params if p is not type(None)]
        return _wanted(rest[0], value) if len(rest) == 1 else None
    if hint is User or hint is Meeting:
        if isinstance(value, hint):
            return None
        return f"a {hint.__name__} object (look it up by id: manager.user(id), world[id])"
    if origin in (list, tuple, collections.abc.Sequence) and params and params[0] is User:
        if isinstance(value, list | tuple) and all(isinstance(v, User) for v in value):
            return None
        return "a list of User objects (look them up by id: manager.user(id), world[id])"
    if hint is float or hint is int:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return None
        return "a number"
    return None


def _show(value: Any) -> Any:
    """A flow argument as the event stream, the journal and the call records keep it: a JSON
    value of its type — ``True`` not ``"True"``, ``30.0`` not ``"30.0"`` — users and meetings by
    id, enums by value (priorities by name), lists as lists; ``None`` for an unset one (left
    out)."""
    if value is None:
        return None
    if isinstance(value, User | Meeting):
        return value.id
    if isinstance(value, Priority):
        return value.name
    if isinstance(value, enum.Enum):
        plain = value.value
        return plain if isinstance(plain, str | int | float | bool) else value.name.lower()
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple | set | frozenset):
        return [x for v in value if (x := _show(v)) is not None]
    ident = getattr(value, "id", None) or getattr(value, "name", None)
    return ident if isinstance(ident, str) else str(value)
