"""Smoke test of ``bench/sip_cps.py``: one tiny step through Baton (and sippy, if installed), so
the benchmark cannot silently rot. Nothing here asserts on speed; the figures are the
benchmark's job (``python bench/sip_cps.py``, recorded in ``docs/benchmarks.md``)."""

from __future__ import annotations

import shutil
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

RunBench = Callable[..., Awaitable[dict[str, Any]]]

pytestmark = [pytest.mark.e2e, pytest.mark.realtime]

KEYS = {
    "baton_cps",
    "sippy_cps",
    "cps_ratio",
    "hold_ms",
    "step_seconds",
    "baton_steps",
    "sippy_steps",
    "definitions",
}


async def test_sip_cps_runs_tiny(run_bench: RunBench) -> None:
    if shutil.which("sipp") is None:
        pytest.fail("sipp not found: run scripts/install-system-deps.sh (as root)")
    result = await run_bench(
        "sip_cps",
        "--quick",
        "--start",
        "10",
        "--ceiling",
        "10",
        "--seconds",
        "1",
        "--hold",
        "50",
        within=120,
    )
    assert set(result) >= KEYS
    assert result["baton_steps"][0]["rate"] == 10
    assert result["baton_cps"] == 10  # ten calls, all clean at 10 calls/s


async def test_sip_cps_measures_cpu_per_call(run_bench: RunBench) -> None:
    result = await run_bench("sip_cps", "--cpu-at", "10", "--seconds", "1", "--hold", "50",
                             within=120)  # fmt: skip
    assert result["step"]["successful"] == 10
    assert result["step"]["cpu_seconds"] > 0
    assert result["baton_cpu_ms_per_call"] == pytest.approx(
        result["step"]["cpu_seconds"] * 1000 / 10, rel=0.01
    )
