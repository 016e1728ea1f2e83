"""The benchmark scripts as the smoke tests load them.

``bench/`` is not a package: its scripts run as ``python bench/NAME.py`` and import the shared
``harness`` package that sits beside them. Here, the harness is loaded under its own name
(without putting ``bench/`` on ``sys.path``, where ``media.py`` would shadow the ``media`` test
package), and :func:`load_script` loads a script by path under a name no test package uses.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load(name: str, path: Path, package: bool = False) -> ModuleType:
    module = sys.modules.get(name)
    if module is not None:
        return module
    spec = importlib.util.spec_from_file_location(
        name, path, submodule_search_locations=[str(path.parent)] if package else None
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def load_harness(name: str) -> ModuleType:
    """``harness.NAME`` (``bench/harness/NAME.py``)."""
    _load("harness", BENCH / "harness" / "__init__.py", package=True)
    return importlib.import_module(f"harness.{name}")


def load_script(name: str) -> ModuleType:
    """``bench/NAME.py``, loaded once, as the module ``baton_bench_NAME``."""
    _load("harness", BENCH / "harness" / "__init__.py", package=True)
    return _load(f"baton_bench_{name}", BENCH / f"{name}.py")


async def run_script(name: str, *args: str, within: float) -> dict[str, Any]:
    """Run ``python bench/NAME.py ARGS`` to the end (killed, by its pid, after ``within``
    seconds) and return the JSON object of its last output line."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(BENCH / f"{name}.py"), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with asyncio.timeout(within):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()  # only the process this test started
            await proc.wait()
    assert proc.returncode == 0, err.decode(errors="replace")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


@pytest.fixture
def harness() -> Callable[[str], ModuleType]:
    """Load a module of the benchmarks' shared harness by name."""
    return load_harness


@pytest.fixture
def bench_script() -> Callable[[str], ModuleType]:
    """Load a benchmark script by name."""
    return load_script


@pytest.fixture
def run_bench() -> Callable[..., Awaitable[dict[str, Any]]]:
    """Run a benchmark script in its own process: ``await run_bench("NAME", *args, within=seconds)``."""
    return run_script
