"""Flows, the use cases: list the library, start a flow by name, command or cancel a running one,
trace one. Permissions are checked here, every decision is audited, and nothing is acknowledged
before the journal holds it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from baton.core import (
    BatonError,
    CancelResult,
    Flow,
    FlowSpec,
    FlowUsageError,
    Meeting,
    Priority,
    User,
)
from baton.core.events import ClaimQueued, Event, FlowEnded, OwnerChanged
from baton.core.priority import priority_name
from baton.service.auth.permissions import END_COMMANDS, Principal
from baton.service.config import parse_priority
from baton.service.errors import (
    Conflict,
    Forbidden,
    GatewayTimeout,
    NotFound,
    ServiceUnavailable,
    Unprocessable,
    from_core,
)
from baton.service.events.codec import event_json
from baton.service.flows.convert import (
    ArgumentError,
    Resolver,
    call_args,
    convert,
    describe,
    startable,
    user_argument,
)
from baton.service.flows.trace import build_trace
from baton.service.records.present import iso
from baton.service.runtime import FlowInfo, Service
from baton.service.store.records import flow_by_name, flow_events

__all__ = ["FlowsService"]

#: How long the API waits for a running flow to answer a command.
COMMAND_TIMEOUT = 15.0
#: How long a start waits for the flow's first step (its claims).
FIRST_STEP = 2.0
#: How long a start with ``wait`` waits for the flow to end.
WAIT_END = 120.0


def _command_takes_user(description: str) -> bool:
    # The library's convention: a command that names a member ends its description "(user)".
    return "(user)" in description


class FlowsService:
    """The flow use cases on one :class:`~baton.service.runtime.Service`."""

    def __init__(self, service: Service) -> None:
        self.service = service

    # ---- the library

    def resolver(self) -> Resolver:
        svc = self.service
        resources: dict[type, dict[str, object]] = {}
        for q in svc.queues.values():
            resources.setdefault(type(q), {})[q.name] = q
        groups = {g.id: g.members for g in svc.config.groups}
        return Resolver(
            svc.manager.user, svc.manager.meeting, groups, resources, svc.config.prompts
        )

    def spec(self, name: str) -> FlowSpec[Any]:
        spec = self.service.library.get(name)
        if spec is None:
            raise NotFound(
                f"no flow {name!r} in the library", id="unknown-flow", details={"flow": name}
            )
        return spec

    def library(self, principal: Principal) -> list[dict[str, Any]]:
        """Every library flow with its parameters, commands and whether ``principal`` may start
        it (and up to which priority)."""
        resources = self.resolver().resources
        out = []
        for spec in self.service.library.values():
            params = describe(spec, resources.keys())
            permission = spec.permission or "start"
            allowed = principal.may(permission) and spec.priority <= principal.max_priority
            out.append(
                {
                    "name": spec.name,
                    "description": spec.description,
                    "priority": spec.priority,
                    "priority_name": priority_name(spec.priority),
                    "permission": permission,
                    "params": [p.to_json() for p in params],
                    "commands": [
                        {"name": c, "description": d, "takes_user": _command_takes_user(d)}
                        for c, d in spec.commands.items()
                    ],
                    "startable": startable(params),
                    "allowed": allowed,
                    "resources": {
                        p.name: sorted(resources.get(p.annotation, {}))
                        for p in params
                        if p.kind == "resource"
                    },
                }
            )
        return out

    # ---- running flows

    def view(self, flow: Flow, info: FlowInfo | None = None) -> dict[str, Any]:
        """What the API shows of ``flow``; ``info``: what the service tracked of it, kept by
        a caller that outlives the flow (the service forgets a flow when it ends)."""
        info = info or self.service.flows.get(flow.name)
        return {
            "name": flow.name,
            "flow": flow.spec.name,
            "priority": flow.priority,
            "priority_name": priority_name(flow.priority),
            "state": flow.state.value,
            "users": sorted(u.id for u in flow.users),
            "meetings": sorted(m.id for m in flow.meetings),
            "args": info.args if info else {},
            "started_at": iso(info.started_at) if info else None,
            "started_by": info.started_by if info else None,
            "commands": [
                {"name": c, "description": d, "takes_user": _command_takes_user(d)}
                for c, d in flow.spec.commands.items()
            ],
            "permission": flow.spec.permission or "start",
        }

    def running(self) -> list[dict[str, Any]]:
        flows = sorted(self.service.manager.flows.values(), key=lambda f: (-f.priority, f.name))
        return [self.view(f) for f in flows]

    def get(self, name: str) -> Flow:
        flow = self.service.manager.flows.get(name)
        if flow is None:
            raise NotFound(f"no running flow {name!r}", id="unknown-flow", details={"flow": name})
        return flow

    # ---- acting

    async def start(
        self,
        principal: Principal,
        name: str,
        args: Any,
        priority: Any,
        remote: str | None,
        *,
        wait: bool = False,
    ) -> dict[str, Any]:
        """Start library flow ``name`` for ``principal`` and return its view once it took its
        first step (claimed a user, queued a claim, or ended) — or, with ``wait``, once it
        ended (``outcome`` and ``value``).

        Raises 404 (unknown flow), 403 (not allowed, or the priority is above the principal's
        cap), 422 (bad arguments, naming the field), 409 with the core's code if the flow failed
        at once (``claim-denied``, ``busy``, …), 503 (the service is stopping, or the store is
        down)."""
        svc = self.service
        spec = self.spec(name)
        details: dict[str, Any] = {"flow": name, "args": args, "priority": priority}
        try:
            principal.require(spec.permission or "start", f"start {name}")
            level = spec.priority if priority is None else _level(priority, "priority")
            principal.require_priority(level, "start flows")
            kwargs = self._convert(spec, args)
            self._check_arguments(principal, spec, kwargs)
        except Forbidden as exc:
            self.service.audit(
                principal, "flow.start", name, "denied", {**details, "error": exc.id}, remote=remote
            )
            await svc.journal.sync()
            raise
        try:
            args_, keywords = call_args(spec, kwargs)
            flow = svc.manager.start(spec, *args_, priority=level, **keywords)
        except FlowUsageError as exc:
            if not svc.started:
                raise ServiceUnavailable("the service is stopping", id="stopping") from None
            raise Unprocessable(str(exc), details={"field": "args"}) from None
        svc.note_started_by(flow.name, principal.user_id)
        info = svc.flows.get(flow.name)  # the answer may come after the flow ended
        self.service.audit(
            principal, "flow.start", flow.name, "ok", {**details, "priority": level}, remote=remote
        )
        # A flow claims its users at once: wait for that (or its end), so a conflict the core
        # raises at the first step is answered here as a 409 rather than lost in the log.
        await self._first_step(flow, within=WAIT_END if wait else FIRST_STEP)
        await svc.journal.sync()
        if flow.ended and flow.outcome == "failed" and isinstance(flow.error, BatonError):
            raise from_core(flow.error, flow=flow.name)
        view = self.view(flow, info)
        view["outcome"] = flow.outcome if flow.ended else None
        if flow.ended and flow.outcome == "failed" and flow.error is not None:
            view["error"] = f"{type(flow.error).__name__}: {flow.error}"
        if flow.ended and flow.outcome == "completed":
            view["value"] = _jsonable(flow.value)
        return view

    def _convert(self, spec: FlowSpec[Any], args: Any) -> dict[str, Any]:
        try:
            return convert(spec, args if args is not None else {}, self.resolver())
        except ArgumentError as exc:
            raise Unprocessable(
                exc.message if exc.field in exc.message else f"{exc.field}: {exc.message}",
                id=exc.id,
                details={"field": exc.field, **exc.details},
            ) from None

    def _check_arguments(
        self, principal: Principal, spec: FlowSpec[Any], kwargs: dict[str, Any]
    ) -> None:
        """The principal may act for every user the arguments name, and a priority given as an
        argument (a ``Priority`` parameter, or an integer one named ``priority``) is capped like
        the start's own."""
        principal.require_users(involved_users(kwargs.values()), f"start {spec.name}")
        for p in describe(spec, self.resolver().resources.keys()):
            value = kwargs.get(p.name)
            if value is None:
                continue
            if p.kind == "priority" or (p.kind == "integer" and p.name == "priority"):
                level = _level(value, f"args.{p.name}")
                principal.require_priority(level, "start flows")

    async def _first_step(self, flow: Flow, *, within: float) -> None:
        """Wait until ``flow`` holds a user, queues a claim or ends (``within`` bounds it); with
        :data:`WAIT_END`, until it ends."""
        bus = self.service.manager.events
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        to_end = within == WAIT_END

        def watch(ev: Event) -> None:
            if done.done():
                return
            ended = isinstance(ev, FlowEnded) and ev.flow == flow.name
            stepped = (isinstance(ev, OwnerChanged) and ev.new == flow.name) or (
                isinstance(ev, ClaimQueued) and ev.claimer == flow.name
            )
            if ended or (stepped and not to_end):
                done.set_result(None)

        if flow.ended or (not to_end and flow.users):
            return
        unsubscribe = bus.subscribe(watch)
        try:
            async with asyncio.timeout(within):
                await asyncio.shield(done)
        except TimeoutError:
            pass
        finally:
            unsubscribe()

    async def cancel(
        self, principal: Principal, name: str, reason: str | None, remote: str | None
    ) -> dict[str, Any]:
        """Cancel a running flow (idempotent: says what it did — ``already_ended`` for a flow
        of this run that has ended, checked against the same rules from its record)."""
        flow = self.service.manager.flows.get(name)
        if flow is None:
            return await self._cancel_ended(principal, name, remote)
        await self._control(principal, flow, None, remote)
        result = flow.cancel(reason or f"cancelled by {principal.user_id}")
        self.service.audit(
            principal,
            "flow.cancel",
            name,
            "ok",
            {"reason": reason, "result": result.value},
            remote=remote,
        )
        await self.service.journal.sync()
        return {"flow": name, "result": result.value}

    async def _cancel_ended(
        self, principal: Principal, name: str, remote: str | None
    ) -> dict[str, Any]:
        """Cancelling a flow that has ended is a no-op that says so (as ``Flow.cancel`` does),
        for whoever could have cancelled it while it ran; a name this run never had is 404."""
        await self._check_ended(principal, name, None, remote)
        result = CancelResult.ALREADY_ENDED.value
        self.service.audit(principal, "flow.cancel", name, "ok", {"result": result}, remote=remote)
        await self.service.journal.sync()
        return {"flow": name, "result": result}

    async def _check_ended(
        self, principal: Principal, name: str, command: str | None, remote: str | None
    ) -> None:
        """A flow of this run that has ended, looked up in its record and checked against the
        rules it was controlled by while it ran (``command``, or None for a cancel); a name
        this run never had is 404, one the principal could not have controlled 403."""
        svc = self.service
        await svc.journal.sync()  # the record of a flow started a moment ago
        async with svc.store.read() as conn:
            record = await flow_by_name(conn, svc.run_id, name)
        if record is None:
            raise NotFound(f"no running flow {name!r}", id="unknown-flow", details={"flow": name})
        spec = svc.library.get(record["name"])
        try:
            principal.require_control(
                None if spec is None else spec.permission, record["priority"], None
            )
            if (
                spec is not None
                and spec.permission == "emergency"
                and (command is None or command in END_COMMANDS)
            ):
                principal.require("end_emergency", "end an emergency")
            if record["started_by"] != principal.user_id:
                involved = [
                    *(record["users"] or []),
                    *_named_users(record["args"] or {}, svc.user_ids()),
                ]
                action = f"send {command!r} to" if command else "cancel"
                principal.require_users(involved, f"{action} {name}")
        except Forbidden as exc:
            kind = "flow.command" if command else "flow.cancel"
            details = (
                {"error": exc.id} if command is None else {"command": command, "error": exc.id}
            )
            svc.audit(principal, kind, name, "denied", details, remote=remote)
            await svc.journal.sync()
            raise

    async def _control(
        self,
        principal: Principal,
        flow: Flow,
        command: str | None,
        remote: str | None,
        args: dict[str, Any] | None = None,
    ) -> None:
        """May ``principal`` command (or cancel, ``command`` None) ``flow``? Audits a refusal.

        Whom for: a command naming users (``{"user": "unit1"}``) acts on them — they must be in
        scope, and the caller must have started the flow, be one of its users, or have all of
        them in scope (a member presses its own PTT key; a stranger does not command a call it
        has no part in). Cancelling, or a command naming no one (``end``), acts on every user
        of the flow: all in scope, unless the caller started it."""
        try:
            principal.require_control(flow.spec.permission, flow.priority, command)
            if flow.spec.permission == "emergency" and (command is None or command in END_COMMANDS):
                principal.require("end_emergency", "end an emergency")
            action = f"send {command!r} to" if command else "cancel"
            info = self.service.flows.get(flow.name)
            starter = info is not None and info.started_by == principal.user_id
            named = _named_users(args or {}, self.service.user_ids()) if command else []
            principal.require_users(named, f"{action} {flow.name}")
            involved = flow_users(flow)
            member = bool(named) and principal.user_id in involved
            if not starter and not member:
                principal.require_users(involved, f"{action} {flow.name}")
        except Forbidden as exc:
            self.service.audit(
                principal,
                "flow.command" if command else "flow.cancel",
                flow.name,
                "denied",
                {"command": command, "error": exc.id},
                remote=remote,
            )
            await self.service.journal.sync()
            raise

    async def command(
        self,
        principal: Principal,
        name: str,
        command: str,
        args: Any,
        remote: str | None,
    ) -> dict[str, Any]:
        """Send ``command`` to a running flow and return its reply; 409 ``flow-ended`` for a
        flow of this run that has ended (nobody will answer it)."""
        flow = self.service.manager.flows.get(name)
        if flow is None:
            await self._check_ended(principal, name, command, remote)
            raise Conflict(
                f"{name} has ended: it takes no commands", id="flow-ended", details={"flow": name}
            )
        if command not in flow.spec.commands:
            accepted = ", ".join(sorted(flow.spec.commands)) or "none"
            raise Unprocessable(
                f"flow {flow.spec.name} takes no command {command!r} (it takes: {accepted})",
                id="unknown-command",
                details={"field": "command", "commands": sorted(flow.spec.commands)},
            )
        if args is None:
            args = {}
        if not isinstance(args, dict) or not all(
            isinstance(k, str) and k.isidentifier() for k in args
        ):
            raise Unprocessable(
                "args must be an object of named arguments", details={"field": "args"}
            )
        if _command_takes_user(flow.spec.commands[command]):
            # The user a command names is an argument: 422 naming ``args.user`` when it is
            # missing, not an id, or no one's (as at a start), never the flow's own error.
            field = "args.user"
            problem: ArgumentError | None = None
            if "user" not in args:
                problem = ArgumentError(field, f"field required (command {command} names a user)")
            else:
                try:
                    user_argument(args["user"], self.resolver(), field)
                except ArgumentError as exc:
                    problem = exc
            if problem is not None:
                raise Unprocessable(
                    f"{problem.field}: {problem.message}",
                    id=problem.id,
                    details={"field": problem.field, **problem.details},
                )
        await self._control(principal, flow, command, remote, args)
        try:
            fut = flow.send(command, by=principal.user_id, **args)
        except FlowUsageError as exc:
            raise from_core(exc, flow=name) from None
        audit_details = {"command": command, "args": args}
        try:
            async with asyncio.timeout(COMMAND_TIMEOUT):
                reply = await asyncio.shield(fut)
        except TimeoutError:
            self.service.audit(
                principal, "flow.command", name, "failed", audit_details, remote=remote
            )
            raise GatewayTimeout(
                f"{name} did not answer {command!r} within {COMMAND_TIMEOUT:g} s",
                id="command-timeout",
                details={"flow": name},
            ) from None
        except BatonError as exc:
            self.service.audit(
                principal,
                "flow.command",
                name,
                "failed",
                {**audit_details, "error": exc.code},
                remote=remote,
            )
            await self.service.journal.sync()
            raise from_core(exc, flow=name) from None
        self.service.audit(principal, "flow.command", name, "ok", audit_details, remote=remote)
        await self.service.journal.sync()
        return {"flow": name, "command": command, "reply": _jsonable(reply)}

    # ---- traces

    async def trace(self, name: str) -> dict[str, Any]:
        """The trace of a running flow, or of the newest flow of that name in this run."""
        svc = self.service
        history = [event_json(e) for e in svc.manager.events.history]
        first = next(
            (
                i
                for i, d in enumerate(history)
                if d["kind"] == "flow.started" and d.get("flow") == name
            ),
            None,
        )
        if first is not None:
            return build_trace(name, history[first:])
        async with svc.store.read() as conn:
            rows = await flow_events(conn, svc.run_id, name)
        if not rows:
            raise NotFound(
                f"no flow {name!r} in this run", id="unknown-flow", details={"flow": name}
            )
        return build_trace(name, rows)


def _level(value: Any, field: str) -> int:
    """A priority from the API (a level name or an integer, never a boolean), in range."""
    try:
        level = parse_priority(value)
    except ValueError as exc:
        raise Unprocessable(str(exc), details={"field": field}) from None
    if not Priority.ROUTINE <= level <= 1000:
        raise Unprocessable(f"priority {level} is out of range", details={"field": field})
    return level


def involved_users(values: Iterable[Any]) -> list[str]:
    """The ids of every user among flow arguments, in order: a ``User``, the users of a list
    (or tuple, set, dict's values), the members of a ``Meeting`` — whatever the parameter is
    called, so a plug-in's arguments are covered like the library's."""
    out: dict[str, None] = {}

    def walk(value: Any, depth: int) -> None:
        if depth > 4:
            return
        if isinstance(value, User):
            out[value.id] = None
        elif isinstance(value, Meeting):
            for member in value.members:
                out[member.id] = None
        elif isinstance(value, list | tuple | set | frozenset):
            for v in value:
                walk(v, depth + 1)
        elif isinstance(value, dict):
            for v in value.values():
                walk(v, depth + 1)

    for v in values:
        walk(v, 0)
    return list(out)


def flow_users(flow: Flow) -> list[str]:
    """Every user a running flow involves: its arguments' users, the users it holds, the
    members of its meetings."""
    return involved_users(
        [*flow.args, *flow.kwargs.values(), list(flow.users), list(flow.meetings)]
    )


def _named_users(args: dict[str, Any], known: Iterable[str]) -> list[str]:
    """The user ids a command's JSON arguments name (a string or a list of strings)."""
    ids = set(known)
    out: list[str] = []
    for v in args.values():
        for item in v if isinstance(v, list) else [v]:
            if isinstance(item, str) and item in ids:
                out.append(item)
    return out


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    ident = getattr(value, "id", None)
    if isinstance(ident, str):
        return ident
    return str(value)
