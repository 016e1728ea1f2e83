"""Smoke test of ``bench/flood.py``: a one-second run at a low flood rate, so the benchmark
cannot silently rot. Nothing here asserts on speed; the figures are the benchmark's job
(``python bench/flood.py``, recorded in ``docs/benchmarks.md``)."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "flood.py"

pytestmark = [pytest.mark.e2e, pytest.mark.realtime]


async def test_flood_runs_tiny() -> None:
    if shutil.which("sipp") is None:
        pytest.fail("sipp not found: run scripts/install-system-deps.sh (as root)")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(BENCH), "--seconds", "1", "--rate", "10", "--flood", "100",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with asyncio.timeout(90):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()  # only the process this test started
            await proc.wait()
    assert proc.returncode == 0, err.decode(errors="replace")
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert result["legit_calls"] == 10
    assert result["flood_sent"] == 100
    assert result["baton_challenges"] > 0  # the flood reached Baton and was challenged
    assert 0 <= result["legit_success_pct"] <= 100
