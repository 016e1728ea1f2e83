"""Smoke test of ``bench/webrtc.py``: a tiny run (5 browser calls) goes end to end — STUN
check, DTLS handshake, SRTP both ways — and reports every figure, so the benchmark cannot
silently rot. Nothing here asserts on speed (docs/benchmarks.md has the figures)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
KEYS = {"webrtc_legs_one_core", "opus_cpu_ratio", "added_latency_p99_ms", "added_latency_p50_ms"}


def test_tiny_run_reports_every_figure() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench/webrtc.py"), "--quick", "--max", "5",
         "--ratio-legs", "5", "--step", "5"],
        capture_output=True, text=True, timeout=180, env=env, check=True,
    )  # fmt: skip
    lines = done.stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    assert summary.keys() >= KEYS
    steps = [json.loads(line) for line in lines[:-1]]
    webrtc = [s for s in steps if s["kind"] == "webrtc"]
    assert webrtc and webrtc[0]["secure"] == 5  # every browser leg finished DTLS
    assert webrtc[0]["got_phone_pct"] > 50 and webrtc[0]["got_browser_pct"] > 50
    assert summary["opus_cpu_ratio"] > 0
