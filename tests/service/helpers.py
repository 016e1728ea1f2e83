"""Shared helpers of the service tests: configs, a running service, an API client, waiting."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
from argon2 import PasswordHasher

from baton.service.app import create_app
from baton.service.config import Config, parse_config
from baton.service.runtime import Service

#: Cheap argon2 parameters: the tests hash many passwords and tokens.
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)

PASSWORDS = {
    "disp1": "disp1-pw",
    "disp2": "disp2-pw",
    "sup1": "sup1-pw",
    "obs1": "obs1-pw",
    "unit1": "unit1-pw",
    "unit2": "unit2-pw",
    "unit3": "unit3-pw",
    "unit4": "unit4-pw",
}


def config_data(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    """A small dispatch centre on the sim with fast virtual phones, its store in ``tmp_path``."""
    data: dict[str, Any] = {
        "switch": "sim",
        "database": f"sqlite+aiosqlite:///{tmp_path / 'baton.db'}",
        "recordings": str(tmp_path / "recordings"),
        "sim": {"answer_after": 0.05},
        "dispatch": {"number": "100", "emergency_number": "112", "queue_timeout": 30},
        "users": [
            {
                "id": "disp1",
                "numbers": ["2001"],
                "password": PASSWORDS["disp1"],
                "role": "dispatcher",
                "keep": True,
            },
            {
                "id": "disp2",
                "numbers": ["2002"],
                "password": PASSWORDS["disp2"],
                "role": "dispatcher",
                "keep": True,
            },
            {
                "id": "sup1",
                "numbers": ["2009"],
                "password": PASSWORDS["sup1"],
                "role": "supervisor",
                "keep": True,
            },
            {"id": "obs1", "password": PASSWORDS["obs1"], "role": "observer"},
            {"id": "unit1", "numbers": ["1001"], "password": PASSWORDS["unit1"]},
            {"id": "unit2", "numbers": ["1002"], "password": PASSWORDS["unit2"]},
            {"id": "unit3", "numbers": ["1003"], "password": PASSWORDS["unit3"]},
            {
                "id": "unit4",
                "numbers": ["1004"],
                "password": PASSWORDS["unit4"],
                "sim": {"behaviour": "never_answers"},
            },
        ],
        "groups": [
            {"id": "engines", "members": ["unit1", "unit2"], "number": "801"},
            {"id": "north", "members": ["unit1", "unit2", "unit3"], "number": "802", "mode": "ptt"},
        ],
        "meetings": [{"id": "ops", "number": "3000"}],
    }
    data.update(overrides)
    return data


def make_config(tmp_path: Path, **overrides: Any) -> Config:
    return parse_config(config_data(tmp_path, **overrides), "test")


async def eventually(
    cond: Callable[[], Any], *, within: float = 30.0, what: str = "the condition"
) -> Any:
    """Poll ``cond`` (sync or async) until it returns a truthy value; fail after ``within``.
    Generous by default: it returns as soon as the condition holds, and a loaded 2-core box
    (the whole suite, other processes) delays a real-time step by seconds, not its outcome."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        value = cond()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"{what} did not happen within {within} s")
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running(tmp_path: Path, **overrides: Any) -> AsyncIterator[Service]:
    """A started service (stopped on exit)."""
    svc = Service(make_config(tmp_path, **overrides), hasher=FAST_HASHER, grace=1.0)
    await svc.start()
    try:
        yield svc
    finally:
        await svc.stop()


class Api:
    """An httpx client on the app (in process, no socket) with login helpers."""

    def __init__(self, svc: Service) -> None:
        self.svc = svc
        self.app = create_app(svc, manage_lifecycle=False)
        self.tokens: dict[str, str] = {}

    def client(self, user: str | None = None, **kw: Any) -> httpx.AsyncClient:
        headers = {} if user is None else {"Authorization": f"Bearer {self.tokens[user]}"}
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app),
            base_url="http://testserver",
            headers=headers,
            **kw,
        )

    async def login(self, *users: str) -> None:
        async with self.client() as c:
            for user in users:
                r = await c.post("/api/login", json={"user": user, "password": PASSWORDS[user]})
                assert r.status_code == 200, r.text
                self.tokens[user] = r.json()["token"]


@contextlib.asynccontextmanager
async def api(tmp_path: Path, *logins: str, **overrides: Any) -> AsyncIterator[tuple[Service, Api]]:
    async with running(tmp_path, **overrides) as svc:
        a = Api(svc)
        await a.login(*(logins or ("disp1", "sup1", "obs1", "unit1")))
        yield svc, a


def assert_error(
    r: httpx.Response, status: int, id: str | None = None, field: str | None = None
) -> dict[str, Any]:
    """The response is an error of the documented shape."""
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"id", "message", "details"}, err
    assert isinstance(err["message"], str) and err["message"]
    if id is not None:
        assert err["id"] == id, err
    if field is not None:
        assert err["details"].get("field") == field, err
    return err


async def crash(svc: Service) -> None:
    """What ``kill -9`` leaves: nothing stopped, flushed or closed beyond what was acknowledged
    (the service's own tasks — the heartbeat — die with it)."""
    tasks = list(svc._tasks)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await svc.journal.close()
    await svc.store.close()
    await svc.manager.close()
