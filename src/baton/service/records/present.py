"""Records as the API shows them: no Python in them (docs/service.md, The store).

* **Times** are ISO 8601 with the zone (``2026-12-06T01:44:32.120+00:00``). The store keeps
  seconds since the epoch (UTC by definition) in numeric columns, so that range filters are exact
  and alike on SQLite and PostgreSQL; every key named ``at`` or ``…_at`` is converted on the way
  out. Filters (``since``, ``until``) take either form.
* **Unset values are omitted**: a record still open has no ``ended_at`` key, not ``null``.
* **Flow arguments are JSON values of their type** (``true``, ``30.0``, ``["unit1", "unit2"]``,
  an enum by value), as the core has written them since they were typed. Rows written before
  kept every argument as Python's ``str()`` (``"False"``, ``"OnLeave.END"``, ``"None"``,
  ``"unit1,unit2"``); :func:`typed_args` reads them by the flow's own parameter types — a
  ``bool`` parameter's ``"False"`` is ``false``, an ``Enum``'s ``"OnLeave.END"`` is its value, a
  ``"None"`` is left out — so old and new records look alike. A flow no longer installed keeps
  its old strings (``"None"`` still left out).
"""

from __future__ import annotations

import datetime
import enum
import math
import typing
from collections.abc import Mapping
from typing import Any

from baton.core import FlowSpec, Priority
from baton.service.errors import Unprocessable
from baton.service.flows.convert import is_user_list, param_types, unwrap_optional

__all__ = ["iso", "parse_time", "present", "typed_args"]


def iso(ts: float) -> str:
    """Seconds since the epoch → ISO 8601, UTC, with the zone and milliseconds."""
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat(timespec="milliseconds")


def _is_time(key: str) -> bool:
    return key == "at" or key.endswith("_at")


def present(value: Any) -> Any:
    """A record (or a list of them, nested) for the API: times ISO 8601, ``None`` left out."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if v is None:
                continue
            if _is_time(str(k)) and isinstance(v, int | float) and not isinstance(v, bool):
                out[str(k)] = iso(float(v))
            else:
                out[str(k)] = present(v)
        return out
    if isinstance(value, list | tuple):
        return [present(v) for v in value]
    return value


def parse_time(value: str | None, field: str) -> float | None:
    """A filter's time: seconds since the epoch, or ISO 8601 with a zone; 422 otherwise."""
    if value is None:
        return None
    try:
        seconds = float(value)
        if math.isfinite(seconds):
            return seconds
    except ValueError:
        pass
    try:
        when = datetime.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise Unprocessable(
            f"{field}: give seconds since the epoch or ISO 8601 with a zone "
            f"(2026-12-06T08:00:00+00:00), not {value!r}",
            id="invalid-argument",
            details={"field": field},
        )
    return when.timestamp()


def typed_args(spec: FlowSpec[Any] | None, args: Mapping[str, Any] | None) -> dict[str, Any]:
    """A flow record's arguments as JSON values (see the module docstring)."""
    hints: dict[str, Any] = {}
    if spec is not None:
        try:
            hints = param_types(spec)
        except Exception:  # an annotation that cannot be evaluated: keep the values as stored
            hints = {}
    out: dict[str, Any] = {}
    for name, value in (args or {}).items():
        if value is None or value == "None":
            continue
        out[name] = _typed(hints.get(name), value) if isinstance(value, str) else value
    return out


def _typed(tp: Any, text: str) -> Any:
    """``text`` — ``str()`` of a value of type ``tp`` — as a JSON value (``text`` if unsure)."""
    if tp is None:
        return text
    tp, _ = unwrap_optional(tp)
    try:
        if tp is bool:
            return {"True": True, "False": False}.get(text, text)
        if isinstance(tp, type) and issubclass(tp, Priority):
            name = text.rsplit(".", 1)[-1]
            return name if name in Priority.__members__ else text
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            member = tp.__members__.get(text.rsplit(".", 1)[-1])
            if member is None:
                return text
            plain = member.value
            return plain if isinstance(plain, str | int | float | bool) else member.name.lower()
        if tp is int:
            return int(text)
        if tp is float:
            return float(text)
        if is_user_list(tp) or typing.get_origin(tp) in (list, tuple):
            return [part for part in text.split(",") if part]
    except ValueError:
        return text
    return text
