"""Smoke test of ``bench/flood.py``: a one-second run at a low flood rate, so the benchmark
cannot silently rot. Nothing here asserts on speed; the figures are the benchmark's job
(``python bench/flood.py``, recorded in ``docs/benchmarks.md``)."""

from __future__ import annotations

import shutil
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

RunBench = Callable[..., Awaitable[dict[str, Any]]]

pytestmark = [pytest.mark.e2e, pytest.mark.realtime]


async def test_flood_runs_tiny(run_bench: RunBench) -> None:
    if shutil.which("sipp") is None:
        pytest.fail("sipp not found: run scripts/install-system-deps.sh (as root)")
    result = await run_bench("flood", "--seconds", "1", "--rate", "10", "--flood", "100", within=90)
    assert result["legit_calls"] == 10
    assert result["flood_sent"] == 100
    assert result["baton_challenges"] > 0  # the flood reached Baton and was challenged
    assert 0 <= result["legit_success_pct"] <= 100
