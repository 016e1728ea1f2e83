import sys
from pathlib import Path

# Import Hypothesis's lazily loaded engine parts now, at a shallow stack: compiled for the first
# time deep inside a state machine's run, CPython 3.11 can fail with "SystemError: AST constructor
# recursion depth mismatch" (a known interpreter bug, python/cpython#106905).
import hypothesis.internal.conjecture.optimiser
import hypothesis.internal.conjecture.shrinker  # noqa: F401

sys.path.insert(0, str(Path(__file__).parent.parent / "core"))
