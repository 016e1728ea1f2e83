"""``baton new-flow``: the template is written and passes its own tests and baton check."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from baton.cli import main
from baton.testing.scaffold import write


def test_new_flow_writes_a_flow_and_a_test_that_pass(tmp_path: Path) -> None:
    assert main(["new-flow", "wake_up", "--dir", str(tmp_path)]) == 0
    assert {p.name for p in tmp_path.iterdir()} >= {"wake_up.py", "test_wake_up.py", "conftest.py"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 passed" in proc.stdout


def test_new_flow_refuses_bad_names_and_overwriting(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a flow name"):
        write("Wake-Up", tmp_path)
    write("wake_up", tmp_path)
    with pytest.raises(FileExistsError, match="not overwriting"):
        write("wake_up", tmp_path)
    assert main(["new-flow", "class", "--dir", str(tmp_path)]) == 2


def test_new_flow_writes_the_files_the_guide_names(tmp_path: Path) -> None:
    # docs/guide.md step 2 tells a flow author what `baton new-flow escort_call` writes;
    # tests/test_guide.py runs the step itself.
    guide = (Path(__file__).resolve().parents[1] / "docs/guide.md").read_text()
    step2 = guide.split("## 2.", 1)[1].split("## 3.", 1)[0]
    assert "baton new-flow escort_call" in step2
    write("escort_call", tmp_path)
    written = {p.name for p in tmp_path.iterdir()}
    assert set(re.findall(r"`(\w+\.py)`", step2)) == written
