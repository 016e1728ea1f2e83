"""docs/api.md is generated from the docstrings; it must not fall behind them."""

from __future__ import annotations

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
