"""The docs' Python samples that are not whole files run as the docs show them: the guide's test
of step 6 (against the finished escort call), docs/core.md's timing knobs and docs/ptt.md's
console presses. (docs/guide.md's finished flow and shell steps are tests/test_guide.py's;
docs/core.md's first flow and its test are tests/core/test_core_doc.py's.)"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import baton.testing
from baton.cli import main
from baton.core import Priority
from baton.testing import World

ROOT = Path(__file__).resolve().parents[1]


def _blocks(doc: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "docs" / doc).read_text(), re.S)


def _block(doc: str, marker: str) -> str:
    (block,) = [b for b in _blocks(doc) if marker in b]
    return block


async def test_the_guides_step_6_test_passes_on_the_finished_flow() -> None:
    sys.path.insert(0, str(ROOT / "examples/escort"))
    try:
        from escort_flows import escort_call
    finally:
        sys.path.remove(str(ROOT / "examples/escort"))
    code = _block("guide.md", "async def test_escort_records")
    # What the guide's reader imports: the flow and baton.testing's names it uses.
    scope: dict[str, Any] = {**vars(baton.testing), "Priority": Priority}
    scope["escort_call"] = escort_call
    exec(compile(code, "docs/guide.md", "exec"), scope)
    world = World()
    await scope["test_escort_records_and_brings_the_supervisor_in_on_9"](world)
    world.assert_ok()  # the world fixture's check


def test_core_mds_timing_knobs_build_worlds() -> None:
    code = _block("core.md", "from baton.switch.sim import Timing")
    scope: dict[str, Any] = {"World": World}
    exec(compile(code, "docs/core.md", "exec"), scope)


async def test_ptt_mds_console_presses_drive_the_floor() -> None:
    w = World("unit7", "unit8", "disp")
    scope: dict[str, Any] = {
        "manager": w.manager,
        "members": [w["unit7"], w["unit8"]],
        "disp": w["disp"],
    }
    code = _block("ptt.md", "ptt_group")
    # The sample's awaits run in a coroutine, as in the reader's own code.
    body = "\n".join(f"    {line}" for line in code.splitlines())
    exec(compile(f"async def sample():\n{body}\n    return g", "docs/ptt.md", "exec"), scope)
    g = await scope["sample"]()
    await w.run(5)
    assert g.state.value == "running" and w.hears("unit7") == set()  # the floor is idle
    await g.send("end")
    await w.run(5)
    w.assert_ok(quiescent=True)


def test_cluster_mds_shard_and_tenant_files_pass_serve_check(tmp_path: Path) -> None:
    """docs/cluster.md's shard file, with its two tenants written from the "Tenants" sample
    (and a user each), is what `baton serve --config shard.toml --check` accepts."""
    blocks = re.findall(r"```toml\n(.*?)```", (ROOT / "docs/cluster.md").read_text(), re.S)
    (tenant,) = [b for b in blocks if b.startswith('tenant = "acme"')]
    (shard,) = [b for b in blocks if b.startswith("[cluster]")]
    (tmp_path / "shard.toml").write_text(shard)
    for name in ("acme", "bravo"):
        user = f'\n[[users]]\nid = "{name}-disp"\npassword = "pw"\nrole = "dispatcher"\n'
        (tmp_path / f"{name}.toml").write_text(tenant.replace("acme", name) + user)
    assert main(["serve", "--config", str(tmp_path / "shard.toml"), "--check"]) == 0
