"""Events as JSON: the shape the WebSocket, the journal and traces share.

An event is ``event.to_dict()`` (its fields, ``kind``, ``seq``, ``t``) plus ``text``: the sentence
:func:`baton.trace.describe` writes for it (``null`` for events too fine-grained to show) and
``marker``, its one-character symbol. :func:`event_from_dict` rebuilds the event object from a
journal row, so a trace of an ended flow is described exactly like a live one.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from typing import Any

from baton.core import events as core_events
from baton.core.events import Event
from baton.trace import describe

__all__ = ["EVENT_TYPES", "event_dict", "event_from_dict", "event_json", "jsonable"]

#: kind → event class, for every event the core defines.
EVENT_TYPES: dict[str, type[Event]] = {
    cls.kind: cls
    for name in core_events.__all__
    if isinstance(cls := getattr(core_events, name), type)
    and issubclass(cls, Event)
    and cls is not Event
}


def jsonable(value: Any) -> Any:
    """``value`` with everything JSON cannot hold made plain: enums by value, tuples and sets as
    lists, non-finite floats and unknown objects as strings. (An event a flow library defines may
    carry anything; neither the journal nor a WebSocket client may choke on it.)"""
    if value is None or isinstance(value, bool | int | str):
        return int(value) if isinstance(value, enum.IntEnum) else value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, enum.Enum):
        return jsonable(value.value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    ident = getattr(value, "id", None)
    return ident if isinstance(ident, str) else str(value)


def event_dict(ev: Event) -> dict[str, Any]:
    """``ev.to_dict()``, JSON-safe (what the journal stores)."""
    out: dict[str, Any] = jsonable(ev.to_dict())
    return out


def event_json(ev: Event) -> dict[str, Any]:
    """The JSON form of an event, described. An event the core does not define (a flow
    library's own, such as ``floor.granted``) is described by its kind and fields."""
    d = event_dict(ev)
    line = describe(ev)
    if line is None and type(ev) not in _CORE:
        fields = " ".join(f"{k}={v}" for k, v in d.items() if k not in ("kind", "seq", "t"))
        line = ("•", f"{ev.kind} {fields}".rstrip())
    d["marker"], d["text"] = line if line is not None else (None, None)
    return d


_CORE = frozenset(EVENT_TYPES.values())


def event_from_dict(d: dict[str, Any]) -> Event | None:
    """The event a :func:`event_json` / ``to_dict`` dictionary came from (``None`` for an unknown
    kind, e.g. one a newer core added)."""
    cls = EVENT_TYPES.get(str(d.get("kind")))
    if cls is None:
        return None
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in d:
            v = d[f.name]
            kwargs[f.name] = tuple(v) if isinstance(v, list) else v
    try:
        return cls(**kwargs)
    except TypeError:
        return None
