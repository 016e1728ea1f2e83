"""The mutation run (baton.testing.mutants): the catalogue applies to the tree as it is, a mutant
that no longer applies is refused loudly, and a small sample is killed end to end."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from baton.flows import LIBRARY
from baton.testing import mutants
from baton.testing.mutants import (
    CATALOGUE,
    CHECKED_FLOWS,
    KILLER,
    Mutant,
    StaleMutant,
    apply_mutant,
    mutated_sources,
    run_killer,
    run_mutant,
    select,
    stale_reason,
)

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "baton"

#: Two mutants the killer's first tests catch within seconds (the full run is docs/mutants.md).
FAST_KILLS = ("fence_always_passes", "preempt_at_equal_priority")


def test_every_mutant_applies_to_the_current_tree_and_compiles() -> None:
    stale = [f"{m.name}: {r}" for m in CATALOGUE if (r := stale_reason(m, PACKAGE)) is not None]
    assert not stale, "stale mutants (update their snippets):\n" + "\n".join(stale)


def test_the_catalogue_is_large_named_once_and_documented() -> None:
    names = [m.name for m in CATALOGUE]
    assert len(names) >= 30
    assert len(set(names)) == len(names)
    for m in CATALOGUE:
        assert m.area in ("core", "library"), m.name
        assert m.fault and m.edits, m.name
        for e in m.edits:
            assert e.old != e.new, m.name
    assert {"core", "library"} == {m.area for m in CATALOGUE}


def _tiny_package(tmp_path: Path, text: str) -> Path:
    pkg = tmp_path / "baton"
    (pkg / "core").mkdir(parents=True)
    (pkg / "core" / "x.py").write_text(text)
    return pkg


def _mutant(old: str, new: str) -> Mutant:
    return mutants._m("m", "core", "a fault", ("core/x.py", old, new))


def test_a_mutant_is_applied_to_the_copy_only(tmp_path: Path) -> None:
    pkg = _tiny_package(tmp_path, "def f(a, b):\n    return a > b\n")
    apply_mutant(_mutant("return a > b", "return a >= b"), pkg)
    assert (pkg / "core" / "x.py").read_text() == "def f(a, b):\n    return a >= b\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("def f(a, b):\n    return a < b\n", "occurs 0 times"),
        ("x = a > b\ny = a > b\n", "occurs 2 times"),
    ],
)
def test_a_snippet_that_does_not_occur_exactly_once_is_stale(
    tmp_path: Path, text: str, message: str
) -> None:
    pkg = _tiny_package(tmp_path, text)
    with pytest.raises(StaleMutant, match=message):
        apply_mutant(_mutant("a > b", "a >= b"), pkg)
    assert (pkg / "core" / "x.py").read_text() == text  # nothing written


def test_a_mutant_that_does_not_compile_is_refused(tmp_path: Path) -> None:
    pkg = _tiny_package(tmp_path, "def f(a, b):\n    return a > b\n")
    with pytest.raises(StaleMutant, match="does not compile"):
        mutated_sources(_mutant("    return a > b\n", "  return a >\n"), pkg)


def test_a_stale_mutant_stops_the_run_before_anything_runs(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    _tiny_package(tmp_path / "src", "x = 1\n")
    with pytest.raises(SystemExit, match="1 stale mutant"):
        mutants.run([_mutant("x = 2", "x = 3")], tmp_path, 5.0, 1, killer=(), log=lambda _: None)


def test_select_names_and_seeded_samples() -> None:
    assert [m.name for m in select(CATALOGUE, list(FAST_KILLS), None, 1)] == list(FAST_KILLS)
    a = select(CATALOGUE, None, 5, seed=7)
    assert len(a) == 5
    assert a == select(CATALOGUE, None, 5, seed=7)
    with pytest.raises(SystemExit, match="no mutant named nope"):
        select(CATALOGUE, ["nope"], None, 1)


def test_the_killer_is_stopped_at_the_budget_and_a_failure_names_its_command(
    tmp_path: Path,
) -> None:
    hang = (sys.executable, "-c", "import signal; signal.pause()")
    r = run_killer(tmp_path, tmp_path, 0.5, (hang,))
    assert r.status == "timeout"
    assert r.seconds < 10
    fail = ("{python}", "-c", "print('boom'); raise SystemExit(3)")
    ok = ("{python}", "-c", "pass")
    r = run_killer(tmp_path, tmp_path, 30, (ok, fail, ok))
    assert (r.status, r.tail) == ("failed", "boom")
    assert "raise SystemExit(3)" in r.command
    assert run_killer(tmp_path, tmp_path, 30, (ok,)).status == "passed"


def test_list_check_reports_every_mutant(capsys: pytest.CaptureFixture[str]) -> None:
    assert mutants.main(["--list", "--check"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == f"{len(CATALOGUE)} of {len(CATALOGUE)} mutants apply; 0 stale"


@pytest.mark.parametrize("name", FAST_KILLS)
def test_a_seeded_fault_is_killed_end_to_end(name: str) -> None:
    (mutant,) = select(CATALOGUE, [name], None, 1)
    r = run_mutant(mutant, ROOT, budget=60.0)
    assert r.status == "failed", f"{name} survived the killer:\n{r.tail}"
    assert "FAILED tests/" in r.tail  # a red test, not a killer that could not start
    assert r.seconds < 60


def test_the_killers_commands_start_on_the_unmutated_tree() -> None:
    """Every test folder the killer names exists and its plugin loads (collection only: the
    full baseline is the mutation run's first step)."""
    collect = (*(part for part in KILLER[0] if part != "-x"), "--collect-only")
    r = run_killer(ROOT / "src", ROOT, 60, (collect,))
    assert r.status == "passed", r.tail


def test_the_killer_checks_every_library_flow() -> None:
    """A new library flow joins the killer's ``baton check`` (docs/mutants.md)."""
    assert len(set(CHECKED_FLOWS)) == len(CHECKED_FLOWS)
    assert set(LIBRARY) == set(CHECKED_FLOWS)
    assert set(CHECKED_FLOWS) <= set(LIBRARY)
