"""``baton demo``: every scenario runs, tells its story, and keeps every invariant."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from baton import demo
from baton.cli import main


@pytest.mark.parametrize("name", sorted(demo.SCENARIOS))
def test_every_scenario_runs_with_invariants_held(name: str) -> None:
    out = io.StringIO()
    demo.run(name, out)
    text = out.getvalue()
    assert text.startswith(f"== {name}: ")
    assert text.rstrip().endswith("invariants: all held")
    assert "▶" in text and "■" in text  # flows start and end


def test_the_default_demo_tells_the_preemption_story() -> None:
    out = io.StringIO()
    demo.run("preemption", out)
    text = out.getvalue()
    assert (
        "PREEMPTION of carol: emergency_call#1 (EMERGENCY) takes it from attended_transfer#1"
        in text
    )
    assert "attended transfer: carol preempted" in text  # the transfer is off: alice back with bob
    assert "⟹ alice ← bob; bob ← alice" in text
    assert "⟹ alice ← bob; bob ← alice; carol ← sup; sup ← carol" in text
    assert "carol outbound leg L3: connected" in text  # the same leg, answered, not re-dialled


def test_every_library_flow_has_a_scenario() -> None:
    from baton.flows import LIBRARY

    covered = {"preemption", *demo.SCENARIOS}
    missing = {n for n in LIBRARY if n not in covered} - {"queued_call", "take_call"}
    assert "queue" in demo.SCENARIOS  # queued_call and take_call are the queue scenario
    assert not missing


def test_cli_lists_and_rejects_unknown(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--list"]) == 0
    listed = capsys.readouterr().out
    assert "preemption" in listed and "barge_in" in listed
    assert main(["demo", "nope"]) == 2
    assert "no scenario 'nope'" in capsys.readouterr().err


def test_baton_demo_runs_as_a_command() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "baton.cli", "demo", "barge_in"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "barged into alice–bob" in proc.stdout


def test_a_listing_cut_short_by_its_reader_ends_quietly() -> None:
    # `baton demo --list | head -1`: the reader closes the pipe early; the listing stops
    # without a BrokenPipeError traceback on the terminal.
    proc = subprocess.run(
        f"{sys.executable} -m baton.cli demo --list | head -1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert len(proc.stdout.splitlines()) == 1
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
