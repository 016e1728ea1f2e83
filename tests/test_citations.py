"""Code cites only documents a reader of the repository has.

A comment or docstring that says why points to ``docs/design.md §Section``, another page of
``docs/``, or an RFC. Notes kept outside the repository (a design draft, a tools note, the field
notes the project started from) are not there for a reader, so nothing under ``src/``, ``tests/``
or ``bench/`` may cite them.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TREES = ("src", "tests", "bench")
#: Documents outside the repository, as code used to cite them. Built from pieces so that this
#: file does not match itself.
OUTSIDE = re.compile("|".join(["DESIGN" + r"\.md", "TOOLS" + r"\.md", "seed" + " §"]))


def citations_outside() -> list[str]:
    found = []
    for tree in TREES:
        for path in sorted((ROOT / tree).rglob("*")):
            if not path.is_file() or path.suffix not in (".py", ".md", ".toml", ".xml", ".txt"):
                continue
            for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                if OUTSIDE.search(line):
                    found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    return found


def test_code_cites_only_documents_in_the_repository() -> None:
    found = citations_outside()
    assert not found, "cite docs/design.md (or docs/*.md, an RFC) instead:\n" + "\n".join(found)


def test_the_check_finds_a_citation() -> None:
    line = "# see " + "DESIGN" + ".md invariant 2"
    assert OUTSIDE.search(line)
    assert OUTSIDE.search("(" + "seed" + " §4)")
    assert not OUTSIDE.search("# see docs/design.md §Invariants, invariant 2")
