"""``baton check``: the command line of :mod:`baton.testing.check`."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

from baton.core import FlowSpec
from baton.testing.check import (
    CheckReport,
    RunResult,
    check_flow,
    default_against,
    parse_schedule,
)

__all__ = ["load_flow", "main"]


def load_flow(ref: str) -> FlowSpec[Any]:
    """A flow by library name (``barge_in``) or by ``package.module:name``."""
    from baton.flows import LIBRARY

    if ":" not in ref:
        if ref in LIBRARY:
            return LIBRARY[ref]
        raise SystemExit(f"baton check: no library flow {ref!r}; give package.module:name")
    module_name, _, attr = ref.partition(":")
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")  # a flow module in the current folder, as a newcomer has it
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SystemExit(f"baton check: cannot import {module_name!r}: {exc}") from None
    spec = getattr(module, attr, None)
    if not isinstance(spec, FlowSpec):
        raise SystemExit(f"baton check: {ref!r} is not a flow (decorate it with @flow)")
    return spec


def _print_failure(r: RunResult, ref: str, verbose: bool) -> None:
    print(f"  shortest failing schedule: {r.schedule}")
    for f in r.findings:
        print(f"    {f.severity}: {f.message}")
    print(f"  replay: baton check {ref} --seed {r.schedule.seed} --schedule '{r.schedule}'")
    if verbose:
        print("  trace:")
        for line in r.trace.splitlines():
            print("   " + line)


def report_text(report: CheckReport, ref: str, verbose: bool) -> None:
    status = "ok" if report.ok else "FAILED"
    print(
        f"{report.flow}: {status} — {report.runs} schedules, "
        f"{report.await_points} await points in the baseline run, "
        f"{len(report.warnings)} with warnings"
    )
    failure = report.first_failure()
    if failure is not None:
        _print_failure(failure, ref, verbose)
    shown = 0
    for r in report.warnings:
        for f in r.findings:
            if f.severity == "warning" and shown < 3:
                shown += 1
                print(f"  warning ({r.schedule}): {f.message}")
    if len(report.warnings) > shown:
        print(f"  … {len(report.warnings) - shown} more schedules with warnings")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="baton check",
        description="Run a flow against every library flow on shared users across many "
        "schedules; report the shortest schedule that breaks an invariant or shows a mistake.",
    )
    parser.add_argument("flows", nargs="*", help="library flow names or package.module:name")
    parser.add_argument("--library", action="store_true", help="check every library flow")
    parser.add_argument("--budget", type=int, default=200, help="schedules per flow (200)")
    parser.add_argument("--seed", type=int, default=1, help="exploration seed (1)")
    parser.add_argument("--schedule", help="replay one schedule, as a report printed it")
    parser.add_argument("--strict", action="store_true", help="warnings fail too")
    parser.add_argument("-v", "--verbose", action="store_true", help="print failing traces")
    args = parser.parse_args(argv)
    refs = list(args.flows)
    if args.library:
        from baton.flows import LIBRARY

        refs += [n for n in LIBRARY if n not in refs]
    if not refs:
        parser.error("name a flow, or --library")
    failed = 0
    for ref in refs:
        spec = load_flow(ref)
        replay = parse_schedule(args.schedule, args.seed) if args.schedule else None
        report = check_flow(
            spec,
            default_against(spec),
            budget=args.budget,
            seed=args.seed,
            strict=args.strict,
            replay=replay,
        )
        report_text(report, ref, args.verbose or replay is not None)
        failed += not report.ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
