"""The baton command line.

baton new-flow NAME          write a flow and its tests from a template (docs/guide.md)
baton check FLOW             explore a flow's schedules against the library (docs/guide.md)
baton serve --config FILE    the dispatcher service; --sim for the demo (docs/service.md)
baton demo [--list] [NAME]   scripted dispatch scenarios on virtual phones, as a trace
baton --version
"""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(sys.argv[1:] if argv is None else argv)
    except BrokenPipeError:
        # the reader went away (`baton demo --list | head`): stop quietly, and keep Python
        # from failing again when it flushes stdout at exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="baton",
        description="Baton: dispatch telephony flows on asyncio.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument("--version", action="store_true", help="print the version")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser("demo", help="run a scripted scenario on the sim and print its trace")
    demo.add_argument("--list", action="store_true", help="list the scenarios")
    demo.add_argument(
        "name", nargs="?", default="preemption", help="scenario (default: preemption)"
    )
    sub.add_parser("serve", help="run the dispatcher service", add_help=False)
    sub.add_parser("check", help="explore a flow's schedules against the library", add_help=False)
    sub.add_parser("new-flow", help="write a flow and its test from a template", add_help=False)
    args, rest = parser.parse_known_args(argv)
    if args.version:
        from baton import __version__

        print(__version__)
        return 0
    if args.command == "demo":
        from baton import demo as demo_module

        return demo_module.main(["--list"] if args.list else [args.name])
    if args.command == "new-flow":
        from baton.testing.scaffold import main as scaffold_main

        return scaffold_main(rest)
    if args.command == "check":
        from baton.testing.check_cli import main as check_main

        return check_main(rest)
    if args.command == "serve":
        from baton.service.cli import serve_main  # type: ignore[import-not-found, unused-ignore]

        result: int = serve_main(rest)
        return result
    parser.print_help(sys.stderr)  # no command: a usage error, as `baton serve` alone is
    return 2


if __name__ == "__main__":
    sys.exit(main())
