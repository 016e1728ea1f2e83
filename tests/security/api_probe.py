"""The API probes' rig: the service tests' helpers (a small centre on the sim, an in-process
client, the error-shape check), loaded from ``tests/service/helpers.py`` by path — this folder
is not a package (its SIP probes import their rig as a top-level module), so a relative import
cannot reach them."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import uvicorn

from baton.service.app import create_app

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


@contextlib.asynccontextmanager
async def listening(svc: Any, **config: Any) -> AsyncIterator[str]:
    """The service's app served by uvicorn on a free loopback port, in this event loop (so the
    test drives the same service); yields ``host:port``. ``config`` goes to ``uvicorn.Config``
    (``ssl_certfile`` …)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(svc, manage_lifecycle=False),
            host="127.0.0.1",
            port=port,
            lifespan="off",
            log_config=None,
            access_log=False,
            ws="websockets-sansio",
            **config,
        )
    )
    task = asyncio.get_running_loop().create_task(server.serve(), name="uvicorn")
    try:
        await eventually(lambda: server.started or task.done(), what="uvicorn listening")
        assert server.started, "uvicorn did not start"
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
