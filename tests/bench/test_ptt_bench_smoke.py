"""Smoke test of ``bench/ptt.py``: both modes run end to end on a tiny load and report every
figure, so the benchmark cannot silently rot. Nothing here asserts on speed; the figures are
the benchmark's job (``python bench/ptt.py [--media]``, recorded in ``docs/benchmarks.md``)."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Callable
from types import ModuleType

import pytest

pytestmark = pytest.mark.e2e

MEDIA_KEYS = {
    "floor_access_media_p50_ms",
    "floor_access_media_p95_ms",
    "floor_access_media_p99_ms",
    "floor_access_media_last_listener_p99_ms",
    "floor_control_p50_ms",
    "floor_control_p99_ms",
    "dtmf_detect_p99_ms",
    "grants_measured",
    "grants_by_preemption",
    "grants_during_group_tone",
    "floor_access_media_no_group_tone_p50_ms",
    "floor_access_media_no_group_tone_p99_ms",
    "listener_samples",
    "listeners_missed",
    "grants_revoked_before_heard",
    "requests_queued",
    "presses_unmatched",
    "groups",
    "members_per_group",
    "seconds",
    "baton_cpu_pct",
    "engine_late_ticks_pct",
    "phones_cpu_pct",
    "setup_s",
    "legs",
    "mode",
    "fanout",
}


def test_sim_mode_reports_its_figures(bench_script: Callable[[str], ModuleType]) -> None:
    ptt = bench_script("ptt")
    result = asyncio.run(ptt.run(groups=2, members=3, seconds=1.0, seed=1))
    assert {"floor_access_p50_ms", "floor_access_p99_ms", "grants_measured"} <= result.keys()
    json.dumps(result)


def test_media_mode_tiny_run_reports_every_figure(
    bench_script: Callable[[str], ModuleType],
) -> None:
    if shutil.which("sipp") is None:
        pytest.fail("sipp is not installed: the Debian package sip-tester (Makefile system-deps)")
    ptt = bench_script("ptt")
    # Ports apart from the full benchmark's, so a run of it at the same time does not collide;
    # no real-time priority: a test shares the machine.
    cfg = ptt.MediaConfig(
        groups=2,
        members=3,
        seconds=3.0,
        warmup=0.5,
        rt_priority=0,
        rtp_ports=(17000, 17998),
        phones_port_base=8000,
    )
    lines: list[str] = []
    result = ptt.run_media(cfg, log=lines.append)
    missing = MEDIA_KEYS - result.keys()
    assert not missing, missing
    json.dumps(result)  # one JSON object, as the script's last line prints it
    # The whole path worked (a functional check, not a speed one): calls up, presses detected
    # and paired, grants measured, listeners reached.
    assert result["legs"] == 8
    assert result["presses_unmatched"] == 0
    assert result["grants_measured"] > 0
    assert result["listener_samples"] > 0
    assert any("calls up" in line for line in lines)
