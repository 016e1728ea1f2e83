"""A pytest plugin the mutation run loads into its killer (``-p baton.testing._killer_plugin``).

A verdict needs a failure, not the smallest one: Hypothesis stops at the first failing example
instead of shrinking it and hunting for more bugs (a property test that catches a mutant could
otherwise spend minutes shrinking), and no example is judged by the real time it took (the
tests run on virtual time; a loaded machine must not fail a test). Examples are drawn as in
``make test`` (the suite's derandomized profile), so the killer explores what the suite does.
"""

from __future__ import annotations

import pytest
from hypothesis import Phase, settings

PROFILE = "baton-mutants"


def pytest_configure(config: pytest.Config) -> None:
    # After the suite's conftest loaded its profile: ours extends whatever it chose.
    settings.register_profile(
        PROFILE,
        parent=settings.default,
        phases=(Phase.explicit, Phase.reuse, Phase.generate),
        report_multiple_bugs=False,
        deadline=None,
    )
    settings.load_profile(PROFILE)
