"""From JSON to a flow's typed parameters, read from ``spec.signature`` — generically, so a flow
added to the library is startable from the API and the console without a line changed here.

Parameter kinds (what :func:`describe` reports and :func:`convert` accepts):

============  ====================================  ===========================================
kind          Python annotation                     JSON
============  ====================================  ===========================================
``user``      ``User``                              a user id (``"alice"``)
``users``     ``list[User]``, ``tuple[User, ...]``  a list of user ids, or a group id (string)
``meeting``   ``Meeting``                           a live meeting's id
``resource``  a type the service provides (the      its name (``"dispatch"``); left out, the
              dispatcher queue)                     service's only one (``null``: none)
``enum``      an ``Enum`` or a ``Literal``          a value (``"preempt"``) or a member name
``priority``  ``Priority``                          a level name (``"FLASH"``) or an integer
``integer``   ``int``                               an integer (not a boolean)
``number``    ``float``                             a number; ``unit`` is ``"s"`` for durations
``duration``  ``datetime.timedelta``                seconds (a number)
``boolean``   ``bool``                              ``true`` / ``false``
``string``    ``str``                               a string
``prompt``    ``Prompt`` (a WAV to play)            a file name in the prompts folder
============  ====================================  ===========================================

``X | None`` makes a parameter ``nullable`` (JSON ``null`` accepted). A parameter of any other
type is ``unsupported``: the flow can still be started if it has a default, and is marked not
startable from the API otherwise.

Every refusal is an :class:`ArgumentError` naming the field (``args.members[2]``) — the API turns
it into a 422.
"""

from __future__ import annotations

import datetime
import enum
import inspect
import math
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from baton.core import FlowSpec, Meeting, Priority, Session, UnknownMeeting, UnknownUser, User
from baton.core.port import Prompt
from baton.service.config import parse_priority

__all__ = [
    "ArgumentError",
    "Param",
    "Resolver",
    "call_args",
    "convert",
    "describe",
    "is_user_list",
    "param_types",
    "unwrap_optional",
    "user_argument",
]

#: What a prompt's name may look like (a file name, never a path).
_PROMPT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

#: Number parameters whose name says they are a time span (shown with the unit ``s``).
_DURATION_NAME = re.compile(
    r"(^|_)(ring|timeout|after|seconds|wait|delay|interval|gather|within|time|burst)($|_)"
)


class ArgumentError(Exception):
    """A flow argument is missing, unknown or of the wrong type. ``field`` is its path."""

    def __init__(
        self, field: str, message: str, *, id: str = "invalid-argument", **details: Any
    ) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.id = id
        self.details = details


@dataclass(frozen=True, slots=True)
class Param:
    """One parameter of a flow, as the API and the console's forms see it."""

    name: str
    kind: str
    required: bool
    nullable: bool
    default: Any  # JSON-ready; None if there is none
    has_default: bool
    choices: tuple[str, ...] | None = None
    unit: str | None = None
    type_name: str = ""
    annotation: Any = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "required": self.required,
            "nullable": self.nullable,
            "default": self.default,
            "has_default": self.has_default,
            "choices": list(self.choices) if self.choices is not None else None,
            "unit": self.unit,
            "type": self.type_name,
        }


class Resolver:
    """How the service resolves ids: users, groups, meetings and provided resources."""

    def __init__(
        self,
        user: Callable[[str], User],
        meeting: Callable[[str], Meeting],
        groups: Mapping[str, Sequence[str]],
        resources: Mapping[type, Mapping[str, object]],
        prompts: Path | None = None,
    ) -> None:
        self.user = user
        self.meeting = meeting
        self.groups = groups
        self.resources = resources
        self.prompts = prompts  # the folder prompt names resolve in (None: no prompts)


_HINTS_NS: dict[str, Any] = {
    "User": User,
    "Meeting": Meeting,
    "Session": Session,
    "Priority": Priority,
    "Prompt": Prompt,
}


def _hints(spec: FlowSpec[Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(spec.fn, localns=_HINTS_NS)
    except Exception:
        # An annotation naming something imported only for type checking: evaluate what can be.
        out: dict[str, Any] = {}
        glob = getattr(spec.fn, "__globals__", {})
        for name, p in spec.signature.parameters.items():
            ann = p.annotation
            if isinstance(ann, str):
                try:
                    ann = eval(ann, {**glob, **_HINTS_NS})
                except Exception:
                    ann = Any
            out[name] = ann
        return out


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        nullable = len(args) < len(typing.get_args(tp))
        if len(args) == 1:
            return args[0], nullable
        return tp, nullable
    return tp, False


def _is_user_list(tp: Any) -> bool:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (list, Sequence, Iterable, typing.Sequence, typing.Iterable) and args == (User,):
        return True
    return origin is tuple and (
        args == (User, ...) or (len(args) > 0 and all(a is User for a in args))
    )


def _kind(
    tp: Any, name: str, resources: Iterable[type]
) -> tuple[str, tuple[str, ...] | None, str | None]:
    """(kind, choices, unit) for an annotation."""
    if tp is User:
        return "user", None, None
    if _is_user_list(tp):
        return "users", None, None
    if tp is Meeting:
        return "meeting", None, None
    if isinstance(tp, type) and tp in tuple(resources):
        return "resource", None, None
    if tp is Priority:
        return "priority", tuple(p.name for p in Priority), None
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "enum", tuple(str(m.value) for m in tp), None
    if typing.get_origin(tp) is typing.Literal:
        return "enum", tuple(str(v) for v in typing.get_args(tp)), None
    if tp is bool:
        return "boolean", None, None
    if tp is int:
        return "integer", None, None
    if tp is float:
        return "number", None, "s" if _DURATION_NAME.search(name) else None
    if tp is datetime.timedelta:
        return "duration", None, "s"
    if tp is str:
        return "string", None, None
    if tp is Prompt:
        return "prompt", None, None
    return "unsupported", None, None


def _json_default(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.name if isinstance(value, Priority) else value.value
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if isinstance(value, User | Meeting):
        return value.id
    return None


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("baton.core.model.", "").replace("typing.", "")


def describe(spec: FlowSpec[Any], resources: Iterable[type] = ()) -> list[Param]:
    """The flow's parameters (the session excluded), in order."""
    hints = _hints(spec)
    params = list(spec.signature.parameters.values())[1:]
    out = []
    for p in params:
        if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        raw = hints.get(p.name, Any)
        tp, nullable = _unwrap_optional(raw)
        kind, choices, unit = _kind(tp, p.name, resources)
        has_default = p.default is not inspect.Parameter.empty
        out.append(
            Param(
                name=p.name,
                kind=kind,
                required=not has_default,
                nullable=nullable,
                default=_json_default(p.default) if has_default else None,
                has_default=has_default,
                choices=choices,
                unit=unit,
                type_name=_type_name(raw),
                annotation=tp,
            )
        )
    return out


def startable(params: Iterable[Param]) -> bool:
    """Can the API supply every required parameter?"""
    return all(not (p.kind == "unsupported" and p.required) for p in params)


def convert(
    spec: FlowSpec[Any], raw: Mapping[str, Any], resolver: Resolver, *, prefix: str = "args"
) -> dict[str, Any]:
    """Keyword arguments for ``manager.start(spec, **kwargs)`` from a JSON object."""
    if not isinstance(raw, Mapping):
        raise ArgumentError(prefix, "must be an object of named arguments")
    params = describe(spec, resolver.resources.keys())
    known = {p.name for p in params}
    for name in raw:
        if name not in known:
            accepted = ", ".join(sorted(known)) or "none"
            raise ArgumentError(
                f"{prefix}.{name}", f"unknown argument (flow {spec.name} takes: {accepted})"
            )
    out: dict[str, Any] = {}
    for p in params:
        field = f"{prefix}.{p.name}"
        if p.name not in raw:
            if p.kind == "resource" and not p.has_default:
                out[p.name] = _only_resource(p, resolver, field)
                continue
            if p.kind == "resource" and len(resolver.resources.get(p.annotation, {})) == 1:
                # An optional one left out is the service's only one too: a flow that may use
                # it (force_release's other=QUEUE) works without the client naming it; null
                # still says "none".
                out[p.name] = _only_resource(p, resolver, field)
                continue
            if p.required:
                raise ArgumentError(field, "field required")
            continue
        value = raw[p.name]
        if value is None:
            if p.nullable:
                out[p.name] = None
                continue
            raise ArgumentError(field, "must not be null")
        out[p.name] = _value(p, value, resolver, field)
    return out


def _only_resource(p: Param, resolver: Resolver, field: str) -> object:
    options = resolver.resources.get(p.annotation, {})
    if len(options) == 1:
        return next(iter(options.values()))
    names = ", ".join(sorted(options)) or "none is configured"
    raise ArgumentError(field, f"field required (one of: {names})")


def user_argument(value: Any, resolver: Resolver, field: str) -> User:
    """The user an argument at ``field`` names by id; :class:`ArgumentError` if it names none."""
    if not isinstance(value, str) or not value:
        raise ArgumentError(field, "must be a user id (a string)")
    try:
        return resolver.user(value)
    except UnknownUser:
        raise ArgumentError(field, f"no user {value!r}", id="unknown-user", user=value) from None


def _prompt(value: Any, resolver: Resolver, field: str) -> Prompt:
    """A prompt named by the client: a plain file name, resolved inside the prompts folder —
    never a path the client chose (no ``/``, no ``..``), and it must exist."""
    if not isinstance(value, str) or not _PROMPT_NAME.fullmatch(value):
        raise ArgumentError(field, "must be a prompt's file name (letters, digits, . _ -)")
    folder = resolver.prompts
    if folder is None:
        raise ArgumentError(field, "no prompts folder is configured")
    path = (folder / value).resolve()
    if path.parent != folder.resolve() or not path.is_file():
        raise ArgumentError(
            field, f"no prompt {value!r} in the prompts folder", id="unknown-prompt", prompt=value
        )
    return Prompt(str(path))


def _value(p: Param, value: Any, resolver: Resolver, field: str) -> Any:
    kind = p.kind
    if kind == "user":
        return user_argument(value, resolver, field)
    if kind == "users":
        if isinstance(value, str):
            members = resolver.groups.get(value)
            if members is None:
                raise ArgumentError(
                    field,
                    f"no group {value!r} (give a list of user ids or a group id)",
                    id="unknown-group",
                    group=value,
                )
            users = [user_argument(m, resolver, field) for m in members]
        elif isinstance(value, list):
            users = [user_argument(v, resolver, f"{field}[{i}]") for i, v in enumerate(value)]
        else:
            raise ArgumentError(field, "must be a list of user ids or a group id")
        if len({u.id for u in users}) != len(users):
            raise ArgumentError(field, "names a user twice")
        origin = typing.get_origin(p.annotation)
        return tuple(users) if origin is tuple else users
    if kind == "meeting":
        if not isinstance(value, str):
            raise ArgumentError(field, "must be a meeting id (a string)")
        try:
            return resolver.meeting(value)
        except UnknownMeeting:
            raise ArgumentError(
                field, f"no live meeting {value!r}", id="unknown-meeting", meeting=value
            ) from None
    if kind == "prompt":
        return _prompt(value, resolver, field)
    if kind == "resource":
        options = resolver.resources.get(p.annotation, {})
        if not isinstance(value, str) or value not in options:
            names = ", ".join(sorted(options)) or "none"
            raise ArgumentError(field, f"must be one of: {names}")
        return options[value]
    if kind == "priority":
        try:
            return Priority(parse_priority(value)) if _named(value) else parse_priority(value)
        except ValueError as exc:
            raise ArgumentError(field, str(exc)) from None
    if kind == "enum":
        tp = p.annotation
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            for m in tp:
                if value == m.value or (isinstance(value, str) and value.upper() == m.name):
                    return m
        elif value in typing.get_args(tp):
            return value
        raise ArgumentError(
            field, f"must be one of: {', '.join(p.choices or ())}", choices=list(p.choices or ())
        )
    if kind == "boolean":
        if not isinstance(value, bool):
            raise ArgumentError(field, "must be true or false")
        return value
    if kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ArgumentError(field, "must be an integer")
        if abs(value) > 2**53:
            raise ArgumentError(field, "is out of range")
        return value
    if kind in ("number", "duration"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ArgumentError(field, "must be a number" + (" of seconds" if p.unit else ""))
        number = float(value)
        if not math.isfinite(number) or abs(number) > 1e9:
            raise ArgumentError(field, "is out of range")
        if p.unit == "s" and number < 0:
            raise ArgumentError(field, "must not be negative")
        return datetime.timedelta(seconds=number) if kind == "duration" else number
    if kind == "string":
        if not isinstance(value, str):
            raise ArgumentError(field, "must be a string")
        if len(value) > 4096:
            raise ArgumentError(field, "is too long")
        return value
    raise ArgumentError(field, f"cannot be given through the API (type {p.type_name})")


def _named(value: Any) -> bool:
    return (
        isinstance(value, str) and value.strip().upper().replace("-", "_") in Priority.__members__
    )


def call_args(
    spec: FlowSpec[Any], kwargs: Mapping[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Positional and keyword arguments for ``manager.start(spec, *args, priority=…, **kw)``.

    Parameters that may be given by position are, with their defaults filled in: a flow may have
    a parameter named like one of ``start``'s own keywords (``queued_call(…, priority=None)``),
    and only a positional argument cannot collide with them.
    """
    positional: list[Any] = []
    keywords: dict[str, Any] = {}
    params = list(spec.signature.parameters.values())[1:]
    for p in params:
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
            if p.name in kwargs:
                positional.append(kwargs[p.name])
            elif p.default is not inspect.Parameter.empty:
                positional.append(p.default)
            else:
                raise ArgumentError(f"args.{p.name}", "field required")
        elif p.name in kwargs:
            keywords[p.name] = kwargs[p.name]
    return tuple(positional), keywords


#: A flow's parameter types by name (what the records read old arguments by).
param_types = _hints
#: ``(T, nullable)`` of ``T | None``.
unwrap_optional = _unwrap_optional
#: Whether a type is a list (or tuple) of users.
is_user_list = _is_user_list
