"""docs/guide.md stays true: its finished flow is the example's code, its commands work."""

from __future__ import annotations

import re
from pathlib import Path

from baton.cli import main

ROOT = Path(__file__).resolve().parents[1]
GUIDE = (ROOT / "docs/guide.md").read_text()


def test_the_guides_finished_flow_is_the_example() -> None:
    blocks = re.findall(r"<!-- file: (\S+) -->\n```python\n(.*?)```", GUIDE, re.S)
    assert blocks, "the guide has no file block"
    for path, code in blocks:
        assert code == (ROOT / path).read_text(), f"the guide's copy of {path} is out of date"


def test_the_guides_serve_check_command_works(capsys: object) -> None:
    assert main(["serve", "--config", str(ROOT / "examples/escort/escort.toml"), "--check"]) == 0


def test_the_guide_names_every_mistake_the_checker_reports() -> None:
    for phrase in (
        "touched a user the flow had lost",
        "was never told",
        "operated on a user it no longer owned",
        "Preempted escaped the flow",
    ):
        assert phrase in GUIDE
