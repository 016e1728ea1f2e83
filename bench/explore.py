"""Exploration throughput: how many steps per second the property tests take, and how many
schedules per second ``baton check`` runs (issue "Flows that interact under real switch timing").

Measures, on the machine as it is:
  core_steps_per_s      rules per second of the core state machine (tests/property/test_stateful.py)
  library_steps_per_s   rules per second of the library state machine (test_library_stateful.py)
  core_steps, library_steps   how many steps one ``make test`` run explores (the machines' scale)
  check_runs_per_s      ``baton check`` schedules per second (barge_in against the library)

Each machine runs its derandomized examples once (what ``make test`` runs), with every invariant
checked after every step, switch timing drawn per run. Run ``python bench/explore.py`` (or
``--quick``); the last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "property"), str(ROOT / "tests" / "core")]

import conftest  # noqa: E402,F401 - Hypothesis engine imported at a shallow stack
import test_library_stateful as library  # noqa: E402
import test_stateful as core  # noqa: E402

from baton.flows import LIBRARY  # noqa: E402
from baton.testing.check import check_flow, default_against  # noqa: E402


def _machine(module: Any, cls: type, test: Any) -> tuple[int, float]:
    """Run a state machine's test once; return (steps, seconds)."""
    steps = 0
    run = cls._run

    def counting(self: Any, *args: Any, **kwargs: Any) -> None:
        nonlocal steps
        steps += 1
        run(self, *args, **kwargs)

    cls._run = counting
    try:
        start = time.perf_counter()
        test().runTest()
        return steps, time.perf_counter() - start
    finally:
        cls._run = run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer baton check runs")
    args = parser.parse_args()
    core_steps, core_s = _machine(core, core.DispatchMachine, core.test_dispatch_machine)
    print(f"core machine: {core_steps} steps in {core_s:.1f} s")
    lib_steps, lib_s = _machine(library, library.LibraryMachine, library.test_library_machine)
    print(f"library machine: {lib_steps} steps in {lib_s:.1f} s")
    spec = LIBRARY["barge_in"]
    budget = 20 if args.quick else 100
    start = time.perf_counter()
    report = check_flow(spec, default_against(spec), budget=budget, seed=1)
    check_s = time.perf_counter() - start
    print(f"baton check barge_in: {report.runs} schedules in {check_s:.1f} s, ok={report.ok}")
    print(
        json.dumps(
            {
                "core_steps": core_steps,
                "core_steps_per_s": round(core_steps / core_s),
                "library_steps": lib_steps,
                "library_steps_per_s": round(lib_steps / lib_s),
                "check_runs_per_s": round(report.runs / check_s, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
