"""Suite-wide test settings.

Hypothesis explores the same examples on every run of `make test` (``derandomize``), so that a
red CI is reproducible and a green one is not luck; set ``BATON_PROPERTY_RANDOM=1`` to explore
new examples (and ``BATON_PROPERTY_SCALE`` for more of them in the state machines).

``tests/`` is on ``sys.path``, so the suites that start real SIP phones import their shared
rigs as ``_rigs`` (``from _rigs.sip import rig``).
"""

import os
import sys
from pathlib import Path

from hypothesis import settings

sys.path.insert(0, str(Path(__file__).parent / "tests"))

settings.register_profile("baton", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile(
    "explore" if os.environ.get("BATON_PROPERTY_RANDOM", "") not in ("", "0") else "baton"
)
