"""docs/core.md stays true: its first flow, tested as its "Testing on the sim" section shows,
passes — every invariant included (a reader puts the two snippets together)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "docs/core.md").read_text(), re.S)


async def test_the_first_flow_passes_the_test_core_md_shows() -> None:
    flow_code = BLOCKS[0].split("\nmanager = UserManager")[0]  # the rest needs a real switch
    test_code = next(b for b in BLOCKS if "async def test_call" in b)
    scope: dict[str, Any] = {}
    exec(compile(flow_code + "\n" + test_code, "docs/core.md", "exec"), scope)
    await scope["test_call"]()  # World.assert_ok inside: dead air while bob rings included
