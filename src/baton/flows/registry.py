"""Custom flows as plug-ins: a company's flows, in its own package, beside the library's.

A plug-in is named in the service's config::

    [flows]
    plugins = ["acme.flows", "acme.escort:escort_call"]

``package.module`` contributes every flow (a :class:`~baton.core.FlowSpec`, what ``@flow``
makes) defined at its top level — or, if the module has a ``FLOWS`` list, exactly those;
``package.module:name`` names one flow. An installed distribution may also declare flows under
the ``baton.flows`` entry-point group (an entry point may name a flow or a module). A plug-in
flow appears in the API and the console exactly like a library flow; its arguments' schema comes
from its signature's type hints.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from baton.core import FlowSpec

__all__ = ["ENTRY_POINT_GROUP", "PluginError", "flows_of", "load_flows"]

ENTRY_POINT_GROUP = "baton.flows"


class PluginError(Exception):
    """A plug-in could not be loaded, or its flows clash with others. ``where`` names it."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message


def flows_of(obj: object, where: str) -> list[FlowSpec[Any]]:
    """The flows a module (its ``FLOWS`` list, else every top-level flow) or a flow gives."""
    if isinstance(obj, FlowSpec):
        return [obj]
    if isinstance(obj, ModuleType):
        listed = getattr(obj, "FLOWS", None)
        found = (
            list(listed)
            if listed is not None
            else [v for v in vars(obj).values() if isinstance(v, FlowSpec)]
        )
        bad = [f for f in found if not isinstance(f, FlowSpec)]
        if bad:
            raise PluginError(where, f"FLOWS holds something that is not a flow: {bad[0]!r}")
        if not found:
            raise PluginError(where, "defines no flow (decorate an async def with @flow)")
        return found
    raise PluginError(where, f"{obj!r} is not a flow (decorate an async def with @flow)")


def _import(ref: str, where: str) -> list[FlowSpec[Any]]:
    module_name, _, attr = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # an ImportError, or the module crashing while it loads
        raise PluginError(where, f"cannot import {module_name!r}: {exc}") from exc
    if not attr:
        return flows_of(module, where)
    if not hasattr(module, attr):
        raise PluginError(where, f"module {module_name!r} has no {attr!r}")
    return flows_of(getattr(module, attr), where)


def load_flows(
    plugins: Iterable[str] = (),
    *,
    entry_points: bool = True,
    paths: Iterable[str | Path] = (),
    library: Mapping[str, FlowSpec[Any]] | None = None,
    problems: list[str] | None = None,
) -> dict[str, FlowSpec[Any]]:
    """The library's flows plus the plug-ins' (imported from ``paths`` too, as well as from
    installed packages). A name used twice is an error naming both. Raises
    :class:`PluginError` at the first problem — or, given a ``problems`` list, adds every
    problem to it (one line each) and returns the flows that did load (``baton serve
    --check`` reports them all at once)."""

    def fail(exc: PluginError) -> None:
        if problems is None:
            raise exc
        problems.append(str(exc))

    for folder in paths:
        entry = str(folder)
        if not Path(entry).is_dir():
            fail(PluginError("flows.paths", f"{entry!r} is not a folder"))
            continue
        if entry not in sys.path:
            sys.path.insert(0, entry)
    if library is None:
        from baton.flows import LIBRARY

        library = LIBRARY
    flows: dict[str, FlowSpec[Any]] = dict(library)
    origin = dict.fromkeys(flows, "the library")

    def add(found: list[FlowSpec[Any]], where: str) -> None:
        for spec in found:
            if spec.name in flows and flows[spec.name] is not spec:
                fail(
                    PluginError(
                        where, f"flow {spec.name!r} is already defined by {origin[spec.name]}"
                    )
                )
                continue
            flows[spec.name] = spec
            origin[spec.name] = where

    for i, ref in enumerate(plugins):
        where = f"flows.plugins[{i}] ({ref})"
        try:
            found = _import(ref, where)
        except PluginError as exc:
            fail(exc)
            continue
        add(found, where)
    if entry_points:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            where = f"entry point {ep.name} ({ep.value})"
            try:
                found = flows_of(ep.load(), where)
            except PluginError as exc:
                fail(exc)
                continue
            except Exception as exc:
                fail(PluginError(where, f"cannot load: {exc}"))
                continue
            add(found, where)
    return flows
