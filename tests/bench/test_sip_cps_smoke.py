"""Smoke test of ``bench/sip_cps.py``: one tiny step through Baton (and sippy, if installed), so
the benchmark cannot silently rot. Nothing here asserts on speed; the figures are the
benchmark's job (``python bench/sip_cps.py``, recorded in ``docs/benchmarks.md``)."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "sip_cps.py"

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


async def test_sip_cps_runs_tiny() -> None:
    if shutil.which("sipp") is None:
        pytest.fail("sipp not found: run scripts/install-system-deps.sh (as root)")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(BENCH), "--quick", "--start", "10", "--ceiling", "10",
        "--seconds", "1", "--hold", "50",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with asyncio.timeout(120):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()  # only the process this test started
            await proc.wait()
    assert proc.returncode == 0, err.decode(errors="replace")
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert set(result) >= KEYS
    assert result["baton_steps"][0]["rate"] == 10
    assert result["baton_cps"] == 10  # ten calls, all clean at 10 calls/s
