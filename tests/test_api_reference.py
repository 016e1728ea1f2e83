"""docs/api.md is generated from the docstrings; it must not fall behind them."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("gen_api", ROOT / "scripts/gen_api_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_api"] = module
    spec.loader.exec_module(module)
    return module


def test_api_reference_is_up_to_date() -> None:
    rendered = _generator().render()
    current = (ROOT / "docs/api.md").read_text()
    assert rendered == current, "docs/api.md is stale: run python scripts/gen_api_reference.py"


def test_every_documented_name_has_a_docstring() -> None:
    assert "(no documentation)" not in (ROOT / "docs/api.md").read_text()


def test_no_class_is_documented_by_a_docstring_it_inherited() -> None:
    # inspect.getdoc falls back to a base's docstring: LegState read as the stdlib's "Create a
    # collection of name/value pairs…", UnknownUser as BatonError's own description.
    gen = _generator()
    borrowed = []
    for _title, module_name, names in gen.SECTIONS:
        module = importlib.import_module(module_name)
        for name in names or list(module.__all__):
            obj = getattr(module, name)
            if isinstance(obj, type) and not obj.__dict__.get("__doc__"):
                borrowed.append(name)
    assert borrowed == []


def test_what_the_guide_names_is_in_the_reference() -> None:
    api = (ROOT / "docs/api.md").read_text()
    # docs/guide.md step 6's phones and the errors dial raises (Session.dial's docstring)
    for name in ("incompatible(", "class `Incompatible`", "class `InvalidArgument`"):
        assert name in api, name
    # the guide drives phones through world.sim and picks users with world["id"]
    assert "w.sim.kill(id)" in api and "class `Timing`" in api
