"""docs/guide.md stays true: its finished flow is the example's code, its shell steps run as
written in an empty folder (so the guide and ``baton new-flow`` cannot drift apart)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from baton.cli import main
from baton.core import Priority, Session, User, flow
from baton.flows import emergency_call
from baton.testing.check import check_flow

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


@flow(priority=Priority.ROUTINE)
async def _abandoning(s: Session, a: User, b: User) -> None:
    await s.claim(a, b)
    await s.dial(a)
    await s.dial(b)
    await s.connect(a, b)
    await s.sleep(20)  # a Preempted here escapes and strands the other party


def test_the_guides_mistake_rows_say_error_or_warning_as_the_checker_does() -> None:
    # A flow that lets a Preempted escape and strands the other party (the guide's last
    # mistake) fails the check: dead air is an error, not the warning the row once promised.
    report = check_flow(_abandoning, [emergency_call], budget=40, seed=1)
    failure = report.first_failure()
    assert failure is not None
    text = " | ".join(f.message for f in failure.findings)
    assert "Preempted escaped the flow) and left" in text
    row = next(line for line in GUIDE.splitlines() if "escaped the flow) and left" in line)
    assert not row.startswith("| warning"), row


_STEP3_PERMISSION = 'permission="escort"'


def _guide_script() -> str:
    """The guide's shell steps, in order, as one bash script: every ```sh block is run, and a
    ```toml block opening with ``# file: NAME`` is written to NAME where it stands."""
    parts = ["set -euo pipefail"]
    for lang, body in re.findall(r"```(sh|toml)\n(.*?)```", GUIDE, re.S):
        if lang == "sh":
            parts += [f"echo '$ {line}' && {line}" for line in body.splitlines() if line]
            if "baton new-flow escort_call" in body:
                # Step 3's edit, as far as the later steps lean on it: the flow's permission
                # becomes the "escort" that step 8's config grants (--check refuses a
                # permission no flow names).
                parts.append(f"sed -i 's/permission=\"escort_call\"/{_STEP3_PERMISSION}/' "
                             "escort_call.py")  # fmt: skip
            continue
        first, _, rest = body.partition("\n")
        name = first.removeprefix("# file: ")
        if name != first:
            parts.append(f"cat > {name} <<'GUIDE_EOF'\n{rest}GUIDE_EOF")
    return "\n".join(parts) + "\n"


def test_the_guides_shell_steps_run_in_an_empty_folder(tmp_path: Path) -> None:
    # A flow author's shell: the `baton` and `pytest` of this installation first on PATH.
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PYTEST_ADDOPTS", None)
    script = _guide_script()
    assert "baton new-flow escort_call" in script and "cat > escort.toml" in script
    assert _STEP3_PERMISSION in GUIDE.split("## 3.", 1)[1].split("## 4.", 1)[0]
    r = subprocess.run(
        ["bash", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    # Step 2's promises: the files it names, and "three tests ... all pass as written".
    step2 = GUIDE.split("## 2.", 1)[1].split("## 3.", 1)[0]
    named = set(re.findall(r"`(\w+\.py)`", step2))
    assert named == {"escort_call.py", "test_escort_call.py", "conftest.py"}
    assert named <= {p.name for p in (tmp_path / "escort").iterdir()}
    assert "three tests" in step2 and re.search(r"\b3 passed\b", out), out
    assert "escort_call: ok — " in out  # step 7's output, as the guide shows it
    assert "escort.toml: ok (1 users, switch sim, " in out  # step 8's
