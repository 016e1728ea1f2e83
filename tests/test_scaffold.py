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


def test_the_template_keeps_the_caller_out_of_dead_air(tmp_path: Path) -> None:
    # A callee that takes its time to answer: the caller's line is up, and silence there is
    # dead air (invariant 11, docs/design.md), which the world fixture reports.
    assert main(["new-flow", "wake_up", "--dir", str(tmp_path)]) == 0
    (tmp_path / "test_slow.py").write_text(
        "from wake_up import wake_up\n"
        "from baton.testing import World, answers\n\n\n"
        "async def test_slow_callee(world: World) -> None:\n"
        "    world.add('alice')\n"
        "    world.add('bob', answers(after=6))\n"
        "    assert await world.start(wake_up, world['alice'], world['bob']).result() == 'connected'\n"
        "    assert world.hears('alice') == {'bob'}\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_slow.py"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


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


def test_new_flow_refuses_a_name_the_service_or_python_would_refuse(tmp_path: Path) -> None:
    # `baton new-flow call` once wrote a flow whose tests passed but which `baton serve`
    # refused to load ("flow 'call' is already defined by the library"); `baton new-flow json`
    # a json.py that the conftest puts first on sys.path, shadowing the standard library.
    with pytest.raises(ValueError, match="library flow") as info:
        write("call", tmp_path)
    assert "my_call" in str(info.value)
    with pytest.raises(ValueError, match="standard library"):
        write("json", tmp_path)
    with pytest.raises(ValueError, match="shadow"):
        write("baton", tmp_path)
    assert list(tmp_path.iterdir()) == []
    assert main(["new-flow", "emergency_call", "--dir", str(tmp_path)]) == 2


def test_baton_with_no_command_lists_every_command_and_fails(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # `baton` alone is a usage error (like `baton serve` alone), and its help names every
    # command a flow author or an operator is told to run (docs/guide.md, docs/service.md)
    assert main([]) == 2
    text = capsys.readouterr()
    out = text.out + text.err
    for usage in ("baton new-flow NAME", "baton check FLOW", "baton serve --config", "baton demo"):
        assert usage in out, usage
