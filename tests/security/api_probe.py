"""The API probes' rig: the service tests' helpers (a small centre on the sim, an in-process
client, the error-shape check), loaded from ``tests/service/helpers.py`` by path — this folder
is not a package (its SIP probes import their rig as a top-level module), so a relative import
cannot reach them."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_PATH = Path(__file__).resolve().parents[1] / "service" / "helpers.py"
_NAME = "baton_service_test_helpers"


def _load() -> object:
    if _NAME in sys.modules:
        return sys.modules[_NAME]
    spec = importlib.util.spec_from_file_location(_NAME, _PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[_NAME] = module
    spec.loader.exec_module(module)
    return module


_helpers = _load()
Api = _helpers.Api  # type: ignore[attr-defined]
PASSWORDS = _helpers.PASSWORDS  # type: ignore[attr-defined]
api = _helpers.api  # type: ignore[attr-defined]
assert_error = _helpers.assert_error  # type: ignore[attr-defined]
eventually = _helpers.eventually  # type: ignore[attr-defined]
make_config = _helpers.make_config  # type: ignore[attr-defined]
running = _helpers.running  # type: ignore[attr-defined]
FAST_HASHER = _helpers.FAST_HASHER  # type: ignore[attr-defined]
