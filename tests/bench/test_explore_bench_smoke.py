"""Smoke test of ``bench/explore.py``: it runs end to end and reports every figure, so the
exploration benchmark cannot silently rot. Nothing here asserts on speed; the figures are the
benchmark's job (recorded in docs/benchmarks.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_explore_bench_reports_every_figure() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "explore.py"), "--quick"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
        cwd=ROOT,
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert set(result) == {
        "core_steps",
        "core_steps_per_s",
        "library_steps",
        "library_steps_per_s",
        "check_runs_per_s",
    }
    assert result["core_steps"] > 1000 and result["library_steps"] > 1000
    assert all(v > 0 for v in result.values())
