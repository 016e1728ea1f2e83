"""Smoke test of ``bench/media.py``: its core functions run end to end with a tiny load, so the
benchmark cannot silently rot. Nothing here asserts on speed; the figures are the benchmark's
job (``python bench/media.py``, recorded in ``docs/benchmarks.md``)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

KEYS = {
    "cpu_per_packet_ratio",
    "baton_us_per_packet",
    "rtpengine_us_per_packet",
    "max_calls_one_core",
    "max_calls_limited_by",
    "max_calls_steps",
    "meeting100_cpu_pct",
    "added_latency_p50_ms",
    "added_latency_p99_ms",
    "mixed_meeting_latency_p50_ms",
    "mixed_meeting_latency_p99_ms",
    "mixed_calls_latency_p50_ms",
    "mixed_calls_latency_p99_ms",
    "rtpengine_latency_p99_ms",
    "definitions",
}


def test_tiny_run_reports_every_figure(bench_script: Callable[[str], ModuleType]) -> None:
    if shutil.which("rtpengine") is None:
        pytest.fail(
            "rtpengine is not installed: the media benchmark compares against it. Install the "
            "Debian package rtpengine-daemon (scripts/install-system-deps.sh does, as root)."
        )
    media = bench_script("media")
    # Ports apart from the full benchmark's, so a run of it at the same time does not collide.
    config = media.Config(
        ratio_calls=4,
        ratio_rounds=1,
        warmup_s=0.5,
        window_s=1.0,
        search_start=4,
        search_growth=2.0,
        search_max=8,
        search_refine=0,
        search_window_s=1.0,
        search_budget_s=10.0,
        meeting_size=6,
        mixed_calls=4,
        gen_sockets=2,
        ng_port=22232,
        rtpengine_ports=(31000, 31199),
        baton_ports=(16000, 16998),
        gen_port_base=15000,
    )
    lines: list[str] = []
    result: dict[str, Any] = media.run_bench(config, log=lines.append)
    missing = KEYS - result.keys()
    assert not missing, missing
    json.dumps(result)  # one JSON object, as the script's last line prints it
    # Traffic went through both engines (a functional check, not a speed one).
    assert result["ratio_rounds"][0]["packets"] > 0
    assert result["max_calls_steps"][0]["calls"] == 4  # a busy machine may stop the search there
    assert result["mixed_meeting_latency_p99_ms"] is not None
    assert result["mixed_calls_latency_p99_ms"] is not None
    assert any("relay round 1" in line for line in lines)
